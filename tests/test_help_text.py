"""``--help``: each flag's help reads as one paragraph, however many lines its docstring
spans in the config class (tyro kept the line break before every indented continuation
line, so helps wrapped mid-sentence)."""

from __future__ import annotations

import pytest

from world_models.cli import COMMANDS, _one_paragraph, main

BARS = "\u2502|"  # rich's box sides, UTF-8 or ASCII


def _help(capsys, monkeypatch, command: str) -> list[str]:
    # one column of option boxes: tyro sets them side by side from 130 columns
    monkeypatch.setenv("COLUMNS", "120")
    assert main([*command.split(), "--help"]) == 0
    return capsys.readouterr().out.splitlines()


def _flag_helps(lines: list[str]) -> list[tuple[str, list[str], int]]:
    """``(flag, its help's lines, width of the help column)`` for every flag of the option
    groups (boxed on a terminal, plain otherwise): the help column starts where a group's
    continuation lines start; its width is the group's longest help line (at most the real
    one, so a line that ends early is never excused)."""
    groups: list[list[str]] = [[]]
    for line in lines:
        s = line.strip()
        if len(s) >= 2 and s[0] in BARS and s[-1] in BARS:
            inner = s[1:-1].rstrip()
        else:
            inner = "" if s[:1] in "\u256d\u2570+" else line.rstrip()
        if not inner.strip() or set(inner.strip()) <= set("\u2500-"):  # a frame or a rule
            groups.append([])
        else:
            groups[-1].append(inner)
    out = []
    for group in filter(None, groups):

        def indent(x: str) -> int:
            return len(x) - len(x.lstrip())

        base = min(indent(x) for x in group)
        deeper = [indent(x) for x in group if indent(x) > base + 1]
        if not deeper:
            continue  # no help wraps in this group
        col = min(deeper)
        flags: list[tuple[str, list[str]]] = []
        for x in group:
            if indent(x) <= base + 1:  # a flag (its help beside it, or below a long one)
                beside = x[col - 2 : col] == "  " and x[col:].strip()  # not its metavar
                flags.append((x.split()[0], [x[col:].strip()] if beside else []))
            elif flags:
                flags[-1][1].append(x.strip())
        helps = [(flag, segs) for flag, segs in flags if segs]
        if helps:
            width = max(len(seg) for _, segs in helps for seg in segs)
            out += [(flag, segs, width) for flag, segs in helps]
    return out


def _broken_early(segs: list[str], width: int) -> list[str]:
    """Lines of a help that end although the next word would have fit on them."""
    return [
        f"{a!r} | {b!r}" for a, b in zip(segs, segs[1:]) if len(a) + 1 + len(b.split()[0]) <= width
    ]


def test_a_multi_line_field_doc_is_one_paragraph_in_train_vae_help(capsys, monkeypatch):
    helps = {
        flag: (segs, w) for flag, segs, w in _flag_helps(_help(capsys, monkeypatch, "train-vae"))
    }
    segs, width = helps["--cache-dir"]  # TrainVAEConfig.cache_dir: two lines, cut at "dataset"
    text = " ".join(" ".join(segs).split())
    assert text == (
        "Folder for the frames' uint8 cache (None: DATA_DIR/.cache, or, when the dataset "
        "cannot be written, $XDG_CACHE_HOME/world_models/frames, which a warning names). "
        "(default: None)"
    )
    assert len(segs) > 1 and not _broken_early(segs, width)  # wrapped, and only where full


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_help_wraps_only_at_the_column_edge(capsys, monkeypatch, command):
    helps = _flag_helps(_help(capsys, monkeypatch, command))  # none where nothing wraps
    assert command not in ("train-vae", "train-controller", "evaluate") or len(helps) > 10
    broken = {flag: _broken_early(segs, w) for flag, segs, w in helps}
    assert not {flag: b for flag, b in broken.items() if b}


def test_one_paragraph_keeps_blank_line_paragraphs_and_list_items():
    text = "First line\nsecond line.\n\nNext\n(paragraph).\n- item one\n- item two"
    assert _one_paragraph(text) == (
        "First line second line.\n\nNext (paragraph).\n- item one\n- item two"
    )
