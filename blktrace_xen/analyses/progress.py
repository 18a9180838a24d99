"""Progress rules: stalls, full rings and notification indices that can never fire."""

from __future__ import annotations

import polars as pl

from blktrace_xen.analyses.emit import (
    HALF,
    RING,
    emit,
    episodes,
    ms,
    ring_key,
    ring_label,
    u32_ahead,
)
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.analyses.timeline import paired, responses
from blktrace_xen.streams import Streams


def trace_end_ns(streams: Streams) -> int | None:
    """The last time any table observed."""
    frames = (streams.requests, streams.responses, streams.snapshots, streams.control)
    ends = pl.concat([f.select(pl.col("ns").max()) for f in frames])["ns"].max()
    return None if ends is None else int(ends)  # type: ignore[arg-type]


@rule(
    "stall",
    family="progress",
    severity="medium",
    title="requests pending with no backend progress past a threshold",
    source="Stodden 2011 'lost notifications during IRQ handler migration' (xen-devel); "
    "CVE-2021-26930/26931 (backend stops answering after a grant-map error)",
    example="d1/51712/q0: request id 6 waited 7.500 ms with no backend progress (no response on "
    "the ring) from 2.000 ms until 9.500 ms",
)
def stall(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Pending requests and no response on the ring for longer than `stall_ns` (default 5 s).

    ## What it means
    The backend produced nothing while it owed at least one response: a lost
    event-channel notification, a wedged backend thread or a dead storage path.
    The guest sees a hung disk.

    ## The real bug
    Lost notifications during IRQ migration (Daniel Stodden, xen-devel 2011);
    CVE-2021-26930 / -26931 (blkback error handling: a failed grant map left
    requests unanswered, or BUG()ed the backend).

    ## Reading the evidence
    For a stall that ended, `id` is the request whose response ended it,
    `waited_ns` the time from the later of its issue and the ring's previous
    response. For one still open at the end of the trace, `pending` counts the
    unanswered requests and `waited_ns` runs to the trace end (`open: true`).

    ## What the evidence cannot see
    Requests issued before the trace began are not counted; a response lost
    from the trace (lost records) looks like a stall: confidence is lowered.

    ## Known false positives
    A storage path that is legitimately slower than `stall_ns` (raise `--stall-
    ms`); a trace whose responses were lost.
    """
    io = paired(streams)[0].lazy()
    rsp = responses(streams)
    # A stall ended by a response lasted at most that request's latency, so
    # only requests slower than the threshold are candidates (none when
    # healthy); the ring's previous response is looked up for those only.
    slow = (
        io.filter(pl.col("latency_ns") > options.stall_ns)
        .with_columns(ring_key().alias("_rk"))
        .collect()
    )
    rk = ring_key()
    before = (
        rsp.lazy()
        .filter(rk.is_in(slow["_rk"].unique().implode()))
        .select(
            *RING,
            "session",
            "id",
            "ns",
            "idx",
            pl.col("ns").shift(1).over(rk).alias("last_rsp_ns"),
        )
    )
    ended = (
        slow.lazy()
        .join(
            before,
            left_on=[*RING, "session", "id", "rsp_ns", "rsp_idx"],
            right_on=[*RING, "session", "id", "ns", "idx"],
            how="inner",
            nulls_equal=True,
        )
        .with_columns(pl.max_horizontal("req_ns", "last_rsp_ns").alias("since"))
        .with_columns((pl.col("rsp_ns") - pl.col("since")).alias("waited_ns"))
        .filter(pl.col("waited_ns") > options.stall_ns)
        .select(
            *RING,
            "session",
            "id",
            pl.col("rsp_idx").alias("idx"),
            pl.col("since").alias("ns"),
            pl.col("rsp_ns").alias("ns_end"),
            "waited_ns",
            pl.lit(1, pl.UInt32).alias("pending"),
            pl.lit(False).alias("open"),
        )
    )
    end = trace_end_ns(streams)
    parts = [ended]
    if end is not None:
        pending = (
            io.filter(pl.col("rsp_ns").is_null())
            .group_by(RING)
            .agg(
                pl.len().cast(pl.UInt32).alias("pending"),
                pl.col("req_ns").min().alias("oldest"),
                pl.col("session").last(),
            )
            .collect()
        )
        last_rsp = (
            rsp.lazy()
            .join(pending.lazy(), on=RING, how="semi", nulls_equal=True)
            .group_by(RING)
            .agg(pl.col("ns").max().alias("last_rsp"))
        )
        still = (
            pending.lazy()
            .join(last_rsp, on=RING, how="left", nulls_equal=True)
            .with_columns(pl.max_horizontal("oldest", "last_rsp").alias("ns"))
            .with_columns(
                (pl.lit(end) - pl.col("ns")).alias("waited_ns"), pl.lit(end).alias("ns_end")
            )
            .filter(pl.col("waited_ns") > options.stall_ns)
            .select(
                *RING,
                "session",
                pl.lit(None, pl.UInt64).alias("id"),
                pl.lit(None, pl.UInt32).alias("idx"),
                "ns",
                "ns_end",
                "waited_ns",
                "pending",
                pl.lit(True).alias("open"),
            )
        )
        parts.append(still)
    rows = pl.concat(parts, how="vertical_relaxed")
    return emit(
        rows,
        "stall",
        message=pl.format(
            "{}: {} request(s){} waited {} ms with no backend progress (no "
            "response on the ring) from {} ms until {} ms{}",
            ring_label(),
            "pending",
            pl.when(pl.col("id").is_not_null())
            .then(pl.format(" incl. id {}", "id"))
            .otherwise(pl.lit("")),
            ms("waited_ns"),
            ms("ns"),
            ms("ns_end"),
            pl.when(pl.col("open"))
            .then(pl.lit(" (still pending at trace end)"))
            .otherwise(pl.lit("")),
        ),
        evidence=["id", "pending", "waited_ns", "open"],
    )


def _snaps(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    return (
        streams.snapshots.lazy()
        .sort("ns", maintain_order=True)
        .with_columns(pl.col("nr_ents").cast(pl.Int64).fill_null(options.default_nr_ents))
    )


@rule(
    "ring-full",
    family="progress",
    severity="info",
    title="episodes where every ring slot held an unanswered request",
    source="ring.h RING_FULL / RING_REQUEST_CONS_OVERFLOW; 'xen-blkback: Don't let in-flight "
    "requests defer pending ones' context",
    example="d1/51712/q0: ring full (32 of 32 slots outstanding) from 4.000 to 9.000 ms, "
    "11 snapshots",
)
def ring_full(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Snapshots in which `req_prod - rsp_prod` equals the ring size, as episodes.

    ## What it means
    The frontend cannot publish another request until the backend answers one:
    the guest's queue depth is capped by the ring. Normal under saturation,
    which is why this is `info`; long episodes next to a `stall` point at the
    backend, and frequent ones suggest a larger `ring-page-order`.

    ## The real bug
    None by itself: context for stalls and for multi-page ring negotiation
    (bug class 9).

    ## Reading the evidence
    `snapshots` in the episode, `ns`..`ns_end` its first and last full
    snapshot; episodes shorter than `ring_full_min_ns` are dropped.

    ## What the evidence cannot see
    Only snapshots show it; between polls a ring may fill and drain unseen.

    ## Known false positives
    Not a violation itself (info).
    """
    rows = _snaps(streams, options).with_columns(
        (u32_ahead("req_prod", "rsp_prod") == pl.col("nr_ents")).alias("full")
    )
    found = (
        episodes(rows, "full", RING)
        .group_by([*RING, "run"])
        .agg(
            pl.col("ns").first(),
            pl.col("ns").last().alias("ns_end"),
            pl.len().alias("snapshots"),
            pl.col("nr_ents").first(),
        )
        .filter((pl.col("ns_end") - pl.col("ns")) >= options.ring_full_min_ns)
    )
    return emit(
        found,
        "ring-full",
        message=pl.format(
            "{}: ring full ({} of {} slots outstanding) from {} to {} ms, {} snapshots",
            ring_label(),
            "nr_ents",
            "nr_ents",
            ms("ns"),
            ms("ns_end"),
            "snapshots",
        ),
        evidence=["nr_ents", "snapshots"],
    )


@rule(
    "notification-index-implausible",
    family="progress",
    severity="medium",
    title="req_event / rsp_event beyond any index the producer can reach",
    source="ring.h RING_PUSH_*_AND_CHECK_NOTIFY / RING_FINAL_CHECK_FOR_*; XSA-391 "
    "CVE-2021-28711 (event-channel hardening); Stodden 2011 lost notifications",
    example="d1/51712/q0: req_event 5000 is 3968 ahead of req_prod 1032 on a 32-entry ring from "
    "1.000 ms: the producer will never notify, 3 snapshots",
)
def notification_index_implausible(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """An event index more than a ring's worth ahead of its producer.

    ## What it means
    A producer notifies only when its push moves the producer index past the
    consumer's event index (`req_event` for requests, `rsp_event` for
    responses). The consumer sets it to `cons + 1` before sleeping, so it can
    be at most one ahead of the producer. An event index further ahead than the
    ring size can never be crossed: the consumer sleeps for good (a stuck ring),
    or the field is garbage.

    ## The real bug
    The notification hold-off protocol of ring.h; lost notifications (Stodden
    2011) and the event-channel hardening of XSA-391.

    ## Reading the evidence
    `index` names `req_event` or `rsp_event`; `event`, `prod` and `ahead` the
    values at the episode's first snapshot.

    ## What the evidence cannot see
    Event-channel sends are not in the streams, so spurious or missing
    notifications with plausible indices are not detected.

    ## Known false positives
    A snapshot copied while a ring is re-initialised can mix old and new header
    words (one-snapshot episodes).
    """
    snaps = _snaps(streams, options)
    parts = []
    for index, prod in (("req_event", "req_prod"), ("rsp_event", "rsp_prod")):
        ahead = u32_ahead(index, pl.col(prod).cast(pl.Int64) + 1)
        rows = snaps.with_columns(
            ahead.alias("ahead"),
            pl.col(index).cast(pl.Int64).alias("event"),
            pl.col(prod).cast(pl.Int64).alias("prod"),
            pl.lit(index).alias("index"),
        ).with_columns(
            ((pl.col("ahead") > pl.col("nr_ents")) & (pl.col("ahead") < HALF)).alias("bad")
        )
        parts.append(
            episodes(rows, "bad", RING)
            .group_by([*RING, "run"])
            .agg(
                pl.col("ns").first(),
                pl.col("ns").last().alias("ns_end"),
                pl.len().alias("snapshots"),
                pl.col("event", "prod", "ahead", "nr_ents", "index").first(),
            )
        )
    return emit(
        pl.concat(parts),
        "notification-index-implausible",
        message=pl.format(
            "{}: {} {} is {} ahead of {} on a {}-entry ring from {} ms: "
            "the producer will never notify, {} snapshots",
            ring_label(),
            "index",
            "event",
            "ahead",
            pl.format("{} {}", pl.col("index").str.replace("_event", "_prod"), "prod"),
            "nr_ents",
            ms("ns"),
            "snapshots",
        ),
        evidence=["index", "event", "prod", "ahead", "nr_ents", "snapshots"],
    )
