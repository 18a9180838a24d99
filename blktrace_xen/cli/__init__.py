"""Thin command-line layer over the library (Typer).

Each command lives in its own module under ``cli/commands/`` and registers
itself on :data:`blktrace_xen.cli.app.app`; they are discovered here so that
adding a command never means editing a shared list. Commands catch
:class:`~blktrace_xen.errors.BlktraceXenError` only, print ``error: <message>``
on one line to stderr and exit with the error's code (1 bad input, 2 usage,
3 replay divergence).

Command modules import only typer and light helpers at top level (a test
checks it): every command pays for what any of them imports at start-up.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

from blktrace_xen.cli import commands
from blktrace_xen.cli.app import app

__all__ = ["app", "main"]


def _load_commands() -> None:
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{mod.name}")


_load_commands()

# The parameters of `info` the direct path understands; a test checks they are
# exactly the command's, so a new option cannot be silently ignored here.
INFO_PARAMS = ("file", "cpu_mhz", "json", "traceback")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def plain_info_args(argv: list[str]) -> tuple[Path, float | None, bool, bool] | None:
    """``info``'s arguments when ``argv`` is a plain, valid ``info`` call, else None.

    Typer's per-invocation cost here (building the click group and a pydantic
    adapter per parameter) is about 0.1 s, a quarter of xenalyze's whole run on
    a 10 M-record dump, so ``blktrace-xen info`` calls the command directly.
    Anything unusual (help, unknown or repeated options, odd numbers) goes to
    Typer, which then owns the parsing and the usage errors.
    """
    if not argv or argv[0] != "info":
        return None
    file: str | None = None
    cpu_mhz: float | None = None
    flags: set[str] = set()
    rest = argv[1:]
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok in ("--json", "--traceback"):
            if tok in flags:
                return None
            flags.add(tok)
        elif tok == "--cpu-mhz" or tok.startswith("--cpu-mhz="):
            if "--cpu-mhz" in flags:
                return None
            flags.add("--cpu-mhz")
            if tok == "--cpu-mhz":
                i += 1
                if i == len(rest):
                    return None
                value = rest[i]
            else:
                value = tok.partition("=")[2]
            if not _NUMBER.fullmatch(value):
                return None
            cpu_mhz = float(value)
        elif tok.startswith("-") or not tok or file is not None:
            return None
        else:
            file = tok
        i += 1
    if file is None:
        return None
    return Path(file), cpu_mhz, "--json" in flags, "--traceback" in flags


def run_plain_info(args: tuple[Path, float | None, bool, bool]) -> int:
    """Run ``info`` as Typer would after parsing ``args``; returns the exit code."""
    import typer

    from blktrace_xen.cli.commands.info import info

    try:
        info(*args)
    except typer.Exit as exc:
        return int(exc.exit_code)
    return 0


def recycle_freed_memory() -> None:
    """Let glibc's malloc keep freed block temporaries for the next block.

    Decoders work block by block with temporaries of a few MB. By default glibc
    serves those from fresh mmaps or trims them back to the kernel when freed,
    so every block page-faults its memory in again (first-touch memory is
    slow here): 79 k page faults and 0.2 s of system time for ``info`` on a
    10 M-record dump, against 11 k and 0.06 s with these thresholds. Peak RSS
    is unchanged: it is still one block's worth. The CLI owns its process, so
    it sets this; the library does not.
    """
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest accepted value
    mallopt(m_trim_threshold, 64 << 20)


def main() -> None:
    """Console-script entry point."""
    recycle_freed_memory()
    args = plain_info_args(sys.argv[1:])
    if args is not None:
        sys.exit(run_plain_info(args))
    app()
