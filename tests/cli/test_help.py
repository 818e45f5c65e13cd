"""Every command's --help reads cleanly at 80 columns: real choices, no type noise, no text lost to markup.

The commands are found by walking the click tree, so a command or option added later is checked too.
"""

from __future__ import annotations

import re

import pytest
from typer.core import TyperArgument, choice_as_str

from resrepro.cli.common import command
from tests.inprocess import in_process_cli


def _commands(cmd, path=()):
    if getattr(cmd, "commands", None):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))
    yield path, cmd


COMMANDS = dict(_commands(command()))
# A str option whose help defines its values one by one ("tiny: ...; full: ...") has choices, even if it is
# not declared as an Enum: its metavar must list them.
DEFINED = re.compile(r"(?:^|; )([\w-]+): ")


def _flat(text: str) -> str:
    """Without whitespace: help wraps at any space or after a hyphen."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "resrepro")
def test_help_shows_choices_without_type_noise_or_lost_brackets(path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = in_process_cli(monkeypatch, capsys, *path, "--help")
    assert code == 0
    assert max(map(len, out.splitlines())) <= 80
    for noise in ("<bool>", "list[", "\\["):
        assert noise not in out, f"{noise!r} in `{' '.join(path)} --help`"
    flat = _flat(out)
    for param in COMMANDS[path].params:
        if param.hidden or param.name == "help":
            continue
        name = param.metavar if isinstance(param, TyperArgument) else param.opts[0]
        desc = param.type_descriptor
        if desc.is_choice:
            values = "|".join(choice_as_str(c) for c in desc.choices)
            assert re.search(re.escape(_flat(name)) + r"\.*<?" + re.escape(values), flat), (
                f"{name} does not list its choices {values}")
        elif param.help and len(DEFINED.findall(param.help)) >= 2 and desc.annotation is str:
            values = "|".join(DEFINED.findall(param.help))
            assert _flat(f"{name} {values}") in flat, f"{name}: show {values}, not <str>"
        for bracketed in re.findall(r"\[[^\]]*\]", param.help or ""):
            assert _flat(bracketed) in flat, f"{name}: {bracketed!r} lost from its help"


def test_list_arguments_read_as_name_dots(monkeypatch, capsys):
    code, out, _ = in_process_cli(monkeypatch, capsys, "plot", "--help")
    assert code == 0 and re.search(r"^  RUN_DIR\.\.\. +Run directories\.", out, re.M)


@pytest.mark.parametrize("path", [p for p, cmd in COMMANDS.items() if getattr(cmd, "commands", None)],
                         ids=lambda p: " ".join(p) or "resrepro")
def test_a_group_alone_prints_its_help(path, monkeypatch, capsys):
    """`resrepro` or `resrepro train` with nothing after it shows what there is, exactly as --help does."""
    code, out, err = in_process_cli(monkeypatch, capsys, *path)
    assert code == 0 and not err
    assert out == in_process_cli(monkeypatch, capsys, *path, "--help")[1]
    assert "Commands:" in out


def test_table_help_names_every_table_the_registry_knows(monkeypatch, capsys):
    from resrepro.report.tables import table_names

    code, out, _ = in_process_cli(monkeypatch, capsys, "table", "--help")
    assert code == 0
    names = re.search(r"^  NAME +(.*?)\[required\]", out, re.M | re.S).group(1)
    assert set(table_names()) <= set(re.findall(r"[\w-]+", names)), out
