"""``blktrace-xen version``: print the tool version."""

from __future__ import annotations

import typer

from blktrace_xen import __version__
from blktrace_xen.cli.app import app


@app.command()
def version() -> None:
    """Print the blktrace-xen version."""
    typer.echo(__version__)
