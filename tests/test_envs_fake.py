"""Presets, frame preprocessing, the fake env and the random data policies (no Box2D/Doom)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from world_models.core.errors import ConfigError, DataError, MissingDependencyError
from world_models.envs.fake import FakeEnv
from world_models.envs.make import check_available, make_env
from world_models.envs.presets import CARRACING, DOOM, FAKE, Preprocess, preprocess_frame
from world_models.policies import (
    BrownianPolicy,
    Policy,
    RepeatPolicy,
    UniformPolicy,
    make_random_policy,
)


def test_carracing_preprocess_drops_the_dashboard():
    frame = np.zeros((96, 96, 3), np.uint8)
    frame[:84] = (0, 200, 0)  # the road view
    frame[84:] = (255, 0, 0)  # the dashboard: must not leak into the 64x64 frame
    out = preprocess_frame(frame, CARRACING.preprocess)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[..., 0].max() == 0 and (out[..., 1] == 200).all()


def test_doom_preprocess_resizes_whole_screen_antialiased():
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, ::2] = 255  # 1-pixel stripes: an antialiased resize averages them to grey
    out = preprocess_frame(frame, DOOM.preprocess)
    assert out.shape == (64, 64, 3)
    assert 90 < out.mean() < 165 and out.std() < 40
    nearest = preprocess_frame(frame, dataclasses.replace(DOOM.preprocess, resample="nearest"))
    assert nearest.std() > 100  # aliasing: the filter choice really is applied


def test_bilinear_preprocess_matches_pil_within_one():
    # torch's uint8 kernel stands in for PIL's (speed): the same frames to within 1 level
    from PIL import Image

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 255, (15, 20, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    for frame, pre in ((smooth, DOOM.preprocess), (smooth[:96, :96], CARRACING.preprocess)):
        out = preprocess_frame(frame, pre)
        crop = frame if pre.crop is None else frame[pre.crop[0] : pre.crop[1]]
        pil = np.asarray(Image.fromarray(crop).resize((64, 64), resample=Image.BILINEAR))
        diff = np.abs(out.astype(int) - pil.astype(int))
        assert out.shape == pil.shape and out.dtype == np.uint8
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05


def test_preprocess_passthrough_and_errors():
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_frame(frame, Preprocess()), frame)
    with pytest.raises(DataError, match="smaller than the crop"):
        preprocess_frame(frame, CARRACING.preprocess)
    with pytest.raises(DataError, match="uint8"):
        preprocess_frame(frame.astype(np.float32), Preprocess())


def test_fake_env_is_deterministic_per_seed():
    def frames(seed):
        env = FakeEnv()
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for _ in range(10):
            obs, *_ = env.step(np.array([0.5, 0.2, 0.0], np.float32))
            out.append(obs)
        return np.stack(out)

    a, b, c = frames(1), frames(1), frames(2)
    assert a.shape == (11, 96, 96, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])  # frames change from step to step


def test_make_env_emits_preprocessed_frames_and_truncates():
    env = make_env(FAKE, max_steps=5, env_kwargs={"min_len": 50, "max_len": 50})
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    for _ in range(5):
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
    assert trunc and not term


def test_missing_extra_gives_a_clear_error():
    broken = dataclasses.replace(CARRACING, module="no_such_module_xyz", extra="box2d")
    with pytest.raises(MissingDependencyError, match=r"world_models\[box2d\]"):
        check_available(broken)


def test_brownian_policy_bounds_increments_and_seed():
    low, high = np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32)
    pol = BrownianPolicy(low, high, dt=1 / 50)

    def run(seed):
        pol.reset(2, seed=seed)
        return np.stack([pol.act(np.zeros((2, 64, 64, 3), np.uint8)) for _ in range(500)])

    a = run(3)  # (500, 2, 3)
    assert a.dtype == np.float32 and a.shape == (500, 2, 3)
    assert (a >= low).all() and (a <= high).all()
    np.testing.assert_array_equal(a, run(3))
    assert not np.array_equal(a[:, 0], a[:, 1])  # each env has its own stream
    steps = np.abs(np.diff(a, axis=0))
    assert steps.max() < 6 * np.sqrt(1 / 50)  # Brownian: small moves, no jumps
    assert steps.mean() > 0.02


def test_repeat_policy_holds_actions_for_1_to_10_frames():
    pol = RepeatPolicy(n_actions=10_000)  # many actions: consecutive draws never coincide
    pol.reset(1, seed=0)
    acts = np.array([pol.act(np.zeros((1, 64, 64, 3), np.uint8))[0] for _ in range(3000)])
    assert acts.dtype == np.int64
    change = np.flatnonzero(np.diff(acts)) + 1
    runs = np.diff(np.concatenate([[0], change]))
    assert runs.min() == 1 and runs.max() == 10


def test_uniform_policy_and_factory():
    pol = UniformPolicy(n_actions=3)
    pol.reset(4, seed=1)
    a = pol.act(np.zeros((4, 64, 64, 3), np.uint8))
    assert a.shape == (4,) and a.dtype == np.int64 and set(a) <= {0, 1, 2}
    env = FakeEnv()
    assert isinstance(make_random_policy("brownian", env.action_space), BrownianPolicy)
    with pytest.raises(ConfigError, match="does not fit"):
        make_random_policy("repeat", env.action_space)
    with pytest.raises(TypeError):
        Policy()  # the interface is abstract
