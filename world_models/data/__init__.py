"""Rollout data: the episode store (``store``), parallel collection (``collect``), imports of
public rollouts (``importers``), the frame source for V (``sources``), and the latent series
for M (``encode`` writes them, ``series`` serves their windows). Submodules are imported on
use; this package imports nothing heavy.
"""
