"""``world-models <command>``: the library's functions behind a command line written by tyro.

Every command is a config dataclass (its fields and their docstrings are the flags and
their help) and a library function that takes it. :data:`COMMANDS` names both by import
path, so ``world-models --help`` imports nothing but this table and ``world-models <cmd>
--help`` imports only that command's config module: neither imports torch. ``--preset
NAME`` picks a named set of defaults that the other flags then override.

Errors a user can cause (:class:`WorldModelsError`) print one line and exit 2, as a bad
flag does; anything else prints one line too, with the traceback behind ``WM_DEBUG=1``.
Warnings print as one line each.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from world_models import __version__
from world_models.core.errors import ConfigError, Terminated, WorldModelsError


@dataclass(frozen=True)
class Command:
    """One subcommand: what it parses, what it runs, what it prints."""

    help: str
    """One line for ``world-models --help`` (and the top of the command's own help)."""
    config: str
    """``module:Class`` of its config dataclass (a torch-free module)."""
    run: str
    """``module:function`` called with the parsed config."""
    report: str | None = None
    """``module:function`` turning ``run``'s result into the text printed at the end
    (None: nothing printed). An int result is the exit status."""
    presets: str | None = None
    """``module:NAME`` of a dict of named configs, chosen with ``--preset``."""
    default_preset: str | None = None
    """The preset used without ``--preset`` (None: the dataclass's defaults)."""
    preset_follows: str | None = None
    """A field (``env``) whose value, when it names a preset, picks that preset."""
    description: str = ""
    """More text for the command's ``--help``."""
    resumes: bool = False
    """Whether re-running the same command after an interruption picks up where it stopped
    (what Ctrl-C's message says)."""


# The order is the pipeline's, and is the order of ``--help``.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        "collect CarRacing frames, train V, write its pictures (the main job; minutes on a CPU)",
        "world_models.demo:DemoConfig",
        "world_models.demo:run_demo",
        report="world_models.demo:format_outputs",
        presets="world_models.demo:PRESETS",
        default_preset="default",
        resumes=True,
    ),
    "validate": Command(
        "check the ConvVAE against its specification (layers, loss, examples)",
        "world_models.models.configs:ValidateConfig",
        "world_models.validate:validate",
    ),
    "collect": Command(
        "collect rollouts (random data policy or a controller) into an episode store",
        "world_models.data.configs:CollectConfig",
        "world_models.data.collect:collect",
        report="world_models.data.store:describe",
        presets="world_models.data.configs:COLLECT_PRESETS",
        default_preset="carracing",
        preset_follows="env",
        description=(
            "One .npz per episode plus manifest.json, in parallel worker processes. Episode i "
            "depends only on the seed and i; re-running the same command resumes or tops the "
            "dataset up to --episodes. Without --preset, the preset named after --env applies "
            "(carracing, doom), else the defaults with --out-dir data/ENV."
        ),
        resumes=True,
    ),
    "data info": Command(
        "summarise and verify an episode store",
        "world_models.data.configs:DataInfoConfig",
        "world_models.data.store:info_command",
    ),
    "data import": Command(
        "import rollouts of hardmaru's or ctallec's code",
        "world_models.data.configs:DataImportConfig",
        "world_models.data.importers:import_command",
    ),
    "train-vae": Command(
        "train the ConvVAE (V) on a dataset; re-running resumes",
        "world_models.training.configs:TrainVAEConfig",
        "world_models.training.vae:train_vae",
        report="world_models.training.vae:summarize",
        presets="world_models.training.configs:TRAIN_VAE_PRESETS",
        default_preset="carracing",
        description=(
            "Writes a run folder (checkpoints/last and best, metrics.csv, pictures, loss "
            "curve); re-running the same command resumes it. Several GPUs: torchrun "
            "--nproc_per_node N -m world_models.cli train-vae ... (same flags)."
        ),
        resumes=True,
    ),
    "encode": Command(
        "encode a dataset with V into latent series (mu, logvar) for M",
        "world_models.data.configs:EncodeConfig",
        "world_models.data.encode:encode",
        report="world_models.data.encode:describe",
        presets="world_models.data.configs:ENCODE_PRESETS",
        default_preset="carracing",
        resumes=True,
    ),
    "train-mdrnn": Command(
        "train the MDN-RNN (M) on latent series; re-running resumes",
        "world_models.training.configs:TrainMDNRNNConfig",
        "world_models.training.mdrnn:train_mdrnn",
        report="world_models.training.mdrnn:summarize",
        presets="world_models.training.configs:TRAIN_MDNRNN_PRESETS",
        default_preset="carracing",
        resumes=True,
    ),
    "dream": Command(
        "M's open-loop dream from a real frame, beside the real episode",
        "world_models.evaluation.configs:DreamVideoConfig",
        "world_models.evaluation.open_loop:dream_video",
        report="world_models.evaluation.open_loop:describe",
        description=(
            "Rolls M forward under the recorded (or random) actions at a chosen temperature, "
            "decodes with V, and writes a GIF or MP4 with the real episode on the left and "
            'the dream on the right (MP4: pip install "world_models[video]").'
        ),
    ),
    "train-controller": Command(
        "evolve the controller (C) with CMA-ES, in M's dream or the real env",
        "world_models.training.configs:TrainControllerConfig",
        "world_models.training.controller:train_controller",
        report="world_models.training.controller:summarize",
        presets="world_models.training.configs:TRAIN_CONTROLLER_PRESETS",
        default_preset="doom",
        resumes=True,
    ),
    "evaluate": Command(
        "score V+M+C or a baseline policy over N episodes, real or dreamed",
        "world_models.evaluation.configs:EvaluateConfig",
        "world_models.evaluation.evaluate:evaluate",
        report="world_models.evaluation.evaluate:summarize",
        presets="world_models.evaluation.configs:EVALUATE_PRESETS",
        default_preset="carracing",
        description=(
            "Envs step in worker processes while V, M and C run batched in this one. Writes "
            "results.json (mean, std, every return), returns.csv, histogram.png and "
            "animations of the best and worst episode."
        ),
    ),
    "fidelity": Command(
        "is M's dream as deadly as the game? fixed policies scored in both",
        "world_models.evaluation.configs:FidelityConfig",
        "world_models.evaluation.fidelity:fidelity",
    ),
    "select": Command(
        "choose among a run's controllers on a few real games (apart from the test seeds)",
        "world_models.evaluation.configs:SelectConfig",
        "world_models.evaluation.select:select_controller",
        report="world_models.evaluation.select:summarize",
    ),
    "reproduce": Command(
        "a paper recipe end to end (collect, V, encode, M, C, evaluate)",
        "world_models.recipes:ReproduceConfig",
        "world_models.recipes:reproduce",
        resumes=True,
    ),
    "play": Command(
        "play the game yourself, real or inside M's dream (needs pygame)",
        "world_models.play.sessions:PlayConfig",
        "world_models.play.sessions:play",
        report="world_models.play.sessions:summarize",
    ),
    "watch": Command(
        "watch a controller play, in the real env or inside M's dream",
        "world_models.play.sessions:WatchConfig",
        "world_models.play.sessions:watch",
        report="world_models.play.sessions:summarize",
    ),
}


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _overview() -> str:
    width = max(len(n) for n in COMMANDS) + 2
    lines = [
        "usage: world-models <command> [--preset NAME] [OPTIONS]",
        "",
        "World Models in PyTorch: collect, train V, encode, train M, evolve C, evaluate.",
        "",
        "commands:",
        *(f"  {name:<{width}}{c.help}" for name, c in COMMANDS.items()),
        "",
        "`world-models <command> --help` lists a command's options; --version the version.",
    ]
    return "\n".join(lines)


def _split_preset(args: list[str]) -> tuple[str | None, list[str]]:
    rest, preset, i = [], None, 0
    while i < len(args):
        a = args[i]
        if a == "--preset" and i + 1 < len(args):
            preset, i = args[i + 1], i + 2
            continue
        if a.startswith("--preset="):
            preset = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return preset, rest


def _option_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _default(
    name: str, command: Command, cls: type, presets: dict[str, Any], preset: str | None, args
) -> Any | None:
    """The config the flags override: --preset's, else the one --env names (collect), else
    the command's default preset, else the dataclass's defaults."""
    if preset is not None:
        if preset not in presets:
            choices = ", ".join(presets) or "none"
            raise ConfigError(f"{name}: unknown preset {preset!r} (presets: {choices})")
        return presets[preset]
    if command.preset_follows:
        value = _option_value(args, "--" + command.preset_follows.replace("_", "-"))
        if value is not None:
            return presets[value] if value in presets else cls(**{command.preset_follows: value})
    if command.default_preset:
        return presets[command.default_preset]
    return None  # the dataclass's own defaults (and its required positionals)


def _parse(name: str, command: Command, args: list[str]) -> Any:
    import tyro  # late: `world-models --help` needs no parser library

    preset, rest = _split_preset(args)
    presets = _load(command.presets) if command.presets else {}
    description = command.help + ("\n\n" + command.description if command.description else "")
    if presets:
        chosen = command.default_preset or "the dataclass defaults"
        description += (
            f"\n\n--preset NAME: named defaults that the flags override: {', '.join(presets)} "
            f"(default: {chosen}{'; or the one --env names' if command.preset_follows else ''})."
        )
    cls = _load(command.config)
    default = _default(name, command, cls, presets, preset, rest)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), _one_paragraph_helps():
            config = tyro.cli(
                cls,
                default=default,
                args=rest,
                prog=f"world-models {name}",
                description=description,
            )
    except SystemExit as exc:
        if exc.code in (0, None):
            raise  # --help
        raise ConfigError(_one_line(errors.getvalue(), name)) from None
    _check_pretrained_env(name, config, rest)
    return config


def _check_pretrained_env(name: str, config: Any, args: list[str]) -> None:
    """``evaluate --pretrained NAME`` plays the shipped model's env: an ``--env`` given
    beside it must name that env, not be dropped without a word. (Its config cannot tell
    an ``--env`` given from the preset's; play and watch, whose --env defaults to none,
    check it themselves.)"""
    given = _option_value(args, "--env")
    model = getattr(config, "pretrained", None)
    if name != "evaluate" or model is None or given is None:
        return
    from world_models.shipped import settings  # late: only when both are given

    env = settings(model)["env"]
    if given != env:
        raise ConfigError(
            f"--pretrained {model} is a world model of {env}, not --env {given}: drop --env "
            f"(or evaluate your own V, M and C with --vae, --mdrnn and --controller)"
        )


def _one_paragraph(text: str) -> str:
    """A field's help with its docstring's line breaks joined: one paragraph, as many as
    blank lines make ("- " and "* " list items keep their own lines)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        out = ""
        for line in (part.strip() for part in block.splitlines()):
            if not line:
                continue
            item = re.match(r"[-*] ", line) is not None
            out += ("\n" if item else " ") + line if out else line
        paragraphs.append(out)
    return "\n\n".join(paragraphs)


@contextlib.contextmanager
def _one_paragraph_helps():
    """While tyro parses, each flag's help is one paragraph: tyro (1.0) keeps a field
    docstring's line break wherever the next line is indented, which every continuation
    line in a class body is, so ``--help`` wrapped mid-sentence. Its reader of field
    docstrings (a private function: without it, the helps keep the breaks) is wrapped
    to rejoin them."""
    try:
        from tyro import _docstrings
    except ImportError:  # another tyro layout
        _docstrings = None
    original = getattr(_docstrings, "get_field_docstring", None)
    if original is None:
        yield
        return

    def joined(*args: Any, **kwargs: Any) -> str | None:
        text = original(*args, **kwargs)
        return _one_paragraph(text) if isinstance(text, str) else text

    _docstrings.get_field_docstring = joined
    try:
        yield
    finally:
        _docstrings.get_field_docstring = original


def _one_line(box: str, name: str) -> str:
    """tyro's framed error message as one line: what is wrong, and the likely flag."""
    # rich draws the frame in ASCII (| + -) where the output is not a UTF-8 terminal
    lines = [line.strip(" |+\u2502\u256d\u256e\u2570\u256f") for line in box.splitlines()]
    lines = [line for line in lines if line]

    def is_rule(line: str) -> bool:
        return set(line) <= {"\u2500", "-"}

    start = next((i for i in range(1, len(lines)) if not is_rule(lines[i])), len(lines))
    end = next((i for i in range(start, len(lines)) if is_rule(lines[i])), len(lines))
    what = " ".join(" ".join(lines[start:end]).split()).split(" Got errors:")[0] or "bad arguments"
    what = re.sub(r"^Error parsing \w+: ", "", what)  # a config's own check: its message
    hint = ""
    if "Perhaps you meant:" in lines:
        hint = "; did you mean " + lines[lines.index("Perhaps you meant:") + 1].split()[0] + "?"
    return f"{what}{hint} (see world-models {name} --help)"


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)  # no Python source-line decoration


def _groups() -> dict[str, list[str]]:
    """Command groups (``data``) and their subcommands, from the two-word names."""
    groups: dict[str, list[str]] = {}
    for name in COMMANDS:
        if " " in name:
            group, sub = name.split(" ", 1)
            groups.setdefault(group, []).append(sub)
    return groups


def _group_help(group: str) -> str:
    subs = _groups()[group]
    width = max(len(s) for s in subs) + 2
    lines = [
        f"usage: world-models {group} <command> [OPTIONS]",
        "",
        "commands:",
        *(f"  {s:<{width}}{COMMANDS[f'{group} {s}'].help}" for s in subs),
        "",
        f"`world-models {group} <command> --help` lists a command's options.",
    ]
    return "\n".join(lines)


def _command_name(argv: list[str]) -> tuple[str | None, list[str]]:
    if argv and argv[0] in _groups() and len(argv) > 1 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    return (argv[0], argv[1:]) if argv else (None, [])


def _raise_on_termination():
    """Make SIGTERM and SIGHUP raise :class:`Terminated` in the main thread, so a killed
    command closes its pools, workers and games as Ctrl-C does; return what undoes it.

    A repeat within 2 s is ignored: ``timeout`` signals the command, then its process group,
    and the second must not cut the cleanup short. A signal ignored already (``nohup``)
    stays ignored; off the main thread (an embedding program) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    first: list[float] = []

    def handler(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if first and now - first[0] < 2.0:
            return
        first[:] = [now]
        raise Terminated(signum)

    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
            old[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, previous in old.items():
            signal.signal(sig, previous)

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        with contextlib.suppress(BrokenPipeError):  # piped into `head`
            print(_overview())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"world_models {__version__}")
        return 0
    name, args = _command_name(argv)
    if name in _groups():  # a group alone, or its --help: its subcommands
        if not args or args[0] in ("-h", "--help"):
            with contextlib.suppress(BrokenPipeError):
                print(_group_help(name))
            return 0 if args else 2
        subs = ", ".join(_groups()[name])
        print(
            f"error: unknown command '{name} {args[0]}' ({name} commands: {subs}); "
            f"see world-models {name} --help",
            file=sys.stderr,
        )
        return 2
    command = COMMANDS.get(name or "")
    if command is None:
        print(f"error: unknown command {name!r}; see world-models --help", file=sys.stderr)
        return 2
    restore_signals = _raise_on_termination()
    try:
        try:
            config = _parse(name, command, args)
        except SystemExit as exc:  # tyro's --help (0) and bad flags (2)
            return int(exc.code or 0)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            result = _load(command.run)(config)
        if command.report and int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 prints
            print(_load(command.report)(result))
        return result if isinstance(result, int) and not isinstance(result, bool) else 0
    except WorldModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        return 0
    except Terminated as exc:  # before KeyboardInterrupt, its base class
        then = ": re-run the same command to resume" if command.resumes else ""
        with contextlib.suppress(OSError):  # SIGHUP: the terminal may be gone
            print(f"terminated by {exc.name}{then}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        then = ": re-run the same command to resume" if command.resumes else ""
        print(f"interrupted{then}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        if os.environ.get("WM_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"error: {type(exc).__name__}: {msg} (WM_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 1
    finally:
        restore_signals()


if __name__ == "__main__":
    sys.exit(main())
