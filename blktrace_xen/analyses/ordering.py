"""Completion-order rules: reordering is legal in blkif, not for overlapping writes."""

from __future__ import annotations

import numpy as np
import polars as pl

from blktrace_xen.analyses import rings
from blktrace_xen.analyses.batches import in_batch, ring_batches
from blktrace_xen.analyses.emit import RING, emit, ms, ring_key, ring_label
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.analyses.repeats import maybe_repeated
from blktrace_xen.analyses.rings import Grouped, dense_codes, nearest_rank, ring_frame
from blktrace_xen.analyses.timeline import paired
from blktrace_xen.streams import Streams

_SESSION = [*RING, "session"]
OP_WRITE = 1


def _io_in_issue_order(streams: Streams) -> pl.DataFrame:
    io = paired(streams)[0]
    # The stream builder emits io in request order; sort only if it did not.
    if not io["req_ns"].is_sorted():
        io = io.sort("req_ns", maintain_order=True, nulls_last=True)
    return io


@rule(
    "out-of-order-completion",
    family="ordering",
    severity="info",
    title="completion-order statistics of a ring session (reorder distance, head-of-line wait)",
    source="blkif.h: responses carry the request id, so completion order is free "
    "(docs/bug-classes.md, replay-model context)",
    example="d1/51712/q0 session 0: 12 of 400 completions out of issue order (max distance 3), "
    "head-of-line wait up to 1.250 ms",
)
def out_of_order_completion(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Out-of-order completion as a metric, one finding per ring session that has any.

    ## What it means
    blkif lets the backend complete requests in any order (the response names
    the request's `id`), so this is not a violation. The statistics tell how a
    backend schedules: `reorder` (completion rank minus issue rank, from `io`)
    and the head-of-line wait (how long a request's completion came after that
    of a request issued later than it).

    ## The real bug
    None by itself; it is the context for `overlapping-write-reorder` and for
    the replay model, which must accept any completion order.

    ## Reading the evidence
    `completed`, `reordered` (rows with `reorder != 0`), `max_reorder` (largest
    absolute distance), `max_hol_wait_ns`, `p99_hol_wait_ns`.

    ## Known false positives
    Not a violation itself (info).
    """
    io = _io_in_issue_order(streams)
    rows = _sessions_sorted(io)
    if rows is None:
        rows = _sessions(io)
    return emit(
        rows,
        "out-of-order-completion",
        message=pl.format(
            "{} session {}: {} of {} completions out of issue order (max distance {}), "
            "head-of-line wait up to {} ms",
            ring_label(),
            pl.col("session").cast(pl.String).fill_null("?"),
            "reordered",
            "completed",
            "max_reorder",
            ms("max_hol_wait_ns"),
        ),
        evidence=["completed", "reordered", "max_reorder", "max_hol_wait_ns", "p99_hol_wait_ns"],
    )


# Earliest completion among requests issued after this one (suffix minimum), and
# how long each completion came after it (0 for the last request).
_LATER_MIN = pl.col("rsp_ns").reverse().cum_min().reverse().shift(-1)
_HOL = (pl.col("rsp_ns") - _LATER_MIN).clip(lower_bound=0).fill_null(0)


def _sums(io: pl.DataFrame) -> pl.LazyFrame:
    """The completed rows' plain per-session aggregations (polars' fast grouped path)."""
    return (
        io.lazy()
        .filter(pl.col("rsp_ns").is_not_null())
        .group_by(_SESSION)
        .agg(
            pl.len().alias("completed"),
            (pl.col("reorder").fill_null(0) != 0).sum().alias("reordered"),
            pl.col("reorder").abs().max().alias("max_reorder"),
            pl.col("req_ns").min().alias("ns"),
            pl.col("rsp_ns").max().alias("ns_end"),
        )
        .filter(pl.col("reordered") > 0)
    )


def _sessions(io: pl.DataFrame) -> pl.LazyFrame:
    """The ring sessions with a completion out of order, and their head-of-line waits."""
    # The suffix minimum is computed inside the aggregation (a group keeps its rows'
    # issue order): a window would scatter a 10 M-row column back only to be grouped again.
    cols = [*_SESSION, "req_ns", "rsp_ns", "reorder"]

    def sessions(rows: pl.LazyFrame) -> pl.DataFrame:
        return (
            rows.filter(pl.col("rsp_ns").is_not_null())
            .select(cols)
            .group_by(_SESSION)
            .agg(
                pl.len().alias("completed"),
                (pl.col("reorder").fill_null(0) != 0).sum().alias("reordered"),
                pl.col("reorder").abs().max().alias("max_reorder"),
                _HOL.max().alias("max_hol_wait_ns"),
                _HOL.quantile(0.99, "nearest").alias("p99_hol_wait_ns"),
                pl.col("req_ns").min().alias("ns"),
                pl.col("rsp_ns").max().alias("ns_end"),
            )
            .filter(pl.col("reordered") > 0)
            .collect()
        )

    # Groups are ring sessions: a few rings at a time give the same rows, and the
    # aggregation never holds every completion's columns at once.
    batches = ring_batches([io])
    if batches is None:
        return sessions(io.lazy()).lazy()
    return pl.concat([sessions(io.lazy().filter(in_batch(b))) for b in batches]).lazy()


def _sessions_sorted(io: pl.DataFrame) -> pl.LazyFrame | None:
    """:func:`_sessions` with the waits from ring-session-grouped NumPy arrays, or None.

    The plain aggregations stay in polars, without the waits that held them
    on its slow path; a suffix minimum per session (in issue order) gives
    the waits. None (the caller keeps the polars formulation) for a null
    ring key or more sessions than :data:`rings.LOOP_GROUPS`.
    """
    if not rings.ENABLED:
        return None
    sums = _sums(io).collect()
    if sums.is_empty():
        return sums.lazy().with_columns(
            pl.lit(None, pl.Int64).alias("max_hol_wait_ns"),
            pl.lit(None, pl.Float64).alias("p99_hol_wait_ns"),
        )
    done = (
        io.lazy()
        .filter(pl.col("rsp_ns").is_not_null())
        .select(ring_key().alias("rk"), "session", "rsp_ns")
        .collect()
    )
    if done["rk"].null_count():
        return None
    (ring,), uniq = dense_codes([done["rk"].to_numpy()])
    session = done["session"].cast(pl.Int64).fill_null(1 << 32).to_numpy()
    (code,), pairs = dense_codes([(ring.astype(np.int64) << 33) | session])
    del ring, session
    if len(pairs) > rings.LOOP_GROUPS:
        return None
    g = Grouped.of(code, len(pairs))
    rsp_ns = done["rsp_ns"].to_numpy()[g.order]
    del done, code
    worst = np.zeros(len(pairs), dtype=np.int64)
    p99 = np.zeros(len(pairs), dtype=np.int64)
    for k in range(len(pairs)):
        t = rsp_ns[g.starts[k] : g.starts[k + 1]]
        wait = np.zeros(len(t), dtype=np.int64)
        # Each completion minus the earliest completion of a request issued later.
        np.subtract(t[:-1], np.minimum.accumulate(t[::-1])[::-1][1:], out=wait[:-1])
        np.maximum(wait, 0, out=wait)
        worst[k] = wait.max()
        rank = int(nearest_rank(np.array([len(t)]), 0.99)[0])
        p99[k] = np.partition(wait, rank)[rank]
    session_of = pairs & ((1 << 33) - 1)
    waits = ring_frame(uniq[pairs >> 33]).with_columns(
        pl.Series("session", session_of, dtype=pl.Int64).replace(1 << 32, None).cast(pl.UInt32),
        pl.Series("max_hol_wait_ns", worst, dtype=pl.Int64),
        pl.Series("p99_hol_wait_ns", p99, dtype=pl.Float64),
    )
    return sums.lazy().join(waits.lazy(), on=_SESSION, how="left", nulls_equal=True)


def _repeated_writes(io: pl.DataFrame) -> pl.DataFrame:
    """The completed writes of ``io`` that may share ring and start sector with another, in order.

    Only a (ring, sector) written more than once can pair up. A superset of
    those rows comes from :func:`maybe_repeated` (sorted 64-bit hashes): a row
    dropped has a key no other write has, so it was no row's neighbour of the
    same key below, and nothing else changes.
    """
    writes = (
        io.lazy()
        .with_row_index("_i")
        .filter(
            (pl.col("operation") == OP_WRITE)
            & pl.col("sector_number").is_not_null()
            & pl.col("rsp_ns").is_not_null()
        )
        .select("_i", ring_key().fill_null(0).alias("_rk"), "sector_number")
        .collect()
    )
    keep = maybe_repeated(writes["_rk"].to_numpy(), writes["sector_number"].to_numpy())
    return io[writes["_i"].filter(pl.Series(keep))]


@rule(
    "overlapping-write-reorder",
    family="ordering",
    severity="medium",
    title="two in-flight writes to the same sectors completed in reverse order",
    source="docs/bug-classes.md (out-of-order completion is a hazard for overlapping writes); "
    "seed 002 test method (fio randwrite + crc32 verify)",
    example="d1/51712/q0: write id 3 to sector 2048 (issued 1.000 ms) completed at 6.000 ms, "
    "after the later write id 5 to the same sector completed at 4.000 ms",
)
def overlapping_write_reorder(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Two writes to the same start sector, in flight together, completed in reverse issue order.

    ## What it means
    The block layer may complete in any order, but when two writes to the same
    sectors are in flight at once the final content of the disk depends on
    which the backend performed last. A completion order opposite to the issue
    order is the visible sign that the older data may have won: what fio's
    verify (seed 002's test) catches as corruption.

    ## The real bug
    The data-corruption class behind seeds 002 and 003 (requests re-issued or
    replayed in another order after a rebind or resume).

    ## Reading the evidence
    `id`/`req_ns`/`rsp_ns` are the older write; `later_id`, `later_req_ns`,
    `later_rsp_ns` the newer one; `sector_number` their common start.

    ## What the evidence cannot see
    Only writes with the same start sector are compared (partial overlaps are
    not), and requests seen only through their response have no sector.

    ## Known false positives
    A guest filesystem that deliberately overwrites a block it does not care
    about (e.g. discarded journal blocks).
    """
    io = _repeated_writes(_io_in_issue_order(streams)).lazy()
    # Two stable single-key sorts (ring, then sector) order rows by sector,
    # ring and issue time; neighbours are then compared directly (a window
    # over millions of one-row sector groups is far slower).
    nxt = [*_SESSION, "sector_number"]
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(-1)) for c in nxt])
    rows = (
        io.with_columns(ring_key().alias("_rk"))
        .sort("_rk", maintain_order=True)
        .sort("sector_number", maintain_order=True)
        .with_columns(
            same.alias("_same"),
            pl.col("id").shift(-1).alias("later_id"),
            pl.col("req_ns").shift(-1).alias("later_req_ns"),
            pl.col("rsp_ns").shift(-1).alias("later_rsp_ns"),
        )
        .filter(
            pl.col("_same")
            & (pl.col("later_req_ns") < pl.col("rsp_ns"))
            & (pl.col("later_rsp_ns") < pl.col("rsp_ns"))
        )
        .with_columns(
            pl.col("req_ns").alias("ns"),
            pl.col("rsp_ns").alias("ns_end"),
            pl.col("req_idx").alias("idx"),
        )
    )
    return emit(
        rows,
        "overlapping-write-reorder",
        message=pl.format(
            "{}: write id {} to sector {} (issued {} ms) completed at {} ms, after the later write "
            "id {} to the same sector completed at {} ms",
            ring_label(),
            "id",
            "sector_number",
            ms("req_ns"),
            ms("rsp_ns"),
            "later_id",
            ms("later_rsp_ns"),
        ),
        evidence=[
            "id",
            "sector_number",
            "nr_sectors",
            "req_ns",
            "rsp_ns",
            "later_id",
            "later_req_ns",
            "later_rsp_ns",
        ],
    )
