"""Helpers shared by the command modules: the options several commands take, error
reporting and output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from blktrace_xen.errors import BlktraceXenError

T = TypeVar("T")

# One declaration per option that several commands take, so that its name and
# help read the same everywhere (`docs/cli/` is generated from them).
CpuMhzOption = Annotated[
    float | None,
    typer.Option("--cpu-mhz", help="TSC frequency in MHz (`xl info` cpu_mhz); default 2400."),
]
TracebackOption = Annotated[bool, typer.Option("--traceback", help="Show full tracebacks.")]
CatalogOption = Annotated[
    list[Path] | None,
    typer.Option("--catalog", help="Extra event catalog (TOML, or Xen's formats file)."),
]
InputsArgument = Annotated[
    list[Path],
    typer.Argument(
        metavar="FILE", help="xentrace dumps, pcapng ring captures and/or streams folders."
    ),
]


@contextmanager
def handle_errors(traceback: bool = False) -> Iterator[None]:
    """Turn a BlktraceXenError into one line on stderr and the error's exit code."""
    try:
        yield
    except BlktraceXenError as exc:
        if traceback:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=exc.exit_code) from None
    except BrokenPipeError:
        # `blktrace-xen dump trace.bin | head` closes the pipe early: not an error.
        sys.stderr.close()
        raise typer.Exit(code=0) from None


def run(fn: Callable[[], T], traceback: bool = False) -> T:
    """Call ``fn`` under :func:`handle_errors`."""
    with handle_errors(traceback):
        return fn()
    raise AssertionError("unreachable")  # pragma: no cover


def warn(message: str) -> None:
    """One warning line on stderr."""
    typer.echo(f"warning: {message}", err=True)


def print_json(obj: Any) -> None:
    """Machine-readable output on stdout, stable key order."""
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
