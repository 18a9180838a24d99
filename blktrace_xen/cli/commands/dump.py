"""``blktrace-xen dump FILE``: one line per record in time order, like ``xenalyze --dump-all``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import (
    CatalogOption,
    CpuMhzOption,
    TracebackOption,
    handle_errors,
    warn,
)


@app.command()
def dump(
    file: Annotated[Path, typer.Argument(help="xentrace dump or pcapng ring capture to print.")],
    cpu_mhz: CpuMhzOption = None,
    catalog: CatalogOption = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="Stop after N lines.")] = None,
    traceback: TracebackOption = False,
) -> None:
    """Print every record: time (s.ns), pCPU, event name and fields (unknown events raw).

    Each line is `<seconds>.<ns> p<cpu> <name> <fields>`; times use xenalyze's formula
    and first TSC, so they equal `xenalyze --dump-all` for the same --cpu-mhz.
    """
    with handle_errors(traceback):
        from blktrace_xen.catalog import load_catalog
        from blktrace_xen.decode.detect import detect_format
        from blktrace_xen.decode.xentrace import IngestRun, iter_xentrace_chunks
        from blktrace_xen.errors import InputFileError

        fmt = detect_format(file)
        if fmt == "ringcap":
            _dump_ringcap(file, limit)
            return
        if fmt != "xentrace":
            raise InputFileError(file, "dump reads xentrace dumps and pcapng ring captures")
        cat = load_catalog(catalog or [])
        run = IngestRun.start(file, cpu_mhz)
        for w in run.warnings:
            warn(w)
        told = len(run.warnings)
        out = sys.stdout
        shown = 0
        for frame in iter_xentrace_chunks(file, run=run):
            cols = [frame[c].to_list() for c in ("ns", "cpu", "event", "n_extra")]
            data = [frame[f"d{i}"].to_list() for i in range(7)]
            lines = []
            for i, (ns, cpu, event, n) in enumerate(zip(*cols, strict=True)):
                words = [data[j][i] for j in range(n)]
                text = cat.format_record(event, words)
                lines.append(f"{ns // 1_000_000_000:3d}.{ns % 1_000_000_000:09d} p{cpu} {text}\n")
                shown += 1
                if limit is not None and shown >= limit:
                    break
            out.write("".join(lines))
            if limit is not None and shown >= limit:
                break
        out.flush()
        for w in run.warnings[told:]:
            warn(w)


def _dump_ringcap(file: Path, limit: int | None) -> None:
    from itertools import islice

    from blktrace_xen.decode.ringcap import iter_ringcap_dump

    lines = iter_ringcap_dump(file)
    out = sys.stdout
    for line in lines if limit is None else islice(lines, limit):
        out.write(line + "\n")
    out.flush()
