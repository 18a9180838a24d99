"""Blind spots: lost trace records and unseen ring entries, and what they do to other findings."""

from __future__ import annotations

import polars as pl

from blktrace_xen import schema
from blktrace_xen.analyses.emit import RING, emit, ms, ring_label
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.streams import Streams

BLIND_SPOT_RULES = ("lost-records", "unseen-ring-entries")


@rule(
    "lost-records",
    family="confidence",
    severity="info",
    title="trace records lost (TRC_LOST_RECORDS): findings in the window are less certain",
    source="xen/common/trace.c TRC_LOST_RECORDS (the per-CPU trace buffer was full)",
    example="cpu 1: 5120 trace records lost between 2.000 and 2.400 ms (domain 0 running): "
    "events in this window may be missing",
)
def lost_records(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Each `TRC_LOST_RECORDS` window; other findings overlapping it get lower confidence.

    ## What it means
    A per-CPU trace buffer filled up and Xen dropped records from `first_ns` to
    `ns`. Any event in that window may be missing: a request that looks
    unanswered may have been answered, a response may look like a duplicate.
    Every other finding whose window overlaps a loss has its `confidence`
    multiplied by `lost_confidence` (0.5) and says so in its message.

    ## The real bug
    None: a limit of the observation. Enlarge the buffers (`xentrace -S`) or
    narrow the event mask.

    ## Reading the evidence
    `count` records lost on `cpu`, the `domid`/`vcpu` running when it began.

    ## Known false positives
    Not a violation itself; it only qualifies other findings.
    """
    rows = streams.lost.lazy().with_columns(
        pl.col("first_ns").fill_null(pl.col("ns")).alias("ns"), pl.col("ns").alias("ns_end")
    )
    return emit(
        rows.with_columns(
            pl.lit(None, pl.UInt16).alias("domid"), pl.col("domid").alias("running_domid")
        ),
        "lost-records",
        message=pl.format(
            "cpu {}: {} trace records lost between {} and {} ms (domain {} running): events in "
            "this window may be missing",
            "cpu",
            "count",
            ms("ns"),
            ms("ns_end"),
            "running_domid",
        ),
        evidence=["cpu", "count", "running_domid", "vcpu"],
    )


@rule(
    "unseen-ring-entries",
    family="confidence",
    severity="info",
    title="ring entries overwritten before any snapshot saw them",
    source="the polling limit of ring captures (a producer advanced by more than the ring size "
    "between two snapshots)",
    example="d1/51712/q0: 96 request and 0 response entries overwritten unseen in 3 gaps between "
    "1.000 and 8.000 ms: poll faster to see them",
)
def unseen_ring_entries(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Entries a polled capture never saw, per ring; overlapping findings get lower confidence.

    ## What it means
    Between two snapshots a producer advanced by more than the ring size, so
    some entries were written and overwritten unseen (the `gaps` table). Their
    requests and responses are missing from the streams; findings on the same
    ring overlapping a gap have their `confidence` lowered and say so.

    ## The real bug
    None: a limit of the observation. Poll faster or capture with
    instrumentation events.

    ## Reading the evidence
    `req_unseen` / `rsp_unseen` entry counts, `gaps` how many windows.

    ## Known false positives
    Not a violation itself; it only qualifies other findings.
    """
    rows = (
        streams.gaps.lazy()
        .group_by(RING)
        .agg(
            pl.col("count").filter(pl.col("producer") == "req").sum().alias("req_unseen"),
            pl.col("count").filter(pl.col("producer") == "rsp").sum().alias("rsp_unseen"),
            pl.len().alias("gaps"),
            pl.col("prev_ns").min().alias("ns"),
            pl.col("ns").max().alias("ns_end"),
        )
    )
    return emit(
        rows,
        "unseen-ring-entries",
        message=pl.format(
            "{}: {} request and {} response entries overwritten unseen in {} gaps between {} and "
            "{} ms: poll faster to see them",
            ring_label(),
            "req_unseen",
            "rsp_unseen",
            "gaps",
            ms("ns"),
            ms("ns_end"),
        ),
        evidence=["req_unseen", "rsp_unseen", "gaps"],
    )


def adjust(findings: pl.DataFrame, streams: Streams, options: AnalysisOptions) -> pl.DataFrame:
    """Lower the confidence of findings whose window overlaps lost records or ring gaps.

    A finding overlapping one or more blind spots of a kind has its confidence
    multiplied by ``options.lost_confidence`` once for that kind, and its
    message says how much was not seen.
    """
    if findings.is_empty() or (streams.lost.is_empty() and streams.gaps.is_empty()):
        return findings
    f = findings.with_row_index("_row")
    target = f.filter(~pl.col("rule").is_in(BLIND_SPOT_RULES)).select(
        "_row", *RING, "ns", pl.col("ns_end").fill_null(pl.col("ns"))
    )
    lost = streams.lost.select(
        pl.col("first_ns").fill_null(pl.col("ns")).alias("l_first"),
        pl.col("ns").alias("l_last"),
        "count",
    )
    lost_hit = (
        target.join_where(
            lost, pl.col("ns") <= pl.col("l_last"), pl.col("l_first") <= pl.col("ns_end")
        )
        .group_by("_row")
        .agg(pl.col("count").sum().alias("lost_count"))
        if lost.height
        else pl.DataFrame(schema={"_row": pl.UInt32, "lost_count": pl.UInt32})
    )
    gaps = streams.gaps.select(
        *RING, pl.col("prev_ns").alias("g_first"), pl.col("ns").alias("g_last"), "count"
    )
    gap_hit = (
        target.join(gaps, on=RING, how="inner")
        .filter((pl.col("ns") <= pl.col("g_last")) & (pl.col("g_first") <= pl.col("ns_end")))
        .group_by("_row")
        .agg(pl.col("count").sum().alias("gap_count"))
    )
    factor = options.lost_confidence
    out = (
        f.join(lost_hit, on="_row", how="left")
        .join(gap_hit, on="_row", how="left")
        .sort("_row")
        .with_columns(
            (
                pl.col("confidence")
                * pl.when(pl.col("lost_count").is_not_null()).then(factor).otherwise(1.0)
                * pl.when(pl.col("gap_count").is_not_null()).then(factor).otherwise(1.0)
            ).alias("confidence"),
            pl.concat_str(
                [
                    pl.col("message"),
                    pl.when(pl.col("lost_count").is_not_null()).then(
                        pl.format(
                            " [confidence lowered: {} trace records lost in this window]",
                            "lost_count",
                        )
                    ),
                    pl.when(pl.col("gap_count").is_not_null()).then(
                        pl.format(
                            " [confidence lowered: {} ring entries "
                            "overwritten unseen in this window]",
                            "gap_count",
                        )
                    ),
                ],
                ignore_nulls=True,
            ).alias("message"),
        )
    )
    return out.select(list(schema.FINDINGS_SCHEMA))
