"""``blktrace-xen info FILE``: what a trace holds, from a full decode (fast start: NumPy only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import handle_errors, print_json, warn


def _summary(path: Path, cpu_mhz: float | None) -> dict[str, Any]:
    # The one place an input format picks its reader; ring captures join here.
    from blktrace_xen.decode.detect import detect_format

    fmt = detect_format(path)
    if fmt == "xentrace":
        from blktrace_xen.decode.xentrace import summarize_xentrace

        return summarize_xentrace(path, cpu_mhz=cpu_mhz)
    from blktrace_xen.errors import InputFileError

    raise InputFileError(path, f"info does not read {fmt} input yet")


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="xentrace dump to summarise.")],
    cpu_mhz: Annotated[
        float | None,
        typer.Option("--cpu-mhz", help="TSC frequency in MHz (`xl info` cpu_mhz); default 2400."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    traceback: Annotated[bool, typer.Option("--traceback", help="Show full tracebacks.")] = False,
) -> None:
    """Format, CPUs, records, time span, lost records and counts per class of a trace."""
    with handle_errors(traceback):
        meta = _summary(file, cpu_mhz)
        for w in meta["warnings"]:
            warn(w)
        if json:
            print_json(meta)
            return
        span = meta["span_ns"] / 1e9
        lines = [
            f"file         {meta['path']}",
            f"format       {meta['format']} ({meta['bytes']} bytes, {meta['windows']} windows)",
            f"cpus         {', '.join(str(c) for c in meta['cpus'])}",
            f"records      {meta['records']}"
            + (f" (+{meta['wrap_records']} wrap fillers)" if meta["wrap_records"] else ""),
            f"tsc          {meta['first_tsc']} .. {meta['last_tsc']}",
            f"time span    {span:.9f} s at {meta['cpu_mhz']:g} MHz"
            + (" (default)" if meta["cpu_mhz_default"] else ""),
            f"lost records {meta['lost_records']} in {len(meta['lost'])} TRC_LOST_RECORDS",
        ]
        for rec in meta["lost"]:
            lines.append(
                f"  at {rec['offset']:#x}: {rec['count']} lost, d{rec['domid']}v{rec['vcpu']}, "
                f"first_tsc {rec['first_tsc']}"
            )
        lines.append("per cpu      " + ", ".join(f"{c}: {n}" for c, n in meta["per_cpu"].items()))
        lines.append("per class")
        for name, n in sorted(meta["per_class"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<10} {n}")
        typer.echo("\n".join(lines))
