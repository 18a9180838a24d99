"""Every command has a docs page whose generated reference matches the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from blktrace_xen.cli.reference import BEGIN, commands, reference, render_page

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli"
COMMANDS = commands()


def test_the_documented_commands_exist() -> None:
    expected = {"info", "ingest", "dump", "convert", "streams", "analyze", "report", "replay"}
    expected |= {"synth", "demo"}
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_page_is_current(name: str) -> None:
    page = DOCS / f"{name}.md"
    assert page.is_file(), f"docs/cli/{name}.md missing"
    text = page.read_text()
    assert BEGIN in text, f"docs/cli/{name}.md has no generated reference"
    fresh = render_page(text, reference(name, COMMANDS[name]))
    assert fresh == text, (
        f"docs/cli/{name}.md is stale: python -m blktrace_xen.cli.reference --write docs/cli"
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_and_option_has_help(name: str) -> None:
    cmd = COMMANDS[name]
    assert cmd.help, f"{name} has no help"
    for param in cmd.params:
        if param.name != "help":
            assert getattr(param, "help", None), f"{name} {param.name} has no help"
