"""Thin command-line layer over the library (Typer).

Each command lives in its own module under ``cli/commands/`` and registers
itself on :data:`blktrace_xen.cli.app.app`; they are discovered here so that
adding a command never means editing a shared list. Commands catch
:class:`~blktrace_xen.errors.BlktraceXenError` only, print ``error: <message>``
on one line to stderr and exit with the error's code (1 bad input, 2 usage,
3 replay divergence).
"""

from __future__ import annotations

import importlib
import pkgutil

from blktrace_xen.cli import commands
from blktrace_xen.cli.app import app

__all__ = ["app", "main"]


def _load_commands() -> None:
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{mod.name}")


_load_commands()


def main() -> None:
    """Console-script entry point."""
    app()
