"""``blktrace-xen report``: the self-contained HTML incident report and a Markdown summary."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import CpuMhzOption, TracebackOption, handle_errors
from blktrace_xen.errors import BlktraceXenError, InputFileError


class ReplayUnavailable(BlktraceXenError):
    """--replay was asked for but this build has no replay engine."""


def _load(files: Sequence[Path], cpu_mhz: float | None) -> Any:
    """The same loader as ``analyze``, so the report's numbers equal ``analyze --json``."""
    try:
        load = importlib.import_module("blktrace_xen.streams.load")
    except ImportError:
        load = None
    if load is not None:
        return load.load_streams(list(files), cpu_mhz=cpu_mhz)
    from blktrace_xen.streams.store import is_streams_dir, read_streams

    if len(files) == 1 and is_streams_dir(files[0]):
        return read_streams(files[0])
    raise InputFileError(
        files[0], "decoding raw traces is not available in this build; pass a streams folder"
    )


def _verdicts(streams: Any, logics: list[str], verdict_file: Path | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if verdict_file is not None:
        try:
            loaded = json.loads(verdict_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFileError(verdict_file, f"not a JSON list of verdicts: {exc}") from exc
        found += loaded if isinstance(loaded, list) else loaded.get("verdicts", [])
    if logics:
        try:
            replay = importlib.import_module("blktrace_xen.replay")
            run = replay.verdicts
        except (ImportError, AttributeError) as exc:
            raise ReplayUnavailable(
                "--replay needs blktrace_xen.replay.verdicts(streams, logics), not in this build"
            ) from exc
        found += list(run(streams, logics))
    return found


@app.command()
def report(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="xentrace dumps, ring captures, or one streams folder"),
    ],
    *,
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML report to write")],
    md: Annotated[Path | None, typer.Option("--md", help="also write a Markdown summary")] = None,
    replay: Annotated[
        str | None, typer.Option("--replay", help="replay these logics (A,B) and show verdicts")
    ] = None,
    verdicts: Annotated[
        Path | None, typer.Option("--verdicts", help="replay verdicts as JSON (replay --json)")
    ] = None,
    cpu_mhz: CpuMhzOption = None,
    title: Annotated[str, typer.Option("--title", help="report title")] = (
        "blktrace-xen incident report"
    ),
    traceback: TracebackOption = False,
) -> None:
    """Write an offline HTML incident report (and optionally a Markdown summary)."""
    with handle_errors(traceback):
        from blktrace_xen.analyses import analyze
        from blktrace_xen.report import assemble, write_report

        streams = _load(files, cpu_mhz)
        findings, btt = analyze(streams)
        logics = [x.strip() for x in (replay or "").split(",") if x.strip()]
        data = assemble(
            streams,
            findings,
            btt=btt,
            verdicts=_verdicts(streams, logics, verdicts),
            title=title,
        )
        for path in write_report(data, output, md):
            typer.echo(f"wrote {path}", err=True)
        typer.echo(data.verdict)
