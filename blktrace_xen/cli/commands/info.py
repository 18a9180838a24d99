"""``blktrace-xen info FILE``: what an input holds (plain xentrace dumps: NumPy only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import CpuMhzOption, TracebackOption, handle_errors, print_json, warn


def _summary(path: Path, cpu_mhz: float | None) -> dict[str, Any]:
    # The one place an input format picks its reader.
    from blktrace_xen.decode.detect import detect_format

    fmt = detect_format(path)
    if fmt == "xentrace":
        from blktrace_xen.decode.xentrace import summarize_xentrace

        meta = summarize_xentrace(path, cpu_mhz=cpu_mhz)
        # Rings exist in a dump only through blkif instrumentation (TRC_GUEST);
        # a plain hypervisor trace keeps the NumPy-only fast path.
        if meta["per_class"].get("guest"):
            meta["streams"] = _streams_summary(path, cpu_mhz)
        return meta
    if fmt == "ringcap":
        from blktrace_xen.decode.ringcap import ringcap_summary

        meta = ringcap_summary(path)
        meta["streams"] = _streams_summary(path, cpu_mhz)
        return meta
    return {
        "format": "streams",
        "path": str(path),
        "warnings": [],
        "streams": _streams_summary(path, cpu_mhz),
    }


def _streams_summary(path: Path, cpu_mhz: float | None) -> dict[str, Any]:
    from blktrace_xen.streams.load import load_streams
    from blktrace_xen.streams.summary import streams_summary

    return streams_summary(load_streams([path], cpu_mhz=cpu_mhz))


def _xentrace_lines(meta: dict[str, Any]) -> list[str]:
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
    return lines


def _ringcap_lines(meta: dict[str, Any]) -> list[str]:
    lines = [
        f"file         {meta['path']}",
        f"format       ringcap (pcapng), {meta['snapshots']} snapshots, "
        f"{meta['xenstore_lines']} xenstore lines",
    ]
    for r in meta["rings"]:
        span = (r["last_ns"] - r["first_ns"]) / 1e9 if r["snapshots"] else 0.0
        lines.append(
            f"  {r['name']}: {r['abi']} order {r['ring_page_order']} ({r['nr_ents']} entries), "
            f"backend d{r['backend_domid']}, {r['snapshots']} snapshots over {span:.3f} s, "
            f"req_prod {r['req_prod_first']}..{r['req_prod_last']}"
        )
    agent = meta.get("agent")
    if agent:
        span = (agent["last_ns"] - agent["first_ns"]) / 1e9
        kinds = ", ".join(f"{k} {n}" for k, n in agent["per_kind"].items())
        lines += [
            f"agent        {agent['records']} records over {span:.3f} s, lost events "
            f"{agent['lost_events']}, bad records {agent['bad_records']}",
            f"  {agent['description']}",
            f"  {kinds}",
            *(f"  {note}" for note in agent["notes"]),
        ]
    return lines


def _streams_lines(summary: dict[str, Any]) -> list[str]:
    n_rings, n_sessions = len(summary["rings"]), summary["ring_sessions"]
    lines = [
        f"rings        {n_rings} ring{'s' * (n_rings != 1)}, "
        f"{n_sessions} session{'s' * (n_sessions != 1)} with I/O"
    ]
    for r in summary["rings"]:
        unanswered = ", ".join(f"{k} {v}" for k, v in sorted(r["unanswered"].items()))
        lines.append(
            f"  {r['ring']}: {r['requests']} requests, {r['completed']} completed, "
            f"I/O in {r['sessions_label']}" + (f", unanswered: {unanswered}" if unanswered else "")
        )
    if summary["control"]:
        lines.append(
            "control      " + ", ".join(f"{k} {v}" for k, v in sorted(summary["control"].items()))
        )
    return lines


@app.command()
def info(
    file: Annotated[
        Path, typer.Argument(help="xentrace dump, pcapng ring capture or streams folder.")
    ],
    cpu_mhz: CpuMhzOption = None,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    traceback: TracebackOption = False,
) -> None:
    """Summarise an input: format, CPUs, records, time span, lost records, counts per class;
    for ring captures and instrumented traces also the rings, sessions and requests."""
    with handle_errors(traceback):
        meta = _summary(file, cpu_mhz)
        for w in meta["warnings"]:
            warn(w)
        if json:
            print_json(meta)
            return
        if meta["format"] == "xentrace":
            lines = _xentrace_lines(meta)
        elif meta["format"] == "ringcap":
            lines = _ringcap_lines(meta)
        else:
            lines = [f"file         {meta['path']}", "format       streams folder"]
        if "streams" in meta:
            lines += _streams_lines(meta["streams"])
        typer.echo("\n".join(lines))
