"""``blktrace-xen synth SCENARIO -o DIR``: a synthetic incident as a xentrace dump and capture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import TracebackOption, handle_errors


@app.command()
def synth(  # noqa: PLR0917 - typer maps each option to a parameter
    scenario: Annotated[
        str | None, typer.Argument(help="Scenario name (see --list).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Folder to write the outputs into.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="RNG seed: same seed, same bytes.")] = 0,
    duration: Annotated[float, typer.Option("--duration", help="Simulated seconds of I/O.")] = 1.0,
    iops: Annotated[int, typer.Option("--iops", help="Issue rate of the fio job(s).")] = 5000,
    logic: Annotated[
        str | None,
        typer.Option(
            "--logic",
            help="Model logic (registry name or path.py:Class); default: the scenario's "
            "legacy logic.",
        ),
    ] = None,
    no_guest_events: Annotated[
        bool,
        typer.Option(
            "--no-guest-events", help="Hypervisor events only (no TRC_GUEST blkif records)."
        ),
    ] = False,
    persistent_grants: Annotated[
        bool, typer.Option("--persistent-grants", help="No grant map/unmap per request.")
    ] = False,
    lost_records: Annotated[
        int, typer.Option("--lost-records", help="Drop N records of pCPU 0 a third of the way in.")
    ] = 0,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
    traceback: TracebackOption = False,
) -> None:
    """Simulate SCENARIO and write trace.xentrace, ring.pcapng and truth files into DIR."""
    from blktrace_xen.synth.scenarios import SCENARIOS, synthesize

    if list_:
        for s in SCENARIOS.values():
            seed_txt = f"seed {s.seed}" if s.seed else "-"
            typer.echo(f"{s.name:24} {seed_txt:9} {s.logic} / {s.patched}: {s.doc}")
        return
    if scenario is None or out is None:
        typer.echo("error: give a SCENARIO and -o DIR (or --list)", err=True)
        raise typer.Exit(code=2)
    with handle_errors(traceback):
        res = synthesize(
            scenario,
            out,
            seed=seed,
            duration_s=duration,
            iops=iops,
            logic=logic,
            guest_events=not no_guest_events,
            persistent_grants=persistent_grants,
            lost_records=lost_records,
        )
        inv = sorted(res.sim.result.invariants())
        typer.echo(
            f"{res.scenario} with {res.logic} (seed {res.seed}): "
            f"{res.sim.result.counts.get('submitted', 0)} requests, "
            f"{res.records} trace records, {res.snapshots} ring snapshots"
        )
        typer.echo(f"violations: {', '.join(inv) if inv else 'none'}")
        for f in res.files:
            typer.echo(f"wrote {f}")
