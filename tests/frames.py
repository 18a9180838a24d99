"""Small hand-built stream frames for rule tests (patito-style factories).

Each ``make_<table>(rows)`` takes a list of dicts naming only what the test
cares about; every other column gets a valid default and the frame is cast to
the table's schema with ``schema.conform``. ``healthy_streams()`` is a small
clean ring session that every rule must leave silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from blktrace_xen import schema
from blktrace_xen.streams import Streams
from blktrace_xen.streams.pairing import pair

RING = {"domid": 1, "vdev": 51712, "queue": 0}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "requests": {
        **RING,
        "session": 0,
        "operation": 1,
        "nr_segments": 1,
        "nr_sectors": 8,
        "sector_number": 0,
        "seen": "full",
        "source": "synth",
    },
    "responses": {**RING, "session": 0, "operation": 1, "status": 0, "source": "synth"},
    "control": {**RING, "side": "back", "source": "synth"},
    "io": {**RING, "session": 0, "operation": 1, "status": 0, "seen": "full", "reorder": 0},
    "snapshots": {**RING, "nr_ents": 32, "req_event": 1, "rsp_event": 1},
    "rings": {**RING, "abi": "x86_64-abi", "ring_page_order": 0, "nr_ents": 32, "backend_domid": 0},
    "gaps": {**RING, "producer": "req"},
    "lost": {"cpu": 0, "domid": 0, "vcpu": 0},
    "grants": {"cpu": 0, "granting_domid": 1},
    "mutations": {**RING, "fields": "sector_number"},
}


def make(table: str, rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """A frame of ``table`` from ``rows`` (dicts of overrides)."""
    if not rows:
        return schema.empty(table)
    full = [{**_DEFAULTS[table], **r} for r in rows]
    names = list(dict.fromkeys(k for r in full for k in r))
    data = {n: [r.get(n) for r in full] for n in names}
    frame = pl.DataFrame(data, strict=False, infer_schema_length=None)
    return schema.conform(frame, table)


def make_requests(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return make("requests", rows)


def make_responses(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return make("responses", rows)


def make_control(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return make("control", rows)


def make_snapshots(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return make("snapshots", [{"snap": i, **r} for i, r in enumerate(rows)])


def pair_io(requests: pl.DataFrame, responses: pl.DataFrame) -> pl.DataFrame:
    """The ``io`` table for test streams: each request paired with the next response of its id.

    Deliberately simple (a Python loop over a few rows), so the rules under
    test do not depend on the streams engineer's pairing.
    """
    rsp = responses.sort("ns").to_dicts()
    used: set[int] = set()
    rows = []
    reqs = requests.sort("ns").to_dicts()
    for req in reqs:
        match = None
        for j, r in enumerate(rsp):
            if j not in used and r["id"] == req["id"] and r["ns"] >= req["ns"]:
                match = j
                break
        row = {
            **{
                k: req[k]
                for k in (
                    "domid",
                    "vdev",
                    "queue",
                    "session",
                    "id",
                    "sector_number",
                    "nr_sectors",
                    "seen",
                )
            },
            "operation": req["indirect_op"] if req["operation"] == 6 else req["operation"],
            "req_idx": req["idx"],
            "req_ns": req["ns"],
            "outcome": "trace_end",
        }
        if match is not None:
            used.add(match)
            r = rsp[match]
            row.update(
                rsp_idx=r["idx"],
                rsp_ns=r["ns"],
                latency_ns=r["ns"] - req["ns"],
                status=r["status"],
                outcome="completed",
            )
        rows.append(row)
    # reorder: completion rank minus issue rank within the ring session
    done = sorted((r for r in rows if r["outcome"] == "completed"), key=lambda r: r["rsp_ns"])
    for rank, r in enumerate(done):
        r["completion_rank"] = rank
    issue = [r for r in rows if r["outcome"] == "completed"]
    for rank, r in enumerate(issue):
        r["reorder"] = r["completion_rank"] - rank
    return make("io", [{k: v for k, v in r.items() if k != "completion_rank"} for r in rows])


def streams(
    *,
    requests: Sequence[dict[str, Any]] = (),
    responses: Sequence[dict[str, Any]] = (),
    io: pl.DataFrame | None = None,
    **tables: Sequence[dict[str, Any]],
) -> Streams:
    """A Streams from row lists.

    Unless ``io`` is given, ``io`` and ``pairing`` are the streams' own pairing
    (``pair``), as every loader gives them: the analyses consume that pairing
    and do not pair again.
    """
    req = make_requests(requests)
    rsp = make_responses(responses)
    frames = {name: make(name, rows) for name, rows in tables.items()}
    if "snapshots" in tables:
        frames["snapshots"] = make_snapshots(tables["snapshots"])
    if io is None:
        control = frames.get("control", schema.empty("control")).sort("ns", maintain_order=True)
        io, frames["pairing"] = pair(req, rsp, control)
    return Streams(requests=req, responses=rsp, io=io, **frames)


def healthy_rows(n: int = 40, *, t0: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` writes/reads issued 1 ms apart, 4 in flight, answered in order after 3.5 ms."""
    reqs, rsps = [], []
    for i in range(n):
        op = 0 if i % 4 == 3 else 1
        reqs.append(
            {
                "ns": t0 + i * 1_000_000,
                "idx": i,
                "id": i % 8,
                "operation": op,
                "sector_number": 8 * i,
            }
        )
        rsps.append({"ns": t0 + i * 1_000_000 + 3_500_000, "idx": i, "id": i % 8, "operation": op})
    return reqs, rsps


def healthy_streams(n: int = 40) -> Streams:
    """A clean ring session with snapshots consistent with its requests and responses."""
    reqs, rsps = healthy_rows(n)
    snaps = []
    for t in range(0, n * 1_000_000 + 4_000_000, 500_000):
        req_prod = sum(1 for r in reqs if r["ns"] <= t)
        rsp_prod = sum(1 for r in rsps if r["ns"] <= t)
        snaps.append(
            {
                "ns": t,
                "req_prod": req_prod,
                "rsp_prod": rsp_prod,
                "req_event": rsp_prod + 1,
                "rsp_event": rsp_prod + 1,
            }
        )
    return streams(
        requests=reqs,
        responses=rsps,
        snapshots=snaps,
        rings=[{}],
        control=[{"ns": -1_000_000, "kind": "connect"}],
    )
