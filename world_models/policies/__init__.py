"""Policies: what chooses the actions in collection, evaluation, play and the dream.

:mod:`.random` holds the contract (:class:`Policy`) and the model-free policies (the
original's random data policies, constant actions); :mod:`.controller` the ones that run
V, M and C (it imports torch, so it is not imported here).
"""

from world_models.policies.random import (
    POLICIES,
    BrownianPolicy,
    ConstantPolicy,
    ExplorePolicy,
    Policy,
    RepeatPolicy,
    SeedLike,
    UniformPolicy,
    make_random_policy,
)

__all__ = [
    "POLICIES",
    "BrownianPolicy",
    "ConstantPolicy",
    "ExplorePolicy",
    "Policy",
    "RepeatPolicy",
    "SeedLike",
    "UniformPolicy",
    "make_random_policy",
]
