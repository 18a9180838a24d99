"""``blktrace-xen analyze FILE...``: run the rule catalogue and print findings and a btt table.

Exit codes: 0 ok; 1 bad input; 2 usage error; 4 ``--fail-on`` matched a
finding (for CI).
"""

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
    warn,
)

EXIT_FINDINGS = 4

_STYLE = {"info": "dim", "low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red"}


def _print_tables(findings: Any, btt: Any, summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"findings ({summary['total']})", show_lines=False)
    for col in ("rule", "severity", "ring", "time ms", "id", "message"):
        table.add_column(col, overflow="fold")
    for row in findings.iter_rows(named=True):
        ring = "-" if row["domid"] is None else f"d{row['domid']}/{row['vdev']}/q{row['queue']}"
        sev = str(row["severity"])
        table.add_row(
            row["rule"],
            f"[{_STYLE[sev]}]{sev}[/]",
            ring,
            "" if row["ns"] is None else f"{row['ns'] / 1e6:.3f}",
            "" if row["id"] is None else str(row["id"]),
            row["message"]
            + ("" if row["confidence"] >= 1.0 else f" (confidence {row['confidence']:.2f})"),
        )
    console.print(table)
    lat = Table(title="latency by ring and op (btt)")
    cols = (
        "ring",
        "op",
        "count",
        "iops",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "qd p50/max",
        "reordered",
    )
    for col in cols:
        lat.add_column(col, justify="right")

    def msec(v: Any) -> str:
        return "-" if v is None else f"{v / 1e6:.3f}"

    def num(v: Any, fmt: str = "{:.1f}") -> str:
        return "-" if v is None else fmt.format(v)

    for r in btt.iter_rows(named=True):
        lat.add_row(
            f"d{r['domid']}/{r['vdev']}/q{r['queue']}",
            str(r["operation"]),
            str(r["count"]),
            num(r["iops"]),
            num(r["mb_s"], "{:.2f}"),
            msec(r["lat_p50_ns"]),
            msec(r["lat_p90_ns"]),
            msec(r["lat_p99_ns"]),
            msec(r["lat_max_ns"]),
            f"{num(r['qd_p50'], '{:.0f}')}/{num(r['qd_max'], '{:.0f}')}",
            str(r["reordered"]),
        )
    console.print(lat)


@app.command()
def analyze(  # noqa: PLR0917  (typer maps parameters to options)
    files: InputsArgument,
    json_out: Annotated[
        bool, typer.Option("--json", help="print {findings, summary, btt} as JSON")
    ] = False,
    rules: Annotated[
        str | None, typer.Option(help="comma-separated rule ids (default: all; see docs/rules.md)")
    ] = None,
    min_severity: Annotated[
        str, typer.Option(help="drop findings below: info, low, medium, high, critical")
    ] = "info",
    fail_on: Annotated[
        str | None,
        typer.Option(help=f"exit {EXIT_FINDINGS} if a finding at or above this severity exists"),
    ] = None,
    cpu_mhz: CpuMhzOption = None,
    stall_ms: Annotated[
        float | None, typer.Option(help="stall threshold in ms (default 5000)")
    ] = None,
    traceback: TracebackOption = False,
) -> None:
    """Find blkif protocol violations and summarise latency per ring and op."""
    from blktrace_xen.analyses import AnalysisOptions, summarize
    from blktrace_xen.analyses import analyze as analyze_streams
    from blktrace_xen.errors import ModelUsageError
    from blktrace_xen.schema import SEVERITIES
    from blktrace_xen.streams.load import load_streams

    with handle_errors(traceback):
        if fail_on is not None and fail_on not in SEVERITIES:
            raise ModelUsageError(
                f"--fail-on: unknown severity {fail_on!r}; expected one of {', '.join(SEVERITIES)}"
            )
        streams = load_streams(files, cpu_mhz=cpu_mhz)
        if streams.meta.get("cpu_mhz_default") and streams.meta.get("t0_tsc") is not None:
            warn("no --cpu-mhz given: TSC converted at 2400 MHz, times may be off")
        if streams.requests.height == 0 and streams.responses.height == 0:
            # A stock xentrace dump has no ring events: say so rather than print empty tables
            # that read as "healthy".
            warn(
                "no blkif requests or responses in the inputs (a stock Xen trace carries none): "
                "add a ring capture (docs/ringcap.md) or trace an instrumented backend "
                "(docs/instrumenting.md); only the control and grant rules had data"
            )
        options = (
            AnalysisOptions() if stall_ms is None else AnalysisOptions(stall_ns=int(stall_ms * 1e6))
        )
        selected = None if rules is None else [r.strip() for r in rules.split(",") if r.strip()]
        findings, btt = analyze_streams(
            streams, rules=selected, min_severity=min_severity, options=options
        )
        summary = summarize(findings)
        if json_out:
            print_json({"findings": findings.to_dicts(), "summary": summary, "btt": btt.to_dicts()})
        else:
            _print_tables(findings, btt, summary)
        if fail_on is not None:
            floor = SEVERITIES.index(fail_on)
            if any(summary["by_severity"][s] for s in SEVERITIES[floor:]):
                raise typer.Exit(code=EXIT_FINDINGS)
