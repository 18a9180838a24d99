"""The Typer application object that every command module registers on.

Kept apart from ``cli/__init__`` so command modules can import ``app`` without
importing each other.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="blktrace-xen",
    help="Trace-replay and log analysis of Xen blkif ring traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Trace-replay and log analysis of Xen blkif ring traffic."""
