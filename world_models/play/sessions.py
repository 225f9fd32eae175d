"""``world-models play`` and ``world-models watch``: the sessions that join the pieces.

* :func:`play`: a person plays with the keyboard (or C plays, ``agent=True``), inside M's
  dream (V decodes each dreamed z) or in the real game, in a pygame window.
* :func:`watch`: C plays the real game, shown beside V's reconstruction of each frame and
  M's prediction of the next one (the mixture's mean decoded, or a sample at ``tau``); or
  C plays in the dream, beside M's prediction. In a window, or headless into a video.

Both run headless with ``SDL_VIDEODRIVER=dummy`` (``watch --out`` needs no pygame at all),
so tests and CI drive them to ``max_steps``. Models load through the same loaders as
``evaluate`` and ``dream`` (``ControllerPolicy`` via
:func:`~world_models.evaluation.evaluate.build_policy`, checkpoint folders via
:func:`~world_models.models.world_model.load_world_model` and its checks), or from
:func:`world_models.pretrained`.

Imports of torch and the pipeline sit inside the functions (pygame's in
:mod:`world_models.play.window`): this module holds ``PlayConfig`` and ``WatchConfig``,
which ``world-models play --help`` reads without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from world_models.core.config import Target
from world_models.core.errors import ConfigError
from world_models.envs.presets import EnvName

HOLD_S = 1.0
"""In a window, an episode's last frame stays this long before the next episode."""


@dataclass(frozen=True)
class SessionConfig:
    """Options shared by ``play`` and ``watch``."""

    target: Target = "dream"
    """Inside M's dream (frames decoded by V) or in the real game (same as --in)."""
    env: EnvName | None = None
    """Env preset: the real game, and the action mapping of the dream (None: doom, or the
    pretrained model's)."""
    pretrained: str | None = None
    """A shipped world model (doom): V, M, C and the dreams' first frames, instead of
    --vae, --mdrnn, --controller and --series-dir."""
    vae: Path | None = None
    """ConvVAE checkpoint folder (V)."""
    mdrnn: Path | None = None
    """MDNRNN checkpoint folder (M)."""
    controller: Path | None = None
    """Controller checkpoint folder (C)."""
    series_dir: Path | None = None
    """Dream: encoded series folder whose first frames' (mu, logvar) start the dreams (None:
    z ~ N(0, I))."""
    tau: float = 1.15
    """Dream: M's sampling temperature, >= 0 (1.15: the paper's Doom dream)."""
    max_steps: int | None = None
    """Stop after this many steps in all (None: no limit)."""
    episodes: int | None = None
    """Stop after this many finished episodes (None: no limit in a window, 1 headless)."""
    strip: Path | None = None
    """Also write a PNG of --strip-frames evenly spaced frames of what was shown, side by
    side."""
    strip_frames: int = 5
    """Frames in the --strip PNG (>= 1)."""
    scale: int = 4
    """Pixel upscaling of the 64x64 frames (>= 1)."""
    fps: int | None = None
    """Frames per second of the window and of videos (None: the env preset's: 35 for doom,
    50 for carracing, 30 otherwise)."""
    seed: int = 0
    """Episode k resets the env (and C's sampling) with seed + k."""
    device: str | None = None
    """cpu, cuda, ... for V, M and C (None: CUDA when present)."""


@dataclass(frozen=True)
class PlayConfig(SessionConfig):
    """Options of ``world-models play``."""

    agent: bool = False
    """C plays instead of the keyboard (needs --controller, or --pretrained)."""
    record: Path | None = None
    """Write what the window showed as a video: .gif, or .mp4 with the video extra."""


@dataclass(frozen=True)
class WatchConfig(SessionConfig):
    """Options of ``world-models watch``."""

    target: Target = "real"
    """C plays the real game (panels: the frame, V's reconstruction, M's next frame) or
    inside M's dream (panels: the dreamed frame, M's next frame); same as --in."""
    tau: float = 1.15
    """M's sampling temperature, >= 0: of the dream, and of --predict sample (1.15: the
    paper's Doom dream)."""
    predict: Literal["mean", "sample"] = "mean"
    """M's next frame: its mixture's mean decoded by V, or a sample at --tau."""
    out: Path | None = None
    """Write the video here (.gif, or .mp4 with the video extra) instead of opening a
    window: headless, no pygame needed."""


@dataclass
class SessionResult:
    """What a session did: its loop's counters and the files it wrote."""

    total_steps: int
    episodes: int
    returns: list[float]
    score: float
    quit: bool
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        done = ", ".join(_num(r) for r in self.returns) or "none finished"
        lines = [
            f"{self.total_steps} steps, {self.episodes} episode(s); scores: {done}"
            + (f"; last episode so far {_num(self.score)}" if not self.returns else "")
        ]
        lines += [f"{name + ':':<10} {path}" for name, path in self.files.items()]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- checks


def _whole(name: str, value: Any, *, none_ok: bool, minimum: int = 1) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        tail = " (or none)" if none_ok else ""
        raise ConfigError(f"--{name} must be a whole number >= {minimum}{tail}, got {value!r}")


def check_config(config: SessionConfig) -> None:
    """A one-line :class:`ConfigError` for settings that cannot work; loads nothing."""
    from world_models.core.media import check_animation_path

    if config.target not in ("dream", "real"):
        raise ConfigError(f"--in must be dream or real, got {config.target!r}")
    for name in ("max_steps", "episodes", "fps"):
        _whole(name.replace("_", "-"), getattr(config, name), none_ok=True)
    _whole("scale", config.scale, none_ok=False)
    _whole("strip-frames", config.strip_frames, none_ok=False)
    tau = config.tau
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
        raise ConfigError(f"--tau must be a finite number >= 0, got {tau!r}")
    if tau < 0:
        raise ConfigError(f"--tau must be a finite number >= 0, got {tau!r}")
    if config.strip is not None and Path(config.strip).suffix.lower() != ".png":
        raise ConfigError(f"--strip writes a PNG: give a .png path, not {config.strip}")
    video = getattr(config, "record", None) or getattr(config, "out", None)
    if video is not None:
        check_animation_path(video)
    paths = ("vae", "mdrnn", "controller", "series_dir")
    given = ["--" + n.replace("_", "-") for n in paths if getattr(config, n) is not None]
    if config.pretrained is not None:
        if given:
            raise ConfigError(
                f"--pretrained {config.pretrained} brings V, M, C and first frames: "
                f"drop {', '.join(given)}"
            )
        return
    needs = []
    if isinstance(config, WatchConfig):
        needs = ["vae", "mdrnn", "controller"]
    else:
        if config.target == "dream":
            needs += ["vae", "mdrnn"]
        if getattr(config, "agent", False):
            needs = ["vae", "mdrnn", "controller"]
    missing = [f"--{n}" for n in needs if getattr(config, n) is None]
    if missing:
        what = "watch" if isinstance(config, WatchConfig) else f"play --in {config.target}"
        if getattr(config, "agent", False):
            what += " --agent"
        raise ConfigError(
            f"{what} needs {', '.join(missing)} (checkpoint folders), or --pretrained doom"
        )


# ---------------------------------------------------------------------------- models


@dataclass
class Models:
    """V, M and C on ``device`` with the dreams' first frames and the env they are for."""

    env: str
    device: Any
    vae: Any = None
    mdrnn: Any = None
    controller: Any = None
    policy: Any = None
    """V + M + C as a ControllerPolicy (real game), when C was loaded."""
    initial_mu: Any = None
    initial_logvar: Any = None
    dream_options: dict = field(default_factory=dict)
    """DreamEnv's done_mode / done_offset / dropout: a shipped model's settings.json."""


def _dream_options(settings: dict) -> dict:
    """DreamEnv keywords from a shipped model's dream settings."""
    return {
        "done_mode": settings.get("done_mode", "threshold"),
        "done_offset": settings.get("done_offset", 0.0),
        "dropout": settings.get("dream_dropout", False),
    }


def _pretrained(name: str):
    from world_models.shipped import pretrained

    return pretrained(name)


def action_mode(env: str):
    """The action mode of an env preset (:mod:`world_models.models.actions`)."""
    from world_models.envs.presets import get_preset

    return get_preset(env).actions


def load_models(config: SessionConfig, *, need_vm: bool, need_controller: bool) -> Models:
    """Load what the session needs, with the checks ``evaluate`` and ``dream`` make."""
    from world_models.core.device import pick_device

    device = pick_device(config.device)
    if config.pretrained is not None:
        wm = _pretrained(config.pretrained)
        if config.env is not None and config.env != wm.env:
            raise ConfigError(
                f"--pretrained {config.pretrained} is a world model of {wm.env}, not {config.env}"
            )
        models = Models(
            wm.env,
            device,
            wm.vae.to(device).eval(),
            wm.mdrnn.to(device).eval(),
            wm.controller.to(device).eval(),
            initial_mu=wm.initial_mu,
            initial_logvar=wm.initial_logvar,
            dream_options=_dream_options(getattr(wm, "settings", {})),
        )
        if need_controller:
            from world_models.policies.controller import ControllerPolicy

            models.policy = ControllerPolicy(models.vae, models.mdrnn, models.controller, device)
        return models
    env = config.env or "doom"
    action_mode(env)  # an unknown env fails here
    models = Models(env, device)
    if need_controller:
        from world_models.evaluation.evaluate import EvaluateConfig, build_policy

        try:
            policy = build_policy(
                EvaluateConfig(
                    controller=config.controller,
                    vae=config.vae,
                    mdrnn=config.mdrnn,
                    env=env,
                    device=str(device),
                )
            )
        except ValueError as exc:  # ControllerPolicy: V, M and C of different sizes
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{config.vae}, {config.mdrnn}, {config.controller}: {exc}") from None
        models.policy = policy
        models.vae, models.mdrnn, models.controller = policy.vae, policy.mdrnn, policy.controller
    elif need_vm:
        from world_models.models.world_model import load_world_model

        wm = load_world_model(config.vae, config.mdrnn, device=device)
        models.vae, models.mdrnn = wm.vae, wm.mdrnn
    if config.series_dir is not None and config.target == "dream":
        from world_models.data.series import load_initial_states

        models.initial_mu, models.initial_logvar = load_initial_states(
            config.series_dir, device=device
        )
    return models


def make_dream(models: Models, tau: float):
    """DreamEnv of ``models`` (rendered by V) with the action mapping of their env; its
    observations are what their C reads (``[z, c, h]`` for a C that reads M's cell)."""
    from world_models.envs.dream import DreamEnv
    from world_models.envs.presets import get_preset

    preset = get_preset(models.env)
    mode, size = preset.actions, models.mdrnn.action_size
    if size not in mode.model_sizes(preset.action_dim):
        n = preset.action_dim
        given = f"Discrete({n})" if mode.discrete else f"{n}-dim"
        raise ConfigError(f"M takes {size}-dim actions; the {models.env} env gives {given} ones")
    cell = bool(getattr(models.controller, "cell_input", False))
    return DreamEnv(
        models.mdrnn,
        models.vae,
        models.initial_mu,
        models.initial_logvar,
        tau=tau,
        action_mode=mode,
        render_mode="rgb_array",
        device=models.device,
        **({"observe_cell": True} if cell else {}),
        **models.dream_options,
    )


def make_real(env: str):
    from world_models.envs.make import make_env
    from world_models.envs.presets import get_preset

    return make_env(get_preset(env))


# ---------------------------------------------------------------------------- M's predictions


class MTap:
    """Stands in for M and keeps the output of its last ``step``: the mixture of the next z.

    Set as a ``ControllerPolicy``'s or a ``DreamEnv``'s ``mdrnn``, it lets ``watch`` show
    M's prediction of the next frame without changing how they play; everything else is
    M's own.
    """

    def __init__(self, mdrnn) -> None:
        self.mdrnn = mdrnn
        self.last = None

    def step(self, *args, **kwargs):
        out = self.mdrnn.step(*args, **kwargs)
        self.last = out
        return out

    def take(self):
        """The last step's output, then forget it (a missing one is a bug: M was not run)."""
        out, self.last = self.last, None
        if out is None:
            raise RuntimeError("M made no prediction this step (its step() was not called)")
        return out

    def __getattr__(self, name: str):
        return getattr(self.mdrnn, name)


def mixture_mean(out) -> Any:
    """E[z_{t+1}] under M's per-dimension mixtures: sum_k pi_k mu_k, (N, Z)."""
    import torch

    return (torch.softmax(out.logpi.float(), dim=-1) * out.mu.float()).sum(-1)


class Decoder:
    """V's pictures: reconstructions of frames and decodings of latents, as (64, 64, 3) uint8."""

    def __init__(self, vae, device) -> None:
        self.vae, self.device = vae, device

    def decode(self, z) -> np.ndarray:
        import torch

        from world_models.core.media import to_uint8_hwc

        with torch.no_grad():
            w = self.vae.fc_mu.weight
            return to_uint8_hwc(self.vae.decode(z.to(w.device, w.dtype).reshape(1, -1)))[0]

    def reconstruct(self, frame: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            mu, _ = self.vae.encode_frames(np.array(frame, np.uint8)[None])  # (1, Z)
            return self.decode(mu)


# ---------------------------------------------------------------------------- output


class Recorder:
    """Collects what was shown: every frame for a video, a few for the strip."""

    def __init__(self, video: Path | None, strip: Path | None, strip_frames: int) -> None:
        from world_models.play.draw import EvenSampler

        self.video, self.strip = video, strip
        self.frames: list[np.ndarray] | None = [] if video is not None else None
        self.sampler = EvenSampler(strip_frames) if strip is not None else None

    def add(self, picture: np.ndarray) -> None:
        if self.frames is not None:
            self.frames.append(picture)
        if self.sampler is not None:
            self.sampler.add(picture)

    def save(self, fps: int) -> dict[str, Path]:
        from world_models.core.media import save_animation, save_png
        from world_models.play.draw import strip

        files: dict[str, Path] = {}
        if self.frames:
            files["video"] = save_animation(self.frames, self.video, fps=fps)
        if self.sampler is not None and self.sampler.count:
            files["strip"] = save_png(strip(self.sampler.pick()), self.strip)
        return files


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


STATUS_WIDEST = "score 0000.0   step 0000   episode 00   last 0000.0   - episode over"
"""The longest usual :func:`status_line`: the pictures are made wide enough for it."""


def min_width(texts, scale: int) -> int:
    from world_models.play.draw import text_width

    return text_width([STATUS_WIDEST, *texts], scale)


def status_line(loop) -> str:
    """Score, step and episode, as the window shows them."""
    text = f"score {_num(loop.score)}   step {loop.steps}   episode {loop.episode + 1}"
    if loop.returns:
        text += f"   last {_num(loop.returns[-1])}"
    if loop.over:
        text += "   - episode over"
    return text


def _fps(config: SessionConfig, env: str) -> int:
    from world_models.envs.presets import get_preset

    return config.fps or get_preset(env).fps


def _game_loop(config: SessionConfig, game, policy, headless: bool):
    """The session's GameLoop: --max-steps, --episodes (None: 1 headless, else no limit)."""
    from world_models.play.loop import GameLoop

    episodes = config.episodes
    if episodes is None and headless:
        episodes = 1
    return GameLoop(
        game, policy, max_steps=config.max_steps, max_episodes=episodes, seed=config.seed
    )


def _poller(window, keyboard, fps: int, hook: Callable | None) -> Callable:
    """The loop's poll(): the test hook, the frame rate, the hold after an episode, events."""

    from world_models.play.loop import Command

    def poll(loop) -> Command:
        if hook is not None:
            hook(loop)
        if window is None:
            return Command()
        window.wait(fps)
        if loop.over:
            window.sleep(HOLD_S)
        return keyboard.handle(window.events())

    return poll


# ---------------------------------------------------------------------------- play


def play(config: PlayConfig, *, env=None, hook: Callable | None = None) -> SessionResult:
    """A person (or C, ``config.agent``) plays in a window; see the module docstring.

    ``env`` replaces the real game (``--in real``; for tests: e.g. a wrapper that records
    the actions); ``hook(loop)`` runs before each tick's events are read (tests post key
    events there).
    """
    from world_models.play.draw import compose
    from world_models.play.keys import Keyboard, KeyboardPolicy, key_help
    from world_models.play.loop import run
    from world_models.play.window import Window

    check_config(config)
    window = Window("world-models play")  # no pygame: one line, before any model loads
    try:
        dream = config.target == "dream"
        models = load_models(config, need_vm=dream, need_controller=config.agent)
        mode = action_mode(models.env)
        if dream:
            game = make_dream(models, config.tau)
        else:
            game = env if env is not None else make_real(models.env)
        keyboard = Keyboard(window.pygame)
        if config.agent:
            from world_models.policies.controller import LatentPolicy

            policy = LatentPolicy(models.controller) if dream else models.policy
            keys = "C plays   R restart  Esc quit"
        else:
            policy = KeyboardPolicy(keyboard, mode)
            keys = key_help(mode)
        label = f"{models.env} dream (tau {config.tau:g})" if dream else f"{models.env}, real game"
        fps = _fps(config, models.env)
        recorder = Recorder(config.record, config.strip, config.strip_frames)
        loop = _game_loop(config, game, policy, window.headless)

        width = min_width([keys, label], config.scale)

        def show(loop, tr=None) -> None:
            frame = game.render() if dream else loop.obs
            lines = [status_line(loop), keys]
            picture = compose([frame], [label], lines, config.scale, width)
            window.show(picture)
            recorder.add(picture)

        try:
            result = run(loop, _poller(window, keyboard, fps, hook), show, show)
        finally:
            game.close()
    finally:
        window.close()
    return SessionResult(**vars(result), files=recorder.save(fps))


# ---------------------------------------------------------------------------- watch


def watch(config: WatchConfig, *, env=None, hook: Callable | None = None) -> SessionResult:
    """C plays; beside each frame, V's reconstruction and M's next frame. See the module
    docstring. ``env`` replaces the real game and ``hook(loop)`` runs each tick, as in
    :func:`play`."""
    import torch

    from world_models.play.draw import blank_panel, compose
    from world_models.play.loop import run

    check_config(config)
    window = keyboard = None
    if config.out is None:
        from world_models.play.keys import Keyboard
        from world_models.play.window import Window

        window = Window("world-models watch")
        keyboard = Keyboard(window.pygame)
    try:
        dream = config.target == "dream"
        models = load_models(config, need_vm=True, need_controller=True)
        decoder = Decoder(models.vae, models.device)
        gen = torch.Generator(device=models.device).manual_seed(config.seed)
        if dream:
            from world_models.policies.controller import LatentPolicy

            game = make_dream(models, config.tau)
            tap = game.mdrnn = MTap(game.mdrnn)
            policy = LatentPolicy(models.controller)
        else:
            game = env if env is not None else make_real(models.env)
            policy = models.policy
            tap = policy.mdrnn = MTap(policy.mdrnn)
        how = "mean" if config.predict == "mean" else f"sample, tau {config.tau:g}"
        if dream:
            labels = [f"dream (tau {config.tau:g})", f"M: next frame ({how})"]
        else:
            labels = ["real frame", "V: reconstruction", f"M: next frame ({how})"]
        keys = "C plays   R restart  Esc quit" if window is not None else "C plays"
        fps = _fps(config, models.env)
        recorder = Recorder(config.out, config.strip, config.strip_frames)
        loop = _game_loop(config, game, policy, window is None or window.headless)
        shown: dict[str, np.ndarray] = {}

        def predicted() -> np.ndarray:
            out = tap.take()
            if config.predict == "mean":
                z = mixture_mean(out)
            else:
                z = models.mdrnn.sample(out, config.tau, generator=gen)
            return decoder.decode(z[0])

        def panels(frame: np.ndarray, prediction: np.ndarray) -> list[np.ndarray]:
            return [frame, prediction] if dream else [frame, decoder.reconstruct(frame), prediction]

        width = min_width([keys], config.scale)

        def draw(loop, frame: np.ndarray, prediction: np.ndarray) -> None:
            lines = [status_line(loop), keys]
            picture = compose(panels(frame, prediction), labels, lines, config.scale, width)
            if window is not None:
                window.show(picture)
            recorder.add(picture)

        def on_reset(loop) -> None:
            shown["frame"] = game.render() if dream else loop.obs

        def on_step(loop, tr) -> None:
            # the frame C acted on, beside M's guess of the frame to come
            draw(loop, shown["frame"], predicted())
            shown["frame"] = game.render() if dream else tr.next_obs
            if tr.done:  # the last frame of the episode: no action, so no prediction
                draw(loop, shown["frame"], blank_panel())

        try:
            result = run(loop, _poller(window, keyboard, fps, hook), on_reset, on_step)
        finally:
            game.close()
    finally:
        if window is not None:
            window.close()
    return SessionResult(**vars(result), files=recorder.save(fps))


def summarize(result: SessionResult) -> str:
    return result.summary()
