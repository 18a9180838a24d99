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
from blktrace_xen.analyses.emit import ring_key
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
    # One sort key: at equal ns a request (kind 0) comes before a response;
    # ns * 2 stays within i64 for any ns before the year 2116. When both
    # inputs are already in time order (the builders emit them so) a linear
    # merge replaces the sort.
    order = (pl.col("ns") * 2 + pl.col("kind").cast(pl.Int64)).alias("_order")
    req, rsp = req.with_columns(order), rsp.with_columns(order)
    if streams.requests["ns"].is_sorted() and streams.responses["ns"].is_sorted():
        merged = req.merge_sorted(rsp, "_order")
    else:
        merged = pl.concat([req, rsp]).sort("_order", maintain_order=True, nulls_last=True)
    # One packed u64 ring key hashes faster than three columns in every window below.
    merged = merged.drop("_order").with_columns(ring_key().alias("ring_key"))
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
    prev = pl.struct(
        pl.col("kind").alias("prev_kind"),
        pl.col("op").alias("prev_op"),
        pl.col("ns").alias("prev_ns"),
        pl.col("full").alias("prev_full"),
    )
    merged = merged.with_columns(
        # One window shifts the four columns together.
        prev.shift(1).over(per_id).alias("_prev"),
        signed.cum_sum().over(per_id).alias("_sc"),
        (is_rsp & (is_req.cum_sum() == 0)).over(per_id).alias("before_first_req"),
        (1 - 2 * pl.col("kind").cast(pl.Int64)).cum_sum().over("ring_key").alias("inflight"),
        pl.when(is_rsp)
        .then(pl.col("ns"))
        .shift(1)
        .forward_fill()
        .over("ring_key")
        .alias("last_rsp_ns"),
    )
    offset = pl.col("before_first_req").cast(pl.Int64).sum()
    return (
        merged.with_columns(
            (pl.col("_sc") - offset).over(per_id).alias("excess"),
            (pl.col("_sc").cum_max().shift(1) - offset)
            .over(per_id)
            .fill_null(0)
            .alias("prev_max_excess"),
        )
        .unnest("_prev")
        .drop("_sc")
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
