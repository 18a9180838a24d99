"""``blktrace-xen demo [-o DIR]``: one synthetic incident through every stage, end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from blktrace_xen.cli.app import app
from blktrace_xen.cli.common import TracebackOption, handle_errors

SCENARIO = "disconnect-during-io"


def run_demo(out: Path, scenario: str = SCENARIO, seed: int = 0) -> dict[str, Any]:
    """Synthesize ``scenario``, ingest, analyze, replay legacy vs patched, write the report.

    Returns what was written and found (the ``--json`` shape): ``files`` by role,
    ``findings`` (summary), ``replay`` (verdicts by logic), ``seconds`` per stage.
    """
    from blktrace_xen.analyses import analyze, summarize
    from blktrace_xen.replay import replay
    from blktrace_xen.report import assemble, write_report
    from blktrace_xen.streams.load import load_streams
    from blktrace_xen.streams.store import write_streams
    from blktrace_xen.synth.scenarios import SCENARIOS, synthesize

    scen = SCENARIOS[scenario]
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[stage] = round(now - t, 3)
        t = now

    out.mkdir(parents=True, exist_ok=True)
    inputs_dir = out / "inputs"
    synthesize(scenario, inputs_dir, seed=seed, duration_s=0.5, iops=4000)
    trace, capture = inputs_dir / "trace.xentrace", inputs_dir / "ring.pcapng"
    lap("synthesize")
    streams = load_streams([trace, capture])
    streams_dir = out / "streams"
    write_streams(streams, streams_dir)
    lap("ingest")
    findings, btt = analyze(streams)
    summary = summarize(findings)
    findings_json = out / "findings.json"
    findings_json.write_text(
        json.dumps(
            {"findings": findings.to_dicts(), "summary": summary, "btt": btt.to_dicts()},
            indent=1,
            sort_keys=True,
            default=str,
        )
        + "\n"
    )
    lap("analyze")
    logics = [scen.logic, scen.patched]
    result = replay(streams, logics)
    replay_json = out / "replay.json"
    replay_json.write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True) + "\n")
    lap("replay")
    data = assemble(
        streams,
        findings,
        btt=btt,
        verdicts=[v.to_dict() for v in result.verdicts],
        title=f"blktrace-xen demo: {scenario} (seed {scen.seed})",
    )
    html, md = out / "report.html", out / "report.md"
    write_report(data, html, md)
    lap("report")
    top = (
        findings.group_by("rule", "severity")
        .len()
        .sort(["severity", "len"], descending=True)
        .head(5)
        .to_dicts()
    )
    return {
        "scenario": scenario,
        "seed_document": scen.seed,
        "files": {
            "trace": str(trace),
            "capture": str(capture),
            "truth": str(inputs_dir / "truth.json"),
            "streams": str(streams_dir),
            "findings": str(findings_json),
            "replay": str(replay_json),
            "report_html": str(html),
            "report_md": str(md),
        },
        "headline": data.verdict,
        "findings": summary,
        "top_findings": [
            {"rule": r["rule"], "severity": str(r["severity"]), "count": r["len"]} for r in top
        ],
        "replay": {v.logic.label: v.invariants() for v in result.verdicts},
        "last_fails": result.last_fails,
        "seconds": seconds,
    }


@app.command()
def demo(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="folder to write everything into")
    ] = Path("demo-out"),
    json_out: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
    traceback: TracebackOption = False,
) -> None:
    """Synthesize an incident (seed 000), ingest, analyze, replay legacy vs patched, report."""
    with handle_errors(traceback):
        res = run_demo(output)
    if json_out:
        typer.echo(json.dumps(res, indent=2, sort_keys=True, default=str))
        return
    f = res["files"]
    echo = typer.echo
    echo(f"incident: {res['scenario']} (seed {res['seed_document']}), written to {output}/")
    echo(f"  inputs    {f['trace']}  {f['capture']}")
    echo(f"  streams   {f['streams']}/")
    echo(f"  findings  {f['findings']}")
    echo(f"  replay    {f['replay']}")
    echo(f"  report    {f['report_html']}  {f['report_md']}")
    echo("")
    echo(res["headline"])
    echo("")
    echo("key findings:")
    for r in res["top_findings"]:
        echo(f"  {r['severity']:8} {r['rule']} x{r['count']}")
    echo("replay verdicts (same traffic, each logic):")
    for logic, inv in res["replay"].items():
        said = ", ".join(f"{k} x{n}" for k, n in inv.items()) if inv else "no violation"
        echo(f"  {logic:26} {'FAILS' if inv else 'passes'}: {said}")
    total = sum(res["seconds"].values())
    echo(f"done in {total:.1f} s; open {f['report_html']} in a browser")
