"""``blktrace-xen convert``: raw ring page dumps -> pcapng ring capture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import TracebackOption, handle_errors


@app.command()
def convert(
    pages: Annotated[
        Path, typer.Argument(help="Concatenated raw ring areas (crash dump, debugger)")
    ],
    *,
    output: Annotated[Path, typer.Option("--output", "-o", help="pcapng ring capture to write")],
    ring: Annotated[str, typer.Option(help="Ring key domid/vdev[/queue], e.g. 1/51712/0")],
    abi: Annotated[str, typer.Option(help="x86_64-abi, x86_32-abi or arm-abi")] = "x86_64-abi",
    order: Annotated[int, typer.Option(help="ring-page-order (0-4)")] = 0,
    backend_domid: Annotated[int, typer.Option(help="Backend domain id")] = 0,
    timestamps: Annotated[
        Path | None,
        typer.Option(help="Text file, one line per page: ns [tsc]; default: page index as ns"),
    ] = None,
    traceback: TracebackOption = False,
) -> None:
    """Wrap raw blkif ring pages into a pcapng ring capture (one snapshot per page)."""
    from blktrace_xen.encode.convert import convert_raw_pages

    with handle_errors(traceback):
        n = convert_raw_pages(
            pages,
            output,
            ring=ring,
            abi=abi,
            ring_page_order=order,
            backend_domid=backend_domid,
            timestamps=timestamps,
        )
        typer.echo(f"{n} snapshots written to {output}")
