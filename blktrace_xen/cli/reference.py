"""Generate the CLI reference in docs/cli/<command>.md from the Typer definitions.

Each page keeps its hand-written prose; the region between the two markers
below is rewritten from the command's own parameters, so the reference cannot
drift from the code (tests/test_docs_cli.py fails when a page is stale)::

    python -m blktrace_xen.cli.reference --write docs/cli
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from blktrace_xen.cli import app

BEGIN = "<!-- BEGIN GENERATED: blktrace-xen reference (python -m blktrace_xen.cli.reference) -->"
END = "<!-- END GENERATED -->"


# Typer vendors its own click (typer._click), so commands and parameters are
# handled by their attributes rather than by click's classes.
def commands() -> dict[str, Any]:
    """Every registered command by name."""
    group: Any = typer.main.get_command(app)
    return dict(sorted(group.commands.items()))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _param_row(param: Any, ctx: Any) -> str | None:
    if param.param_type_name == "option":
        if param.hidden or "--help" in param.opts:
            return None
        names = ", ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
        kind = "flag" if param.is_flag else param.display_type(ctx).strip("<>")
        default = "" if param.is_flag or param.default is None else f"`{param.default}`"
        if param.multiple:
            kind += " (repeatable)"
        return f"| {names} | {kind} | {default} | {_cell(param.help or '')} |"
    if param.param_type_name == "argument":
        name = (param.name or "").upper() + ("..." if param.nargs == -1 else "")
        help_text = getattr(param, "help", None) or ""
        required = "required" if param.required else "optional"
        kind = param.display_type(ctx).strip("<>")
        return f"| `{name}` | {kind}, {required} | | {_cell(help_text)} |"
    return None


def reference(name: str, cmd: Any) -> str:
    """The generated Markdown block for one command."""
    ctx = cmd.context_class(cmd, info_name=f"blktrace-xen {name}")
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    summary = _cell((cmd.help or "").split("\n\n")[0])
    rows = [r for r in (_param_row(p, ctx) for p in cmd.params) if r]
    lines = [
        BEGIN,
        "",
        "```text",
        f"blktrace-xen {name} {usage}",
        "```",
        "",
        summary,
        "",
        "| argument / option | type | default | meaning |",
        "|---|---|---|---|",
        *rows,
        "",
        END,
    ]
    return "\n".join(lines)


def render_page(text: str, block: str) -> str:
    """``text`` with its generated region replaced (or appended under a heading)."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return head + block + tail
    return text.rstrip("\n") + "\n\n## Reference\n\n" + block + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--write":
        print("usage: python -m blktrace_xen.cli.reference --write DOCS_CLI_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    for name, cmd in commands().items():
        page = out / f"{name}.md"
        text = page.read_text() if page.exists() else f"# `blktrace-xen {name}`\n"
        page.write_text(render_page(text, reference(name, cmd)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
