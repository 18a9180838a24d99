"""Request validation: what blkback checks before it maps a single grant."""

from __future__ import annotations

import polars as pl

from blktrace_xen.analyses.emit import emit, ms, ring_label
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.streams import Streams

MAX_SEGMENTS = 11  # BLKIF_MAX_SEGMENTS_PER_REQUEST
MAX_INDIRECT_SEGMENTS = 8 * 512  # BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST x segments per page
SECTORS_PER_SEGMENT = 8  # a segment lies in one 4 KiB frame: last_sect <= 7


def _problems() -> pl.Expr:
    op, nseg, nsec = pl.col("operation"), pl.col("nr_segments"), pl.col("nr_sectors")
    rw = op.is_in([0, 1])
    checks = [
        (op > 6, "unknown operation"),
        ((op == 6) & ~pl.col("indirect_op").is_in([0, 1]), "indirect_op is neither READ nor WRITE"),
        (rw & (nseg == 0), "read/write with no segments"),
        (op.is_in([0, 1, 2, 3]) & (nseg > MAX_SEGMENTS), f"more than {MAX_SEGMENTS} segments"),
        (
            (op == 6) & ((nseg == 0) | (nseg > MAX_INDIRECT_SEGMENTS)),
            "indirect segment count out of range",
        ),
        (
            (rw | (op == 6)) & (nseg > 0) & ((nsec < nseg) | (nsec > SECTORS_PER_SEGMENT * nseg)),
            "sector count impossible for its segments (each covers 1..8 sectors)",
        ),
        ((op == 5) & (nsec == 0), "discard of zero sectors"),
        (
            pl.col("sector_number").cast(pl.Float64) + nsec.cast(pl.Float64) > float(2**64),
            "sector range wraps past 2^64",
        ),
    ]
    return pl.concat_str(
        [pl.when(cond.fill_null(False)).then(pl.lit(text)) for cond, text in checks],
        separator="; ",
        ignore_nulls=True,
    )


@rule(
    "malformed-request",
    family="requests",
    severity="high",
    title="a request blkback must reject (segments, sectors, operation)",
    source="blkback dispatch_rw_block_io checks; XSA-155 / CVE-2015-8550 ('frontend could alter "
    "the first_sect and last_sect values after they have been validated'); CVE-2013-2140",
    example="d1/51712/q0: request id 4 at 2.000 ms (op 1, 12 segments, 96 sectors) is malformed: "
    "more than 11 segments",
)
def malformed_request(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A request whose operation, segment count or sector range is invalid.

    ## What it means
    blkback rejects such a request with `BLKIF_RSP_ERROR` (or halts on it); a
    frontend producing it is buggy or hostile, and a backend that *accepts* it
    (answers OKAY) trusts guest input it must not.

    ## The real bug
    blkback's checks in `dispatch_rw_block_io` (no segments except flush and
    barrier, more than 11 segments without indirect, segments outside one 4 KiB
    frame); XSA-155 (validated fields re-read); CVE-2013-2140 (discard without a
    permission check).

    ## Reading the evidence
    `problems` lists every failed check; `operation`, `indirect_op`,
    `nr_segments`, `nr_sectors`, `sector_number` as decoded.

    ## What the evidence cannot see
    The streams carry the sector total, not each segment's
    `first_sect`/`last_sect`: a segment with `first_sect > last_sect` is only
    caught when the total becomes impossible. The disk size is not in the
    streams, so ranges beyond the end of the disk are not checked. Requests
    seen only through their response are skipped.

    ## Known false positives
    Requests of a vendor extension op (e.g. BLKIF_OP_RESERVED_1, 4) are accepted
    as known ops and not checked further.
    """
    rows = (
        streams.requests.lazy()
        .filter(pl.col("seen") == "full")
        .with_columns(_problems().alias("problems"))
        .filter(pl.col("problems") != "")
    )
    return emit(
        rows,
        "malformed-request",
        message=pl.format(
            "{}: request id {} at {} ms (op {}, {} segments, {} sectors) is malformed: {}",
            ring_label(),
            "id",
            ms("ns"),
            "operation",
            pl.col("nr_segments").cast(pl.String).fill_null("?"),
            pl.col("nr_sectors").cast(pl.String).fill_null("?"),
            "problems",
        ),
        evidence=[
            "id",
            "operation",
            "indirect_op",
            "nr_segments",
            "nr_sectors",
            "sector_number",
            "problems",
        ],
    )
