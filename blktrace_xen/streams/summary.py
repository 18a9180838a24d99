"""A small JSON-able summary of a Streams: rings, sessions, request counts, pairing, grants."""

from __future__ import annotations

from typing import Any, Final

import polars as pl

from blktrace_xen import schema
from blktrace_xen.streams import Streams
from blktrace_xen.streams.grants import grant_summary

RING: Final = list(schema.RING_KEY)


def _traffic_sessions(streams: Streams) -> pl.DataFrame:
    """The distinct (ring, session) pairs that saw a request or a response.

    These are the sessions findings can name (they are found in the traffic),
    so every count of sessions a person reads is of these.
    """
    return (
        pl.concat(
            [streams.requests.select(*RING, "session"), streams.responses.select(*RING, "session")]
        )
        .drop_nulls()
        .unique()
    )


def session_label(numbers: list[int]) -> str:
    """How a ring's sessions read: ``[1]`` -> ``"session 1"``, ``[0, 1, 2, 5]`` ->
    ``"sessions 0-2, 5"``, ``[]`` -> ``"no session"``."""
    if not numbers:
        return "no session"
    ordered = sorted(set(numbers))
    spans: list[list[int]] = []
    for n in ordered:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return f"{'session' if len(ordered) == 1 else 'sessions'} {text}"


def _per_ring(streams: Streams) -> list[dict[str, Any]]:
    io = streams.io
    if io.height == 0 and streams.responses.height == 0:
        return []
    counts = io.group_by(RING).agg(
        pl.len().alias("requests"),
        pl.col("session").n_unique().alias("sessions_with_io"),
        pl.col("session").max().alias("last_session"),
        (pl.col("outcome") == "completed").sum().alias("completed"),
        pl.col("latency_ns").quantile(0.5, "nearest").alias("latency_p50_ns"),
        pl.col("latency_ns").quantile(0.99, "nearest").alias("latency_p99_ns"),
        (pl.col("reorder").fill_null(0) != 0).sum().alias("out_of_order"),
    )
    outcomes = (
        io.filter(pl.col("outcome") != "completed")
        .group_by([*RING, "outcome"])
        .len()
        .group_by(RING)
        .agg(pl.struct("outcome", "len").alias("unanswered"))
    )
    facts = (
        streams.pairing.with_columns(pl.col("kind").cast(pl.String))
        .group_by([*RING, "kind"])
        .len()
        .group_by(RING)
        .agg(pl.struct("kind", "len").alias("pairing"))
    )
    rsp = streams.responses.group_by(RING).agg(pl.len().alias("responses"))
    numbers = (
        _traffic_sessions(streams)
        .group_by(RING)
        .agg(pl.col("session").sort().cast(pl.Int64).alias("sessions"))
    )
    out = (
        counts.join(rsp, on=RING, how="full", coalesce=True)
        .join(numbers, on=RING, how="left")
        .join(outcomes, on=RING, how="left")
        .join(facts, on=RING, how="left")
        .sort(RING)
    )
    rows = []
    for row in out.iter_rows(named=True):
        row["unanswered"] = {d["outcome"]: d["len"] for d in row["unanswered"] or []}
        row["pairing"] = {d["kind"]: d["len"] for d in row["pairing"] or []}
        row["ring"] = f"d{row['domid']}/{row['vdev']}/q{row['queue']}"
        row["sessions"] = row["sessions"] or []
        row["sessions_label"] = session_label(row["sessions"])
        rows.append(row)
    return rows


def streams_summary(streams: Streams) -> dict[str, Any]:
    """Rings (requests, responses, sessions, outcomes, pairing facts), grants, lost, inputs.

    ``ring_sessions`` counts the (ring, session) pairs with a request or a
    response; each ring's ``sessions`` lists their numbers, the ones findings
    print (``sessions_label``: ``"session 1"``, ``"sessions 0-2, 5"``).
    ``sessions_with_io`` counts those with a request; ``last_session`` is the
    highest number with a request.
    """
    grants = grant_summary(streams.grants, streams.control)
    sessions = _traffic_sessions(streams).height
    return {
        "inputs": streams.meta.get("inputs", []),
        "cpu_mhz": streams.meta.get("cpu_mhz"),
        "cpu_mhz_default": streams.meta.get("cpu_mhz_default"),
        "t0_tsc": streams.meta.get("t0_tsc"),
        "tables": {name: frame.height for name, frame in streams.tables().items()},
        "rings": _per_ring(streams),
        "ring_sessions": sessions,
        "control": {
            k: v
            for k, v in streams.control.get_column("kind")
            .cast(pl.String)
            .value_counts()
            .iter_rows()
        },
        "grants": grants.to_dicts(),
        "lost_records": int(streams.lost["count"].sum()) if streams.lost.height else 0,
        "warnings": streams.meta.get("warnings", []),
    }


__all__ = ["session_label", "streams_summary"]
