"""Rollout data: the episode store (``store``), parallel collection (``collect``), imports of
public rollouts (``importers``) and the training sources (``sources``: FrameSource for V,
SequenceSource for M). Submodules are imported on use; this package imports nothing heavy.
"""
