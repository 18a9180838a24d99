"""Pair responses with requests: the ``io`` and ``pairing`` tables.

The blkif "echoed id" rule: a response answers the request of the same ring
and id that is outstanding; a frontend reuses an id only after its response
(Linux blkfront's shadow free list even hands the freed id out first). So per
(ring, session, id), a valid stream alternates request, response, request ...
and pairing is: each response answers the event just before it in its
(ring, session, id) group, when that is a request.

Everything is window expressions over the time-ordered frame (performance
notes §2.6), no per-request Python and no sort by (ring, id).

Equal timestamps: a ring capture observes many events in one snapshot (and
records without TSC share their CPU's last TSC). Within one (ring, session,
id, ns) block the true order is unknown, so the only order consistent with the
protocol is chosen: if a request of that id was outstanding before the block,
its response comes first; otherwise the new request does. Data that breaks
the protocol is then reported, not silently re-paired.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from blktrace_xen import schema
from blktrace_xen.streams import sessions

RING: Final = list(schema.RING_KEY)
OP_INDIRECT: Final = 6
REQ: Final = 0
RSP: Final = 1

_COMMON: Final = [
    *RING,
    "session",
    "ns",
    "idx",
    "id",
    "operation",
    "eff_op",
    "status",
    "seen",
    "sector_number",
    "nr_sectors",
    "source",
    "kind",
]


def effective_op() -> pl.Expr:
    """The op a response must echo: ``indirect_op`` for an indirect request."""
    return (
        pl.when(pl.col("operation") == OP_INDIRECT)
        .then(pl.col("indirect_op"))
        .otherwise(pl.col("operation"))
    )


def _merged(requests: pl.DataFrame, responses: pl.DataFrame) -> pl.DataFrame:
    req = requests.select(
        *RING,
        "session",
        "ns",
        "idx",
        "id",
        "operation",
        effective_op().alias("eff_op"),
        pl.lit(None, pl.Int16).alias("status"),
        "seen",
        "sector_number",
        "nr_sectors",
        "source",
        pl.lit(REQ, pl.Int8).alias("kind"),
    )
    rsp = responses.select(
        *RING,
        "session",
        "ns",
        "idx",
        "id",
        "operation",
        pl.col("operation").alias("eff_op"),
        "status",
        pl.lit(None, schema.RequestSeen).alias("seen"),
        pl.lit(None, pl.UInt64).alias("sector_number"),
        pl.lit(None, pl.UInt64).alias("nr_sectors"),
        "source",
        pl.lit(RSP, pl.Int8).alias("kind"),
    )
    # Stable single-key sort: within equal ns each kind keeps its own order
    # (index order as the builders emit it).
    return pl.concat([req, rsp]).sort("ns", maintain_order=True, nulls_last=True)


def _protocol_order(merged: pl.DataFrame) -> pl.DataFrame:
    """Add ``_key``: the order of rows within their (ring, session, id) group.

    Inside an equal-ns block of one group the rows are ordered as the protocol
    allows; everywhere else ``_key`` follows the frame.
    """
    group = [*RING, "session", "id"]
    block = [*group, "ns"]
    is_req = pl.col("kind") == REQ
    delta = pl.when(is_req).then(1).otherwise(-1)
    pos_in_frame = pl.int_range(0, pl.len(), dtype=pl.Int64)
    work = merged.with_columns(pos_in_frame.alias("_row"), delta.alias("_d")).with_columns(
        (pl.col("_d").cum_sum().over(group) - pl.col("_d")).alias("_before"),
        pl.len().over(block).alias("_blen"),
    )
    if work.height == 0 or work["_blen"].max() == 1:
        return work.with_columns(pl.col("_row").cast(pl.Float64).alias("_key")).drop(
            "_row", "_d", "_before", "_blen"
        )
    work = work.with_columns(
        (pl.col("_before").first().over(block) > 0).alias("_rsp_first"),
        pl.col("_row").first().over(block).alias("_first"),
        (pl.int_range(0, pl.len()).over([*block, "kind"])).alias("_rank"),
    )
    pos = (
        pl.when(pl.col("_rsp_first") == (pl.col("kind") == RSP))
        .then(2 * pl.col("_rank"))
        .otherwise(2 * pl.col("_rank") + 1)
    )
    # The order inside each (ring, session, id) group: blocks stay where they
    # are, rows inside a block are spread over [first, first + 1). The frame
    # itself is not reordered, so each kind keeps its own order across ids
    # (issue and completion ranks are counted in frame order).
    key = pl.col("_first").cast(pl.Float64) + pos.cast(pl.Float64) / (
        2.0 * pl.col("_blen").cast(pl.Float64) + 2.0
    )
    return work.with_columns(key.alias("_key")).drop(
        "_row", "_d", "_before", "_blen", "_rsp_first", "_first", "_rank"
    )


def pair(
    requests: pl.DataFrame,
    responses: pl.DataFrame,
    control: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pair ``responses`` with ``requests``: returns ``(io, pairing)`` in their schemas.

    ``requests`` and ``responses`` are in REQUESTS_SCHEMA / RESPONSES_SCHEMA
    with sessions assigned; ``control`` (CONTROL_SCHEMA) explains requests
    never answered (``io.outcome``). ``io`` has one row per request, in
    time order; ``pairing`` one row per anomaly (see docs/streams.md).
    """
    control = schema.empty("control") if control is None else control
    group = [*RING, "session", "id"]
    ring_session = [*RING, "session"]
    frame = _protocol_order(_merged(requests, responses))
    is_req = pl.col("kind") == REQ
    is_rsp = pl.col("kind") == RSP
    nxt = {
        c: pl.col(c).shift(-1).over(group, order_by="_key").alias(f"next_{c}")
        for c in ("kind", "ns", "idx", "status", "eff_op")
    }
    prv = {
        c: pl.col(c).shift(1).over(group, order_by="_key").alias(f"prev_{c}")
        for c in ("kind", "ns", "idx", "eff_op", "seen")
    }
    frame = frame.with_columns(
        *nxt.values(),
        *prv.values(),
        (
            is_req.cast(pl.Int64).cum_sum().over(group, order_by="_key") - is_req.cast(pl.Int64)
        ).alias("_reqs_before"),
    )
    # For a duplicate, the request it duplicates is the last request of the group.
    last_req_ns = pl.when(is_req).then(pl.col("ns")).forward_fill().over(group, order_by="_key")
    last_req_idx = pl.when(is_req).then(pl.col("idx")).forward_fill().over(group, order_by="_key")
    frame = frame.with_columns(
        last_req_ns.alias("_last_req_ns"),
        last_req_idx.alias("_last_req_idx"),
    )
    answered = is_req & (pl.col("next_kind") == RSP)
    matched_rsp = is_rsp & (pl.col("prev_kind") == REQ)
    # Completion order: rank of the answering response among the session's
    # matched responses; issue order: rank among the session's answered requests.
    frame = frame.with_columns(
        pl.when(answered)
        .then(answered.cast(pl.Int64).cum_sum().over(ring_session) - 1)
        .alias("_issue_rank"),
        pl.when(matched_rsp)
        .then(matched_rsp.cast(pl.Int64).cum_sum().over(ring_session) - 1)
        .alias("_done_rank"),
    )
    frame = frame.with_columns(
        pl.col("_done_rank").shift(-1).over(group, order_by="_key").alias("_next_done_rank"),
    )

    reqs = frame.filter(is_req)
    pending_mask = reqs["next_kind"].is_null()
    outcome = pl.Series("outcome", ["completed"] * reqs.height, dtype=pl.String)
    outcome = outcome.scatter((reqs["next_kind"] == REQ).fill_null(False).arg_true(), "id_reused")
    pend_idx = pending_mask.arg_true()
    if len(pend_idx):
        reasons = sessions.unanswered_outcome(
            reqs.filter(pending_mask), control, _starts_for(reqs, control)
        )
        outcome = outcome.scatter(pend_idx, reasons)
    done = pl.col("next_kind") == RSP
    io = reqs.with_columns(outcome.alias("outcome")).select(
        *RING,
        "session",
        "id",
        pl.col("eff_op").alias("operation"),
        pl.col("idx").alias("req_idx"),
        pl.when(done).then(pl.col("next_idx")).alias("rsp_idx"),
        pl.col("ns").alias("req_ns"),
        pl.when(done).then(pl.col("next_ns")).alias("rsp_ns"),
        pl.when(done).then(pl.col("next_ns") - pl.col("ns")).alias("latency_ns"),
        pl.when(done).then(pl.col("next_status")).alias("status"),
        "sector_number",
        "nr_sectors",
        "seen",
        pl.when(done).then(pl.col("_next_done_rank") - pl.col("_issue_rank")).alias("reorder"),
        "outcome",
    )
    io = schema.conform(io, "io")

    rsps = frame.filter(is_rsp)
    orphan = pl.col("prev_kind").is_null() | (
        (pl.col("prev_kind") == RSP) & (pl.col("_reqs_before") == 0)
    )
    duplicate = (pl.col("prev_kind") == RSP) & (pl.col("_reqs_before") > 0)
    mismatch = (
        (pl.col("prev_kind") == REQ)
        & pl.col("prev_eff_op").is_not_null()
        & (pl.col("prev_seen") == "full")
        & (pl.col("eff_op") != pl.col("prev_eff_op"))
    )
    rsp_rows = rsps.with_columns(
        pl.when(orphan)
        .then(pl.lit("orphan_response"))
        .when(duplicate)
        .then(pl.lit("duplicate_response"))
        .when(mismatch)
        .then(pl.lit("op_mismatch"))
        .alias("kind_s")
    ).filter(pl.col("kind_s").is_not_null())
    rsp_facts = rsp_rows.select(
        *RING,
        "session",
        "ns",
        "idx",
        "id",
        pl.col("kind_s").alias("kind"),
        "operation",
        pl.when(pl.col("kind_s") == "op_mismatch")
        .then(pl.col("prev_eff_op"))
        .alias("expected_operation"),
        "status",
        pl.when(pl.col("kind_s") == "orphan_response")
        .then(None)
        .otherwise(pl.col("_last_req_ns"))
        .alias("req_ns"),
        pl.when(pl.col("kind_s") == "orphan_response")
        .then(None)
        .otherwise(pl.col("_last_req_idx"))
        .alias("req_idx"),
        pl.when(pl.col("kind_s") == "duplicate_response").then(pl.col("prev_ns")).alias("prev_ns"),
        "source",
    )
    reused = reqs.filter(pl.col("next_kind") == REQ).select(
        *RING,
        "session",
        "ns",
        "idx",
        "id",
        pl.lit("id_reused").alias("kind"),
        "operation",
        pl.lit(None, pl.UInt8).alias("expected_operation"),
        pl.lit(None, pl.Int16).alias("status"),
        pl.col("ns").alias("req_ns"),
        pl.col("idx").alias("req_idx"),
        pl.col("next_ns").alias("prev_ns"),
        "source",
    )
    facts = pl.concat(
        [schema.conform(rsp_facts, "pairing"), schema.conform(reused, "pairing")]
    ).sort("ns", maintain_order=True)
    return io, facts


def _starts_for(reqs: pl.DataFrame, control: pl.DataFrame) -> pl.DataFrame:
    return sessions.session_starts(control, sessions.ring_keys(reqs))


__all__ = ["effective_op", "pair"]
