"""``blktrace-xen replay FILE... --logic A --logic B``: the same traffic, several logics."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import (
    CpuMhzOption,
    InputsArgument,
    TracebackOption,
    handle_errors,
    print_json,
)

EXIT_LAST_FAILS = 3
EXIT_INCONCLUSIVE = 5  # nothing was replayed: no verdict either way


def print_verdicts(result: Any) -> None:
    """Side-by-side table of invariants per logic, then each logic's caveats."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="replay: violations per logic", title_justify="left")
    table.add_column("invariant")
    for lv in result.verdicts:
        table.add_column(lv.logic.label, justify="right")
    for row in result.side_by_side():
        table.add_row(row["invariant"], *(str(row[lv.logic.label]) for lv in result.verdicts))
    table.add_row(
        "[bold]verdict[/bold]",
        *(
            "[yellow bold]inconclusive[/yellow bold]"
            if result.inconclusive
            else "[red bold]fails[/red bold]"
            if lv.fails
            else "[green bold]passes[/green bold]"
            for lv in result.verdicts
        ),
    )
    console.print(table)
    if result.inconclusive:
        console.print(f"inconclusive: {result.inconclusive}", highlight=False)
    shared = result.input.caveats  # what the trace lacks: the same for every logic
    for c in shared:
        console.print(f"caveat: {c.message}", highlight=False)
    for lv in result.verdicts:
        if lv.violations:
            first = lv.violations[0]
            console.print(
                f"[bold]{lv.logic.label}[/bold] first violation: {first.invariant} at "
                f"{first.t_ns} ns on vbd/{first.ring[0]}/{first.ring[1]}/q{first.ring[2]}"
                f" (id {first.id}): {first.message}",
                highlight=False,
            )
        for c in lv.caveats:
            if c not in shared:
                console.print(f"  caveat ({lv.logic.label}): {c.message}", highlight=False)


@app.command()
def replay(
    files: InputsArgument,
    *,
    logic: Annotated[
        list[str],
        typer.Option(
            "--logic",
            help="a logic name (see docs/model.md), path.py:ClassName, or BACK+FRONT; "
            "repeat it; the last one is the patch under test",
        ),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="print the verdicts as JSON")] = False,
    event_by_event: Annotated[
        bool,
        typer.Option(
            "--event-by-event",
            help="replay the steady stretches one event at a time too (slower, the same "
            "verdicts: a check on the bulk replay, docs/replay.md)",
        ),
    ] = False,
    cpu_mhz: CpuMhzOption = None,
    traceback: TracebackOption = False,
) -> None:
    """Replay a trace against each --logic; exit 3 when the last-named logic still violates,
    5 when nothing was replayed (no verdict either way)."""
    with handle_errors(traceback):
        from blktrace_xen.replay import replay_paths

        result = replay_paths(files, logic, cpu_mhz=cpu_mhz, bulk=not event_by_event)
        if json_out:
            print_json(result.to_dict())
        else:
            print_verdicts(result)
    if result.inconclusive:
        raise typer.Exit(code=EXIT_INCONCLUSIVE)
    if result.last_fails:
        raise typer.Exit(code=EXIT_LAST_FAILS)
