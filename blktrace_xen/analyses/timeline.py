"""Requests and responses merged into one time-ordered frame per trace.

Several rule families need the same pass: pair each response with the event
before it for the same (ring, id), and follow each ring's progress. It is
computed once per :class:`Streams` and shared (the cache holds the last value
only, keyed by identity, so memory stays bounded).

Window expressions over the time-ordered frame, never a multi-key sort
(performance-notes §2.6: sorting 10 M rows by (ring, id) costs 4x the window).
"""

from __future__ import annotations

import polars as pl

from blktrace_xen import schema
from blktrace_xen.streams import Streams

RING = list(schema.RING_KEY)
REQ, RSP = 0, 1
OP_INDIRECT = 6

_cache: list[tuple[Streams, pl.DataFrame]] = []


def effective_op() -> pl.Expr:
    """The op a response must echo: ``indirect_op`` for an indirect request."""
    return (
        pl.when(pl.col("operation") == OP_INDIRECT)
        .then(pl.col("indirect_op"))
        .otherwise(pl.col("operation"))
    )


def build(streams: Streams) -> pl.LazyFrame:
    """The merged frame: one row per request (kind 0) and response (kind 1).

    Columns: ring key, session, ns, kind, id, op, idx, status, full (the
    request was decoded, not only inferred from its response), and per
    (ring, id): ``prev_kind`` / ``prev_op`` / ``prev_ns`` / ``prev_full`` of
    the previous event, ``before_first_req`` (a response preceding every request of its
    id), ``excess`` (responses minus requests so far, less the responses
    before the first request) and ``prev_max_excess`` (its running
    maximum before this row); per ring: ``inflight`` (requests minus responses so
    far, relative: the trace may start with requests already in flight) and
    ``last_rsp_ns`` (the ring's previous response).
    """
    req = streams.requests.lazy().select(
        *RING,
        "session",
        "ns",
        pl.lit(REQ, pl.Int8).alias("kind"),
        "id",
        effective_op().alias("op"),
        "idx",
        pl.lit(None, pl.Int16).alias("status"),
        (pl.col("seen") == "full").alias("full"),
    )
    rsp = streams.responses.lazy().select(
        *RING,
        "session",
        "ns",
        pl.lit(RSP, pl.Int8).alias("kind"),
        "id",
        pl.col("operation").alias("op"),
        "idx",
        "status",
        pl.lit(True).alias("full"),
    )
    # Stable sort on one key: at equal ns a request stays before a response.
    merged = pl.concat([req, rsp]).sort("ns", maintain_order=True, nulls_last=True)
    # One packed u64 ring key (domid:16 | vdev:32 | queue:16) hashes faster
    # than three columns in every window below.
    rk = (
        pl.col("domid").cast(pl.UInt64) * (1 << 48)
        + pl.col("vdev").cast(pl.UInt64) * (1 << 16)
        + pl.col("queue").cast(pl.UInt64)
    )
    merged = merged.with_columns(rk.alias("ring_key"))
    per_id = ["ring_key", "id"]
    is_req = pl.col("kind") == REQ
    is_rsp = pl.col("kind") == RSP
    # Responses minus requests so far for this id. Responses before the id's
    # first request answer requests issued before the trace began (a first
    # snapshot shows old responses, several per id), so they are discounted.
    # Counts rather than neighbours: a polled capture sees a request, its
    # response, the id's next request and its response in one snapshot, all
    # at one ns, requests first. Everything is one context so that polars
    # computes the (ring, id) groups once.
    signed = 2 * pl.col("kind").cast(pl.Int64) - 1
    return merged.with_columns(
        (is_rsp & (is_req.cum_sum() == 0)).over(per_id).alias("before_first_req"),
        (signed.cum_sum() - (is_rsp & (is_req.cum_sum() == 0)).sum()).over(per_id).alias("excess"),
        (signed.cum_sum().cum_max().shift(1) - (is_rsp & (is_req.cum_sum() == 0)).sum())
        .over(per_id)
        .fill_null(0)
        .alias("prev_max_excess"),
        pl.col("kind").shift(1).over(per_id).alias("prev_kind"),
        pl.col("op").shift(1).over(per_id).alias("prev_op"),
        pl.col("ns").shift(1).over(per_id).alias("prev_ns"),
        pl.col("full").shift(1).over(per_id).alias("prev_full"),
        (1 - 2 * pl.col("kind").cast(pl.Int64)).cum_sum().over("ring_key").alias("inflight"),
        pl.when(is_rsp)
        .then(pl.col("ns"))
        .shift(1)
        .forward_fill()
        .over("ring_key")
        .alias("last_rsp_ns"),
    )


def timeline(streams: Streams) -> pl.DataFrame:
    """:func:`build`, collected once per ``streams``."""
    for cached, frame in _cache:
        if cached is streams:
            return frame
    frame = build(streams).collect()
    _cache[:] = [(streams, frame)]
    return frame


def clear() -> None:
    """Drop the cached timeline (run_rules calls this when done)."""
    _cache.clear()
