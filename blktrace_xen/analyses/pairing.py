"""Request/response pairing rules: every response must answer exactly one request in flight.

The pairing itself is the streams' (``io`` and the ``pairing`` facts, see
docs/streams.md): these rules only judge its facts, so the analyses and every
other consumer agree on which response answers which request.
"""

from __future__ import annotations

import polars as pl

from blktrace_xen.analyses.emit import RING, emit, ms, nr_ents, ring_label
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.analyses.timeline import paired, requests, responses
from blktrace_xen.streams import Streams

# Control events after which every request of the ring is observable: the
# trace saw the ring come up, so a response cannot answer an unseen request.
_RING_START = ("connect", "ring_map", "domain_create")


def _facts(streams: Streams, kind: str) -> pl.LazyFrame:
    facts = paired(streams)[1]
    return facts.lazy().filter(pl.col("kind").cast(pl.String) == kind).rename({"operation": "op"})


def _start_observed(streams: Streams, rings: pl.LazyFrame) -> pl.LazyFrame:
    """Per ring of ``rings``: whether a control event showed it starting before its first event."""
    starts = streams.control.lazy().filter(pl.col("kind").cast(pl.String).is_in(_RING_START))
    # Only the rings asked about are scanned (a healthy trace asks about none).
    first = pl.concat(
        [
            frame.lazy().join(rings, on=RING, how="semi", nulls_equal=True).select(*RING, "ns")
            for frame in (requests(streams), responses(streams))
        ]
    )
    firsts = first.group_by(RING).agg(pl.col("ns").min().alias("first_ns"))
    # A domain-wide event (null vdev) starts every ring of the domain.
    per_ring = firsts.join(
        starts.select("domid", "vdev", "queue", pl.col("ns").alias("start_ns")),
        on="domid",
        how="inner",
    )
    per_ring = per_ring.filter(
        (pl.col("vdev_right").is_null() | (pl.col("vdev_right") == pl.col("vdev")))
        & (pl.col("queue_right").is_null() | (pl.col("queue_right") == pl.col("queue")))
        & (pl.col("start_ns") <= pl.col("first_ns"))
    )
    return per_ring.group_by(RING).agg(pl.lit(True).alias("start_observed"))


@rule(
    "response-unknown-id",
    family="pairing",
    severity="high",
    title="a response answers no request in flight",
    source="blkfront 'response references no pending request' (Juergen Gross 2021, "
    "b94e4b147fd1); 'xen/blkfront: Add WARN to deal with misbehaving backends' (2012)",
    example="d1/51712/q0: response id 77 (idx 12, op 1, status 0) at 4.000 ms answers no "
    "request in flight",
)
def response_unknown_id(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A response whose id matches no outstanding request.

    ## What it means
    blkif responses carry the request `id`; a response must answer a request
    that was published and not yet answered. One that answers nothing means the
    backend wrote garbage or a stale slot, or mapped the wrong ring page.
    Hardened Linux blkfront marks the device broken ("response references no
    pending request").

    ## The real bug
    The 2021 blkfront hardening by Juergen Gross (b94e4b147fd1, "don't trust the
    backend response data blindly") and the 2012 "Add WARN to deal with
    misbehaving backends"; also the stale `ring-ref0` mapping of "xen-blkback:
    fix compatibility bug with single page rings" (Paul Durrant 2021).

    ## Reading the evidence
    `id`, `idx`, `op`, `status` of the response; `unmatched_rank` is its rank
    among the ring's responses that had no earlier request (the streams'
    `orphan_response` facts: no request of the id in the ring session).

    ## What the evidence cannot see
    A trace that starts while requests are in flight sees their responses
    without their requests. So unless the trace saw the ring start
    (`connect`, `ring_map` or `domain_create` before its first event), the first
    `nr_ents` such responses of a ring are taken as answers to requests issued
    before the trace and are not reported. A request hidden by lost records
    makes its response look unknown: confidence is lowered where `lost`
    overlaps.

    ## Known false positives
    A ring capture that missed a request (see `gaps`) normally infers it from
    the response (`seen = via_response`), so this rule stays silent there.
    """
    sizes = nr_ents(streams.rings, streams.snapshots, options.default_nr_ents)
    # Orphans are few (a ring's first snapshot at most): collected before the joins.
    orphans = (
        _facts(streams, "orphan_response")
        .with_columns(pl.int_range(1, pl.len() + 1).over(RING).alias("unmatched_rank"))
        .collect()
        .lazy()
    )
    rows = (
        orphans.join(sizes, on=RING, how="left", nulls_equal=True)
        .join(
            _start_observed(streams, orphans.select(RING).unique()),
            on=RING,
            how="left",
            nulls_equal=True,
        )
        .filter(
            pl.col("start_observed").fill_null(False)
            | (pl.col("unmatched_rank") > pl.col("nr_ents").fill_null(options.default_nr_ents))
        )
    )
    return emit(
        rows,
        "response-unknown-id",
        message=pl.format(
            "{}: response id {} (idx {}, op {}, status {}) at {} ms answers no request in flight",
            ring_label(),
            "id",
            pl.col("idx").cast(pl.String).fill_null("?"),
            "op",
            "status",
            ms("ns"),
        ),
        evidence=["id", "idx", "op", "status", "unmatched_rank"],
    )


@rule(
    "duplicate-response",
    family="pairing",
    severity="high",
    title="a request answered twice",
    source="blkfront 'response references no pending request' (duplicate case, Juergen Gross "
    "2021); seed 002 (re-attached backend re-reading consumed requests)",
    example="d1/51712/q0: id 5 answered again at 9.000 ms (idx 21) with no new request since "
    "its response at 4.000 ms",
)
def duplicate_response(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A second response for an id with no new request in between.

    ## What it means
    Each request is answered exactly once. A second response for the same id
    completes whatever request the frontend has since put under that id (or
    nothing): data corruption or a crash in the frontend.

    ## The real bug
    Juergen Gross's 2021 blkfront hardening (the `shadow[id].status !=
    REQ_WAITING` check); seed 002: a backend re-attached with the wrong ring
    semantics re-reads requests the old instance consumed and answers them again.

    ## Reading the evidence
    `first_ns` is the earlier response, `ns` the duplicate; `idx` the
    duplicate's ring index.

    ## What the evidence cannot see
    A polled capture can see an id's request, response, next request and next
    response in one snapshot; the streams' pairing orders such a snapshot as
    the protocol allows (a response to an outstanding id first), so it is not
    a duplicate.

    ## Known false positives
    A request for the same id lost from the trace (lost records, a ring-capture
    gap) between the two responses; confidence is lowered when they overlap.
    """
    # The streams' duplicate_response facts: the id's previous event was its answer.
    rows = (
        _facts(streams, "duplicate_response")
        .with_columns(
            pl.col("prev_ns").alias("first_ns"),
            pl.col("ns").alias("dup_ns"),
            pl.col("ns").alias("ns_end"),
        )
        .with_columns(pl.col("first_ns").alias("ns"))
    )
    return emit(
        rows,
        "duplicate-response",
        message=pl.format(
            "{}: id {} answered again at {} ms (idx {}) with no new "
            "request since its response at {} ms",
            ring_label(),
            "id",
            ms("dup_ns"),
            pl.col("idx").cast(pl.String).fill_null("?"),
            ms("first_ns"),
        ),
        evidence=["id", "idx", "op", "status", "first_ns"],
    )


@rule(
    "response-op-mismatch",
    family="pairing",
    severity="high",
    title="a response's operation differs from its request's",
    source="blkfront 'response has wrong operation (%u instead of %u)' (Juergen Gross 2021, "
    "b94e4b147fd1)",
    example="d1/51712/q0: response id 3 at 5.000 ms says op 0 but the request was op 1",
)
def response_op_mismatch(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A response whose `operation` is not its request's.

    ## What it means
    blkback echoes the request's operation (for `BLKIF_OP_INDIRECT`, its
    `indirect_op`). A different value means the backend answered a different
    request than the one under this id.

    ## The real bug
    "xen/blkfront: don't trust the backend response data blindly" (2021):
    blkfront now disables the device on "response has wrong operation".

    ## Reading the evidence
    `op` is the response's, `request_op` the request's effective op.

    ## What the evidence cannot see
    Requests seen only through their response (`via_response`) have no
    independent op and are skipped. Inside one snapshot the streams' pairing
    decides which request a response answers (docs/streams.md, equal
    timestamps).

    ## Known false positives
    None known for Linux backends (FLUSH and BARRIER are echoed as sent).
    """
    rows = _facts(streams, "op_mismatch").with_columns(
        pl.col("expected_operation").alias("request_op")
    )
    return emit(
        rows,
        "response-op-mismatch",
        message=pl.format(
            "{}: response id {} at {} ms says op {} but the request was op {}",
            ring_label(),
            "id",
            ms("ns"),
            "op",
            "request_op",
        ),
        evidence=["id", "idx", "op", "request_op", "status"],
    )


@rule(
    "response-bad-status",
    family="pairing",
    severity="high",
    title="a response status outside {0, -1, -2}",
    source="blkif.h BLKIF_RSP_{OKAY,ERROR,EOPNOTSUPP}; blkfront hardening (Juergen Gross 2021)",
    example="d1/51712/q0: response id 2 at 3.000 ms has status 7, "
    "not OKAY(0)/ERROR(-1)/EOPNOTSUPP(-2)",
)
def response_bad_status(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A response whose status is not one blkif defines.

    ## What it means
    blkif defines three statuses: `BLKIF_RSP_OKAY` 0, `BLKIF_RSP_ERROR` -1 and
    `BLKIF_RSP_EOPNOTSUPP` -2. Anything else is a corrupt slot, a wrong ABI
    (the status is an int16 at byte 10 of the response in both ABIs) or a
    backend writing uninitialised data.

    ## The real bug
    The 2021 blkfront hardening series treats response data as untrusted; a
    mis-negotiated ABI (`protocol`) shifts every field and typically shows up
    here first.

    ## Reading the evidence
    `status` as decoded, with the response's `id`, `idx` and `op`.

    ## Known false positives
    None known for Linux backends.
    """
    rows = streams.responses.lazy().filter(~pl.col("status").is_in([0, -1, -2]))
    return emit(
        rows.rename({"operation": "op"}),
        "response-bad-status",
        message=pl.format(
            "{}: response id {} at {} ms has status {}, not OKAY(0)/ERROR(-1)/EOPNOTSUPP(-2)",
            ring_label(),
            "id",
            ms("ns"),
            "status",
        ),
        evidence=["id", "idx", "op", "status"],
    )
