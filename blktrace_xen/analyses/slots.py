"""Slot-content rules: what the bytes of a ring slot reveal beyond the indices."""

from __future__ import annotations

import polars as pl

from blktrace_xen.analyses.emit import RING, emit, ms, ring_label
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.streams import Streams


@rule(
    "slot-mutation",
    family="slots",
    severity="high",
    title="a published, unconsumed request slot changed between captures (double fetch)",
    source="XSA-155 / CVE-2015-8550: Xen 3f20b8def0 'xen: Add RING_COPY_REQUEST()'; "
    "'xen-blkback: only read request operation from shared ring once'",
    example="d1/51712/q0: request slot idx 1040 rewritten between 3.000 and 3.300 ms "
    "(sector_number, nr_segments) while published and unanswered",
)
def slot_mutation(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A request slot the frontend rewrote after publishing it (from `mutations`).

    ## What it means
    Once `req_prod` covers a slot the backend may read it at any time; a
    frontend that changes it afterwards can pass validation with one value and
    be executed with another (a time-of-check/time-of-use attack on the backend).

    ## The real bug
    XSA-155 (2015): backends read fields of the shared slot more than once;
    fixed by copying the request once (`RING_COPY_REQUEST`, Xen 3f20b8def0) and
    "xen-blkback: only read request operation from shared ring once".

    ## Reading the evidence
    `idx` the slot's ring index, `fields` the fields that changed, `prev_ns`
    and `ns` the two snapshots.

    ## Known false positives
    None once the ring decoder excludes slots already answered (a response
    legitimately overwrites its request's slot).
    """
    rows = streams.mutations.lazy().with_columns(
        pl.col("prev_ns").alias("ns"), pl.col("ns").alias("ns_end"), pl.col("ns").alias("new_ns")
    )
    return emit(
        rows,
        "slot-mutation",
        message=pl.format(
            "{}: request slot idx {} rewritten between {} and {} ms "
            "({}) while published and unanswered",
            ring_label(),
            "idx",
            ms("ns"),
            ms("new_ns"),
            "fields",
        ),
        evidence=["idx", "fields", "prev_ns", "new_ns"],
    )


@rule(
    "response-padding-nonzero",
    family="slots",
    severity="info",
    title="response padding bytes not zero",
    source="XSA-216 / CVE-2017-10911 'xen-blkback: don't leak stack data via response ring' "
    "(Jan Beulich 2017)",
    example="d1/51712/q0 session 0: 312 responses with non-zero padding (first idx 700 at "
    "0.500 ms): usually stale request bytes, see the docs before suspecting a leak",
)
def response_padding_nonzero(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Responses whose padding bytes (byte 9; 12..15 on x86_64) are not zero, per ring session.

    ## What it means
    Before XSA-216 blkback built each response on its stack and copied the
    whole struct, padding included, into the shared ring: uninitialised backend
    stack leaked to the guest. Since the fix blkback writes `id`, `operation`
    and `status` one by one, so the padding keeps whatever the slot held before,
    normally the bytes of the request it answers. Non-zero padding is therefore
    expected from a patched Linux backend, hence `info`.

    ## The real bug
    XSA-216 / CVE-2017-10911 (Linux blkback, and QEMU's qdisk "xen/disk: don't
    leak stack data via response ring").

    ## Reading the evidence
    `count` responses with non-zero padding, the first one's `idx` and time.
    Compare the padding with the request bytes of the same slot in the
    capture: bytes that match neither are the leak.

    ## Known false positives
    Every patched Linux blkback (stale request bytes), which is why this rule
    does not rise above info.
    """
    rows = (
        streams.responses.lazy()
        .filter(pl.col("pad_nonzero").fill_null(False))
        .group_by([*RING, "session"])
        .agg(
            pl.len().alias("count"),
            pl.col("ns").min(),
            pl.col("ns").max().alias("ns_end"),
            pl.col("idx").sort_by("ns").first().alias("first_idx"),
        )
    )
    return emit(
        rows.with_columns(pl.col("first_idx").alias("idx")),
        "response-padding-nonzero",
        message=pl.format(
            "{} session {}: {} responses with non-zero padding (first idx {} at {} ms): usually "
            "stale request bytes, see the docs before suspecting a leak",
            ring_label(),
            pl.col("session").cast(pl.String).fill_null("?"),
            "count",
            pl.col("first_idx").cast(pl.String).fill_null("?"),
            ms("ns"),
        ),
        evidence=["count", "first_idx"],
    )
