"""``blktrace-xen capture``: record every blkif request and response live in a Linux dom0."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import TracebackOption, handle_errors


@app.command()
def capture(
    *,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="pcapng ring capture to write")
    ] = None,
    domain: Annotated[
        int | None, typer.Option("--domain", help="Only this frontend domain id")
    ] = None,
    vbd: Annotated[
        int | None, typer.Option("--vbd", help="Only this virtual device (51712 = xvda)")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option("--seconds", help="Stop after this long (default: Ctrl-C)")
    ] = None,
    raw_log: Annotated[
        Path | None,
        typer.Option("--raw-log", help="Also keep bpftrace's output lines here (for bug reports)"),
    ] = None,
    bpftrace: Annotated[str, typer.Option("--bpftrace", help="bpftrace binary")] = "bpftrace",
    check: Annotated[
        bool,
        typer.Option("--check", help="Load each probe alone, say which this kernel refuses, exit"),
    ] = False,
    traceback: TracebackOption = False,
) -> None:
    """Attach eBPF probes to xen-blkback and record every request, response and control event.

    Run as root in dom0 (Linux >= 5.11 with module BTF, bpftrace installed). Follows
    every ring of every domain, including domains and rings that appear while it
    runs, until Ctrl-C, SIGTERM or --seconds. See docs/capture.md.
    """
    from blktrace_xen.capture.agent import check_probes, run_capture
    from blktrace_xen.errors import CaptureError

    with handle_errors(traceback):
        if check:
            results = check_probes(bpftrace, say=lambda msg: typer.echo(msg, err=True))
            bad = [n for n, why in results.items() if why != "ok"]
            typer.echo(f"{len(results) - len(bad)} of {len(results)} probes load on this kernel")
            return
        if output is None:
            raise CaptureError("capture needs --output FILE (or --check)")
        stats = run_capture(
            output,
            domain=domain,
            vbd=vbd,
            seconds=seconds,
            raw_log=raw_log,
            bpftrace=bpftrace,
            on_status=lambda msg: typer.echo(msg, err=True),
        )
        for line in stats.missing:
            typer.echo(f"warning: {line}", err=True)
        typer.echo(
            f"{stats.records} records of {len(stats.rings)} ring(s) written to {output} "
            f"({stats.stop_reason}; lost events: {stats.lost}, unparsed lines: {stats.unparsed})"
        )
        if stats.lost:
            typer.echo(
                f"warning: bpftrace lost {stats.lost} events: the capture is incomplete", err=True
            )
