"""``blktrace-xen streams FILE... -o DIR``: decode, pair and store the normalised streams."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import (
    CatalogOption,
    CpuMhzOption,
    InputsArgument,
    TracebackOption,
    handle_errors,
    print_json,
    warn,
)


def _lines(summary: dict[str, Any], written: list[Path]) -> list[str]:
    out = [f"wrote {len(written)} files to {written[0].parent}" if written else "nothing written"]
    for ring in summary["rings"]:
        extra = ", ".join(f"{k} {v}" for k, v in sorted(ring["unanswered"].items()))
        facts = ", ".join(f"{k} {v}" for k, v in sorted(ring["pairing"].items()))
        out.append(
            f"{ring['ring']}: {ring['requests'] or 0} requests, "
            f"{ring['responses'] or 0} responses, {ring['completed'] or 0} completed"
            + (f", unanswered: {extra}" if extra else "")
            + (f", pairing: {facts}" if facts else "")
            + f", {ring['sessions_label']}"
        )
    for g in summary["grants"]:
        out.append(
            f"grants of d{g['granting_domid']}: {g['maps']} maps, {g['unmaps']} unmaps, "
            f"balance {g['final_balance']}"
        )
    return out


@app.command()
def streams(  # noqa: PLR0917  (typer maps parameters to options)
    files: InputsArgument,
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the Parquet tables.")],
    cpu_mhz: CpuMhzOption = None,
    catalog: CatalogOption = None,
    json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    traceback: TracebackOption = False,
) -> None:
    """Requests, responses, control, io (paired), sessions and grants as Parquet in OUT."""
    with handle_errors(traceback):
        from blktrace_xen.streams.load import load_streams
        from blktrace_xen.streams.store import write_streams
        from blktrace_xen.streams.summary import streams_summary

        loaded = load_streams(files, cpu_mhz=cpu_mhz, catalogs=catalog or ())
        written = write_streams(loaded, out)
        summary = streams_summary(loaded)
        for w in summary["warnings"]:
            warn(w)
        if json:
            print_json(summary)
            return
        for line in _lines(summary, written):
            typer.echo(line)
