"""What a simulation did, saved beside its traces so tests and replay can compare.

``truth_requests`` / ``truth_responses`` hold every request the frontend published and
every response a backend published, with the simulation's
nanosecond, in the column names and types of ``REQUESTS_SCHEMA`` / ``RESPONSES_SCHEMA``
(``source`` = "synth"). ``truth.json`` holds the run's parameters, counts and the
model's violations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from blktrace_xen import schema
from blktrace_xen.model.events import RequestConsumed, RequestPushed, ResponsePushed
from blktrace_xen.synth.sim import SimResult, timed_actions

REQUEST_COLUMNS = (
    "domid", "vdev", "queue", "ns", "idx", "id", "operation", "nr_segments",
    "sector_number", "nr_sectors",
)  # fmt: skip
RESPONSE_COLUMNS = ("domid", "vdev", "queue", "ns", "idx", "id", "operation", "status")


def truth_requests(sim: SimResult) -> pl.DataFrame:
    rows = [
        (*a.ring, t, a.idx, a.id, a.operation, a.nr_segments, a.sector_number, a.nr_sectors)
        for s in sim.steps
        for t, a in timed_actions(s)
        if isinstance(a, RequestPushed)
    ]
    frame = pl.DataFrame(rows, schema=list(REQUEST_COLUMNS), orient="row")
    return schema.conform(
        frame.with_columns(pl.lit("full").alias("seen"), pl.lit("synth").alias("source")),
        "requests",
    )


def truth_responses(sim: SimResult) -> pl.DataFrame:
    """Every response pushed, including those a backend wrote after its ring was
    unmapped (``response-after-unmap``: the model leaves the ring alone, the trace
    records the push, as the real driver's instrumentation would before the panic)."""
    rows: list[tuple[int, ...]] = []
    ops: dict[tuple[tuple[int, int, int], int], int] = {}
    for s in sim.steps:
        for t, a in timed_actions(s):
            if isinstance(a, ResponsePushed):
                rows.append((*a.ring, t, a.idx, a.id, a.operation, a.status))
            elif isinstance(a, RequestConsumed):
                ops[(a.ring, a.seq)] = a.operation
        for v in s.violations:
            if v.invariant == "response-after-unmap":
                op = ops.get((v.ring, int(v.evidence.get("seq", -1))), 0)
                rows.append((*v.ring, s.t_ns, v.idx or 0, v.id or 0, op, 0))
    frame = pl.DataFrame(rows, schema=list(RESPONSE_COLUMNS), orient="row")
    return schema.conform(frame.with_columns(pl.lit("synth").alias("source")), "responses")


def truth_summary(sim: SimResult, params: dict[str, Any]) -> dict[str, Any]:
    res = sim.result
    return {
        **params,
        "end_ns": sim.end_ns,
        "steps": len(sim.steps),
        "dropped_events": sim.dropped,
        "counts": dict(sorted(res.counts.items())),
        "invariants": sorted(res.invariants()),
        "violations": [
            {
                "t_ns": v.t_ns,
                "ring": list(v.ring),
                "invariant": v.invariant,
                "id": v.id,
                "idx": v.idx,
                "message": v.message,
            }
            for v in res.violations
        ],
        "rings": {
            f"{k[0]}/{k[1]}/q{k[2]}": {"front": r.front_state, "back": r.back_states}
            for k, r in res.rings.items()
        },
    }


def write_truth(out: Path, sim: SimResult, params: dict[str, Any]) -> list[Path]:
    """Write truth.json, truth_requests.parquet and truth_responses.parquet into ``out``."""
    paths = [out / "truth.json", out / "truth_requests.parquet", out / "truth_responses.parquet"]
    paths[0].write_text(json.dumps(truth_summary(sim, params), indent=1, sort_keys=True) + "\n")
    # No statistics: they carry nothing a reader needs and keep the bytes stable.
    truth_requests(sim).write_parquet(paths[1], statistics=False)
    truth_responses(sim).write_parquet(paths[2], statistics=False)
    return paths


__all__ = [
    "REQUEST_COLUMNS",
    "RESPONSE_COLUMNS",
    "truth_requests",
    "truth_responses",
    "truth_summary",
    "write_truth",
]
