"""Lifecycle rules: I/O that outlives its ring, its connection, its domain or its host."""

from __future__ import annotations

import polars as pl

from blktrace_xen.analyses.emit import RING, emit, ms, ring_label
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import rule
from blktrace_xen.analyses.timeline import cached, requests, responses
from blktrace_xen.streams import Streams

# Control kinds after which a ring can no longer carry responses (down) or
# carries them again (up). xenbus_state values: 4 Connected, 6 Closed. A domain
# destroy is not "down": the hypervisor keeps the ring page until the backend
# unmaps it (the refcounted fix drains I/O after the destroy), so only the
# backend's own unmap / disconnect / unbind / Closed take the ring down.
_DOWN = ("disconnect_done", "ring_unmap", "unbind")
_UP = ("connect", "ring_map", "bind", "resume", "domain_create")
# Why a request stayed unanswered: the first of these after it was issued.
_ENDS = {
    "disconnect_request": "disconnect",
    "disconnect_done": "disconnect",
    "ring_unmap": "disconnect",
    "unbind": "unbind",
    "suspend": "suspend",
    "domain_shutdown": "destroy",
    "domain_destroy": "destroy",
}
_WRITE_OPS = (1, 2, 3, 5)  # WRITE, WRITE_BARRIER, FLUSH_DISKCACHE, DISCARD


def known_rings(streams: Streams) -> pl.LazyFrame:
    """Every ring key any table mentions (computed once per ``streams``: it scans every event)."""

    def build() -> pl.DataFrame:
        frames = (streams.requests, streams.responses, streams.rings, streams.snapshots)
        parts = [f.lazy().select(RING).unique() for f in frames]
        return pl.concat(parts).unique().collect()

    return cached(streams, "known_rings", build).lazy()


def ring_control(streams: Streams) -> pl.LazyFrame:
    """Control events per ring; domain-wide ones (null vdev/queue) go to each ring of the domain."""
    ctl = streams.control.lazy().with_columns(pl.col("kind").cast(pl.String))
    rings = known_rings(streams)
    wide = (
        ctl.join(rings, on="domid", how="inner", suffix="_r")
        .filter(
            (pl.col("vdev").is_null() | (pl.col("vdev") == pl.col("vdev_r")))
            & (pl.col("queue").is_null() | (pl.col("queue") == pl.col("queue_r")))
        )
        .with_columns(pl.col("vdev_r").alias("vdev"), pl.col("queue_r").alias("queue"))
        .drop("vdev_r", "queue_r")
    )
    return wide.sort("ns", maintain_order=True)


def handoffs(streams: Streams) -> pl.LazyFrame:
    """``domid``, ``ns`` of each migration handoff (the target was started).

    Explicit ``handoff`` rows, plus the ones a dump holding both hosts implies:
    a domain created again after it was shut down for suspend (reason 2) with
    no resume in between is the target starting.
    """
    ctl = streams.control.lazy().with_columns(pl.col("kind").cast(pl.String))
    explicit = ctl.filter(pl.col("kind") == "handoff").select("domid", "ns")
    life = ctl.filter(pl.col("kind").is_in(["domain_create", "domain_shutdown", "resume"])).sort(
        "ns", maintain_order=True
    )
    prev_suspend = (
        pl.when(pl.col("kind") == "domain_shutdown")
        .then(pl.col("value") == 2)
        .when(pl.col("kind") == "resume")
        .then(pl.lit(False))
        .otherwise(None)
        .forward_fill()
        .shift(1)
        .over("domid")
    )
    inferred = (
        life.with_columns(prev_suspend.alias("suspended"))
        .filter((pl.col("kind") == "domain_create") & pl.col("suspended").fill_null(False))
        .select("domid", "ns")
    )
    return pl.concat([explicit, inferred])


def earliest(streams: Streams, frame: pl.LazyFrame) -> pl.LazyFrame:
    """``frame`` (requests or responses) with ``earliest_ns``: when the row can first have happened.

    An event is exact; a capture dates a row by the snapshot that first showed
    it, so it happened after the snapshot before (or at the row's own time when
    there is none).
    """
    snaps = (
        streams.snapshots.lazy().select(*RING, pl.col("ns").alias("_prev_snap")).sort("_prev_snap")
    )
    return (
        frame.sort("ns")
        .join_asof(
            snaps,
            left_on="ns",
            right_on="_prev_snap",
            by=RING,
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .with_columns(
            pl.when((pl.col("source") == "ringcap") & pl.col("_prev_snap").is_not_null())
            .then(pl.col("_prev_snap"))
            .otherwise(pl.col("ns"))
            .alias("earliest_ns")
        )
        .drop("_prev_snap")
    )


def _state() -> pl.Expr:
    """``down`` / ``up`` / null per control row of :func:`ring_control` (``open`` added).

    A ring mapped twice before it is unmapped has two backend instances on one
    key (a migration's source and target in one dump, a rebound backend): the
    older instance's teardown takes the ring down only when ``open``, the
    number of ``ring_map`` minus ``ring_unmap`` so far, drops to zero.
    """
    kind = pl.col("kind")
    back_state = (kind == "xenbus_state") & (pl.col("side") == "back")
    return (
        pl.when((kind.is_in(_DOWN) | (back_state & (pl.col("value") == 6))) & (pl.col("open") <= 0))
        .then(pl.lit("down"))
        .when(kind.is_in(_UP) | (back_state & (pl.col("value") == 4)))
        .then(pl.lit("up"))
        .otherwise(None)
    )


def ring_states(streams: Streams) -> pl.LazyFrame:
    """Per ring: ``down_ns``, ``state`` (up/down) and ``down_kind`` at each change."""
    kind = pl.col("kind")
    back = (kind == "xenbus_state") & (pl.col("side") == "back")
    # Instances are counted by ring_map / ring_unmap where the trace has them,
    # else (a capture) by the backend's xenbus Connected / Closed.
    maps = pl.when(kind == "ring_map").then(1).when(kind == "ring_unmap").then(-1).otherwise(0)
    conns = (
        pl.when(back & (pl.col("value") == 4))
        .then(1)
        .when(back & (pl.col("value") == 6))
        .then(-1)
        .otherwise(0)
    )
    has_maps = (kind == "ring_map").any().over(RING)
    return (
        ring_control(streams)
        .with_columns(
            pl.when(has_maps)
            .then(maps.cum_sum().over(RING))
            .otherwise(conns.cum_sum().over(RING))
            .alias("open")
        )
        .with_columns(_state().alias("state"))
        .filter(pl.col("state").is_not_null())
        .select(*RING, pl.col("ns").alias("down_ns"), "state", pl.col("kind").alias("down_kind"))
    )


def unanswered(streams: Streams) -> pl.LazyFrame:
    """``io`` rows never answered, with ``why`` (io.outcome, else inferred from control).

    A request re-issued later on the same ring (same op, sector and length, as
    a frontend does after resume) is marked ``reissued``, and so is one whose
    id is next seen in a response of another session (:func:`answered_across`).
    Rows are in issue order. Three rules read it, so it is computed once per
    ``streams``, and only from the pending requests: the rest of the trace is
    looked up, never re-paired.
    """
    return cached(streams, "unanswered", lambda: _unanswered(streams)).lazy()


def _unanswered(streams: Streams) -> pl.DataFrame:
    pending = streams.io.filter(pl.col("rsp_ns").is_null()).sort("req_ns", maintain_order=True)
    ends = (
        ring_control(streams)
        .filter(pl.col("kind").is_in(list(_ENDS)))
        .select(*RING, pl.col("ns").alias("end_ns"), pl.col("kind").alias("end_kind"))
    )
    inferred = (
        pending.lazy()
        .join_asof(
            ends,
            left_on="req_ns",
            right_on="end_ns",
            by=RING,
            strategy="forward",
            check_sortedness=False,
        )
        .with_columns(
            # io.outcome wins when it names a cause; "trace_end" may just mean the
            # builder did not look at control events.
            pl.when(
                pl.col("outcome").is_not_null()
                & ~pl.col("outcome").is_in(["completed", "trace_end"])
            )
            .then(pl.col("outcome"))
            .otherwise(pl.col("end_kind").replace_strict(_ENDS, default="trace_end"))
            .alias("why")
        )
        .collect()
    )
    if inferred.is_empty():
        return inferred.with_columns(pl.lit(False).alias("reissued"))
    later = (
        requests(streams)
        .lazy()
        .select(
            *RING,
            pl.col("ns").alias("re_ns"),
            pl.col("operation").alias("re_op"),
            "sector_number",
            "nr_sectors",
        )
    )
    reissued = (
        inferred.lazy()
        .filter(pl.col("sector_number").is_not_null())
        .join(later, on=[*RING, "sector_number", "nr_sectors"], how="inner")
        .filter((pl.col("re_ns") > pl.col("req_ns")) & (pl.col("re_op") == pl.col("operation")))
        .select(*RING, "id", "req_ns")
        .unique()
        .with_columns(pl.lit(True).alias("reissued"))
    )
    keys = [*RING, "id", "req_ns"]
    return (
        inferred.lazy()
        .join(reissued, on=keys, how="left", nulls_equal=True, maintain_order="left")
        .join(answered_across(streams, inferred), on=keys, how="left", maintain_order="left")
        .with_columns(
            pl.col("reissued").fill_null(False) | pl.col("answered_later").fill_null(False)
        )
        .drop("answered_later")
        .collect()
    )


def answered_across(streams: Streams, pending: pl.DataFrame) -> pl.LazyFrame:
    """The ``pending`` requests whose id is next seen in a response, whatever the session.

    Pairing is per session, but a backend re-attached to a live ring
    (BACK_RING_ATTACH after a rebind, seed 002's fix) answers in the new
    session what the frontend published in the old one: those requests were
    not lost. Columns: ring key, ``id``, ``req_ns``, ``answered_later``.

    For each pending request (``pending``: ring key, ``id``, ``req_ns``; one
    of ``streams.requests``) the ring's next request and next response of
    that id, strictly later, come from two forward as-of joins. At one time
    (a capture's snapshot) the answer to the previous request of an id comes
    before the id's new request, as pairing orders them, so a response at the
    same time as the next request answers.
    """
    keys = [*RING, "id"]
    asked = pending.lazy().select(*keys, "req_ns").drop_nulls().unique()
    ids = asked.select(keys).unique()

    def of_pending_ids(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        # Only the pending requests' (ring, id): a filter keeps time order for the as-of join.
        return (
            frame.lazy()
            .select(*keys, pl.col("ns").alias(name))
            .drop_nulls()
            .join(ids, on=keys, how="semi", maintain_order="left")
            .collect()
            .rechunk()  # one chunk: as-of joins run several times slower over many
        )

    reqs = of_pending_ids(requests(streams), "_next_req")
    rsps = of_pending_ids(responses(streams), "_next_rsp")
    # A pending row counts only if it is one of the requests (io may hold others).
    issued = asked.join(
        reqs.lazy().rename({"_next_req": "req_ns"}), on=[*keys, "req_ns"], how="semi"
    ).sort("req_ns")
    found = issued.collect()
    for frame, name in ((reqs, "_next_req"), (rsps, "_next_rsp")):
        found = found.join_asof(
            frame,
            left_on="req_ns",
            right_on=name,
            by=keys,
            strategy="forward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
    answered = pl.col("_next_rsp").is_not_null() & (
        pl.col("_next_req").is_null() | (pl.col("_next_rsp") <= pl.col("_next_req"))
    )
    return (
        found.lazy().filter(answered).select(*keys, "req_ns", pl.lit(True).alias("answered_later"))
    )


@rule(
    "incomplete-at-trace-end",
    family="lifecycle",
    severity="info",
    title="requests still in flight when the trace ended",
    source="seed 000 / 004 context: outstanding I/O is only a bug if the ring goes away",
    example="d1/51712/q0 session 0: 3 requests still in flight at trace end, oldest issued at "
    "2.000 ms (ids 4, 5, 6)",
)
def incomplete_at_trace_end(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Requests with no response before the trace ended, one finding per ring session.

    ## What it means
    Nothing by itself: a trace stops while I/O is in flight. Reported at info
    so that the count is visible next to `stall`, which fires when those
    requests also saw no backend progress for a long time.

    ## The real bug
    Context for seeds 000 and 004: if the trace ends with a disconnect or a
    destroy, the same requests are reported by `incomplete-at-disconnect` or
    `incomplete-at-destroy` instead.

    ## Reading the evidence
    `pending` requests; `oldest_ns` the oldest one's issue time; `ids` up to 8 ids.

    ## Known false positives
    Every trace that stops under load has some; only the count is of interest.
    """
    rows = (
        unanswered(streams)
        .filter((pl.col("why") == "trace_end") & ~pl.col("reissued"))
        .group_by([*RING, "session"])
        .agg(
            pl.len().alias("pending"),
            pl.col("req_ns").min().alias("oldest_ns"),
            pl.col("req_ns").max().alias("ns_end"),
            pl.col("id").head(8).alias("ids"),
        )
        .with_columns(pl.col("oldest_ns").alias("ns"))
    )
    return emit(
        rows,
        "incomplete-at-trace-end",
        message=pl.format(
            "{} session {}: {} requests still in flight at trace "
            "end, oldest issued at {} ms (ids {})",
            ring_label(),
            pl.col("session").cast(pl.String).fill_null("?"),
            "pending",
            ms("oldest_ns"),
            pl.col("ids").cast(pl.List(pl.String)).list.join(", "),
        ),
        evidence=["pending", "oldest_ns", "ids"],
    )


def _incomplete(streams: Streams, rule_id: str, whys: tuple[str, ...], what: str) -> pl.LazyFrame:
    rows = unanswered(streams).filter(pl.col("why").is_in(whys) & ~pl.col("reissued"))
    return emit(
        rows.with_columns(
            pl.col("req_ns").alias("ns"),
            pl.col("end_ns").fill_null(pl.col("req_ns")).alias("ns_end"),
            pl.col("req_idx").alias("idx"),
        ),
        rule_id,
        message=pl.format(
            "{}: request id {} (op {}, sector {}) issued at {} ms was "
            "never answered before the {} at {} ms{}",
            ring_label(),
            "id",
            "operation",
            pl.col("sector_number").cast(pl.String).fill_null("?"),
            ms("req_ns"),
            "why",
            pl.col("end_ns").pipe(ms).cast(pl.String).fill_null("?"),
            pl.lit(what),
        ),
        evidence=["id", "operation", "sector_number", "req_ns", "why", "end_ns", "end_kind"],
    )


@rule(
    "incomplete-at-disconnect",
    family="lifecycle",
    severity="high",
    title="requests in flight when the ring was disconnected",
    source="seed 000 (NetBSD xbdback 2005: disconnect processed while I/O pending); "
    "'xen/blkback: fix disconnect while I/Os in flight' (Juergen Gross 2018)",
    example="d1/51712/q0: request id 9 (op 1, sector 4096) issued at 1.000 ms was never answered "
    "before the disconnect at 2.000 ms: the guest's I/O is lost",
)
def incomplete_at_disconnect(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A request never answered before its ring was disconnected, unbound or suspended.

    ## What it means
    The backend let the connection go while it still owed a response: the
    guest's request is lost ("any IO requests to the disk in guest will end up
    in ether"), unless the frontend re-issues it after reconnecting (then it is
    not reported).

    ## The real bug
    Seed 000 (Jed Davis, NetBSD xbdback 2005): the backend processed a
    disconnect at once while I/O was pending; the fix reference-counts the
    instance and answers the disconnect only when the count drops to zero.
    Linux: "xen/blkback: fix disconnect while I/Os in flight" (2018),
    "xen-blkback: Don't disconnect backend until state switched to XenbusStateClosed".

    ## Reading the evidence
    `why` (`disconnect`, `unbind`, `suspend`), `end_kind` and `end_ns` name the
    control event that ended the ring; `req_ns`, `id`, `sector_number` the request.

    ## Known false positives
    A frontend that re-issues with a different sector split (indirect to
    plain, seed 003 / `402b27f9`) is not recognised as a re-issue.
    """
    return _incomplete(
        streams,
        "incomplete-at-disconnect",
        ("disconnect", "unbind", "suspend"),
        ": the guest's I/O is lost",
    )


@rule(
    "incomplete-at-destroy",
    family="lifecycle",
    severity="high",
    title="requests in flight when the domain was destroyed (the leaked reference)",
    source="seed 000 (panic on domain destroy during heavy swap I/O); 'xen/blkback: Complete IO "
    "before freeing persistent grants' (Ross Lagerwall 2016)",
    example="d1/51712/q0: request id 2 (op 1, sector 64) issued at 1.000 ms was never answered "
    "before the destroy at 1.500 ms: its reference and grants leak",
)
def incomplete_at_destroy(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A request never answered before its domain was shut down or destroyed.

    ## What it means
    The backend still holds the request (a reference on the ring, mapped
    grants) when the domain goes away. Either the teardown waits for it (and the
    domain lingers as a zombie) or it frees under the I/O (use-after-free, a
    dom0 panic when the completion writes into the unmapped ring).

    ## The real bug
    Seed 000: destroying a domain doing heavy swap I/O panicked NetBSD dom0.
    Linux: "xen/blkback: Complete IO before freeing persistent grants" (2016,
    "use-after-free when the device is disconnected while IO is in-flight ...
    force-killing the domain").

    ## Reading the evidence
    As for `incomplete-at-disconnect`, with `why = destroy`.

    ## Known false positives
    A frontend that re-issues with a different sector split after a restore is
    not recognised as a re-issue.
    """
    return _incomplete(
        streams, "incomplete-at-destroy", ("destroy",), ": its reference and grants leak"
    )


@rule(
    "response-after-disconnect",
    family="lifecycle",
    severity="critical",
    title="a response written after the ring was disconnected or unmapped",
    source="seed 000 (xbdback wrote the response into the unmapped ring: kernel panic)",
    example="d1/51712/q0: response id 4 written at 7.000 ms, 2.000 ms after ring_unmap at "
    "5.000 ms: the backend writes into a ring it gave up",
)
def response_after_disconnect(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A response produced while the ring was down (after disconnect / unmap / unbind / destroy).

    ## What it means
    Completion of I/O the backend still owed arrived after it had already
    released the ring: it writes into a page that is unmapped (a panic in the
    backend) or, worse, reused.

    ## The real bug
    Seed 000 (NetBSD xbdback, 2005): "the kernel panics when the response
    message is written to the then-unmapped ring". The fix defers the unmap
    until the last I/O is done.

    ## Reading the evidence
    `down_kind` and `down_ns` name the control event that took the ring down
    (`disconnect_done`, `ring_unmap`, `unbind`, or the backend's xenbus state
    `Closed`); `late_ns` how long after it the response came. A later
    `connect`/`ring_map`/`bind`/`resume` (or backend state Connected) brings
    the ring up again. A domain destroy alone does not take the ring down: the
    page stays until the backend unmaps it. When a ring key was mapped twice
    before an unmap (a migration's source and target in one dump), the older
    instance's unmap does not take the newer one down.

    A response from a ring capture is dated by the snapshot that first showed
    it; it is compared with the down event through the snapshot before (the
    earliest it can have been written), so polling never invents a late one.

    ## Known false positives
    With the Linux 2018 fix blkback keeps the ring mapped while `inflight > 0`
    even though it reports the disconnect; a trace that records
    `disconnect_done` before the deferred unmap shows those legal late responses.
    """
    states = ring_states(streams)
    # A capture dates a response by the snapshot that first showed it; it was
    # written after the snapshot before, so that one is compared with the down
    # event. An event at the very time of the down event counts as before it
    # (one model step publishes the last response, then unmaps).
    snaps = (
        streams.snapshots.lazy()
        .select(*RING, pl.col("ns").alias("prev_snap_ns"))
        .sort("prev_snap_ns")
    )
    rsp = (
        streams.responses.lazy()
        .join(states.select(RING).unique(), on=RING, how="semi")
        .select(
            *RING,
            "session",
            "ns",
            "id",
            "idx",
            pl.col("operation").alias("op"),
            "status",
            (pl.col("source") == "ringcap").alias("sampled"),
        )
        .sort("ns")
        .join_asof(
            snaps,
            left_on="ns",
            right_on="prev_snap_ns",
            by=RING,
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .with_columns(
            pl.when(pl.col("sampled") & pl.col("prev_snap_ns").is_not_null())
            .then(pl.col("prev_snap_ns"))
            .otherwise(pl.col("ns"))
            .alias("earliest_ns")
        )
        .sort("earliest_ns")
    )
    rows = (
        rsp.join_asof(
            states.sort("down_ns"),
            left_on="earliest_ns",
            right_on="down_ns",
            by=RING,
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .filter(pl.col("state") == "down")
        .with_columns((pl.col("ns") - pl.col("down_ns")).alias("late_ns"))
    )
    return emit(
        rows,
        "response-after-disconnect",
        message=pl.format(
            "{}: response id {} written at {} ms, {} ms after {} at {} "
            "ms: the backend writes into a ring it gave up",
            ring_label(),
            "id",
            ms("ns"),
            ms("late_ns"),
            "down_kind",
            ms("down_ns"),
        ),
        evidence=["id", "op", "status", "down_kind", "down_ns", "late_ns"],
    )


@rule(
    "grants-held-at-destroy",
    family="lifecycle",
    severity="high",
    title="grant mappings of a destroyed domain still held",
    source="CVE-2021-28688 'xen-blkback: don't leak persistent grants from xen_blkbk_map()'; "
    "seed 000 (teardown with I/O pending)",
    example="domain 3: at least 12 grant mappings still held at trace end, after its destroy at "
    "9.000 ms (balance 12 at destroy)",
)
def grants_held_at_destroy(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Grant mappings of a domain that stay mapped after it is destroyed.

    ## What it means
    The backend mapped the guest's pages (TRC_MEM grant map) and did not unmap
    them by the end of the trace although the domain was destroyed: a leaked
    reference keeps the domain a zombie and its memory unreclaimed.

    ## The real bug
    CVE-2021-28688 / XSA-371 "xen-blkback: don't leak persistent grants from
    xen_blkbk_map()"; the teardown-with-I/O-pending bugs of seed 000.

    ## Reading the evidence
    `final_balance` is maps minus unmaps of the domain's grants seen by the
    trace at its end; `balance_at_destroy` the same at the destroy event;
    `maps_after` / `unmaps_after` the activity after it.

    ## What the evidence cannot see
    Maps made before the trace began: the balance is relative to the trace
    start, so the count is a lower bound, and a domain whose grants were all
    mapped before the trace is not reported.

    ## Known false positives
    A trace that ends before the backend's deferred teardown unmaps the grants
    (check `unmaps_after`).
    """
    destroys = (
        streams.control.lazy()
        .filter(pl.col("kind").cast(pl.String) == "domain_destroy")
        .group_by("domid")
        .agg(pl.col("ns").min())
    )
    grants = (
        streams.grants.lazy().rename({"granting_domid": "domid"}).sort("ns", maintain_order=True)
    )
    joined = grants.join(
        destroys, on="domid", how="inner", suffix="_destroy", maintain_order="left"
    )
    rows = (
        joined.group_by("domid")
        .agg(
            pl.col("ns_destroy").first().alias("ns"),
            pl.col("balance").last().alias("final_balance"),
            pl.col("balance")
            .filter(pl.col("ns") <= pl.col("ns_destroy"))
            .last()
            .fill_null(0)
            .alias("balance_at_destroy"),
            ((pl.col("ns") > pl.col("ns_destroy")) & (pl.col("op") == "map"))
            .sum()
            .alias("maps_after"),
            ((pl.col("ns") > pl.col("ns_destroy")) & (pl.col("op") == "unmap"))
            .sum()
            .alias("unmaps_after"),
            pl.col("ns").max().alias("ns_end"),
        )
        .filter(pl.col("final_balance") > 0)
    )
    return emit(
        rows,
        "grants-held-at-destroy",
        message=pl.format(
            "domain {}: at least {} grant mappings still held at trace end, "
            "after its destroy at {} ms (balance {} at destroy)",
            "domid",
            "final_balance",
            ms("ns"),
            "balance_at_destroy",
        ),
        evidence=["final_balance", "balance_at_destroy", "maps_after", "unmaps_after"],
    )


@rule(
    "migration-handoff-io",
    family="lifecycle",
    severity="critical",
    title="I/O completing on the source after the migration target was started",
    source="seed 004 (xen-devel 2008: blkback_remove returned with I/O outstanding; the target "
    "was unleashed before the source's writes were done)",
    example="d1/51712/q0: 3 responses (2 writes) completed on the source after the target was "
    "started at 10.000 ms, the last at 12.500 ms: the target may read stale data",
)
def migration_handoff_io(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """Responses on the source's rings after the `handoff` control event.

    ## What it means
    Once the migrated domain runs on the target, every write of the source must
    already be on the disk. A write completing on the source afterwards races
    with the target's reads and writes of the same blocks: silent corruption.
    Severity is `critical` when any write, barrier, flush or discard completes
    late and `medium` for reads only.

    ## The real bug
    Seed 004 (xen-devel, 2008): `blkback_remove` returned while the backend
    thread still had I/O outstanding, and xend unleashed the target; the fix
    waits for the thread, publishes `shutdown-done` and the toolstack waits for
    it.

    ## Reading the evidence
    `handoff_ns` is the `handoff` event (its `domid` is the migrating domain's
    id on the source), or, where none was recorded, the domain's creation after
    its suspend shutdown (a dump holding both hosts: the target starting);
    `late` responses after it, `writes` among them, `last_ns` the last one.
    Only the source's responses count: those continuing its response index
    sequence (within one ring size of its last response before the handoff),
    up to its `ring_unmap`; the target's ring starts its own indices.

    ## Known false positives
    Reads completing late are harmless for the disk's content (reported as
    `medium`); a `handoff` event recorded with the target's domid instead of the
    source's is not matched.
    """
    handoff = handoffs(streams).group_by("domid").agg(pl.col("ns").min().alias("handoff_ns"))
    rsp = streams.responses.lazy().select(*RING, "ns", "idx", pl.col("operation").alias("op"))
    # The source's responses continue its own index sequence; the target's ring
    # starts afresh (a shared dump holds both under one ring key).
    last = (
        rsp.join(handoff, on="domid", how="inner")
        .filter(pl.col("ns") <= pl.col("handoff_ns"))
        .group_by(RING)
        .agg(pl.col("idx").sort_by("ns").last().alias("last_idx"))
    )
    unmaps = (
        ring_control(streams)
        .filter(pl.col("kind") == "ring_unmap")
        .join(handoff, on="domid", how="inner")
        .filter(pl.col("ns") >= pl.col("handoff_ns"))
        .group_by(RING)
        .agg(pl.col("ns").min().alias("unmap_ns"))
    )
    nr = streams.rings.lazy().select(*RING, pl.col("nr_ents").cast(pl.Int64))
    span = (pl.col("idx").cast(pl.Int64) - pl.col("last_idx").cast(pl.Int64)) % (1 << 32)
    late = (
        rsp.join(handoff, on="domid", how="inner")
        .filter(pl.col("ns") > pl.col("handoff_ns"))
        .join(last, on=RING, how="left")
        .join(unmaps, on=RING, how="left")
        .join(nr, on=RING, how="left")
        .filter(
            pl.col("unmap_ns").is_null() | (pl.col("ns") <= pl.col("unmap_ns")),
            pl.col("last_idx").is_null()
            | ((span >= 1) & (span <= pl.col("nr_ents").fill_null(32))),
        )
    )
    rows = (
        late.group_by(RING)
        .agg(
            pl.col("handoff_ns").first(),
            pl.len().alias("late"),
            pl.col("op").is_in(_WRITE_OPS).sum().alias("writes"),
            pl.col("ns").min().alias("first_ns"),
            pl.col("ns").max().alias("last_ns"),
        )
        .with_columns(pl.col("handoff_ns").alias("ns"), pl.col("last_ns").alias("ns_end"))
    )
    return emit(
        rows,
        "migration-handoff-io",
        message=pl.format(
            "{}: {} responses ({} writes) completed on the source "
            "after the target was started at {} ms, "
            "the last at {} ms: the target may read stale data",
            ring_label(),
            "late",
            "writes",
            ms("handoff_ns"),
            ms("last_ns"),
        ),
        evidence=["handoff_ns", "late", "writes", "first_ns", "last_ns"],
        severity=pl.when(pl.col("writes") > 0).then(pl.lit("critical")).otherwise(pl.lit("medium")),
    )


def suspend_resume(streams: Streams) -> pl.LazyFrame:
    """Per ring, each (``suspend_ns``, ``resume_ns``): the frontend went away and came back.

    From ``suspend`` / ``resume`` events, or (a capture) the frontend's xenbus
    state leaving Connected for Initialising and reaching Connected again.
    """
    kind = pl.col("kind")
    front = (kind == "xenbus_state") & (pl.col("side") == "front")
    label = (
        pl.when((kind == "suspend") | (front & (pl.col("value") == 1)))
        .then(pl.lit("s"))
        .when((kind == "resume") | (front & (pl.col("value") == 4)))
        .then(pl.lit("r"))
        .otherwise(None)
    )
    marks = (
        ring_control(streams)
        .with_columns(label.alias("mark"))
        .filter(pl.col("mark").is_not_null())
        .select(*RING, "ns", "mark")
        .with_columns(pl.col("mark").shift(1).over(RING).alias("prev_mark"))
        .filter(pl.col("prev_mark").is_null() | (pl.col("mark") != pl.col("prev_mark")))
        .with_columns(
            pl.col("ns").shift(1).over(RING).alias("suspend_ns"),
            pl.col("mark").shift(1).over(RING).alias("before"),
        )
    )
    return marks.filter((pl.col("mark") == "r") & (pl.col("before") == "s")).select(
        *RING, "suspend_ns", pl.col("ns").alias("resume_ns")
    )


def reissues(streams: Streams) -> pl.LazyFrame:
    """Requests outstanding at a suspend, each with its first same-id request after the resume.

    Outstanding: the last request of its id issued before the suspend, with no
    response before it (the frontend re-issues everything it had not seen
    answered). ``re_*`` columns are null when the id was not issued again.
    """
    cols = ["ns", "idx", "operation", "sector_number", "nr_sectors", "nr_segments", "seen"]
    req = earliest(streams, streams.requests.lazy()).select(*RING, "id", "earliest_ns", *cols)
    rsp = streams.responses.lazy().select(*RING, "id", pl.col("ns").alias("rsp_ns"))
    pairs = suspend_resume(streams)
    before = (
        req.join(pairs, on=RING, how="inner")
        .filter(pl.col("earliest_ns") < pl.col("suspend_ns"))
        .sort("ns")
        .group_by([*RING, "suspend_ns", "resume_ns", "id"])
        .agg(pl.all().last())
        .drop("earliest_ns")
    )
    answered = (
        before.join(rsp, on=[*RING, "id"], how="inner")
        .filter((pl.col("rsp_ns") > pl.col("ns")) & (pl.col("rsp_ns") < pl.col("suspend_ns")))
        .select(*RING, "id", "ns")
        .unique()
    )
    outstanding = before.join(answered, on=[*RING, "id", "ns"], how="anti")
    after = (
        req.drop("earliest_ns")
        .join(pairs, on=RING, how="inner")
        .filter(pl.col("ns") >= pl.col("resume_ns"))
        .sort("ns")
        .group_by([*RING, "resume_ns", "id"])
        .agg(pl.all().first())
        .select(*RING, "resume_ns", "id", *[pl.col(c).alias(f"re_{c}") for c in cols])
    )
    return outstanding.join(after, on=[*RING, "resume_ns", "id"], how="left")


def _differs(col: str) -> pl.Expr:
    return pl.col(col).ne_missing(pl.col(f"re_{col}"))


@rule(
    "reissue-mismatch",
    family="lifecycle",
    severity="high",
    title="a request re-issued after resume differs from the original",
    source="seed 003 (NetBSD xbd 2006 recovery ring: not every request field is copied into "
    "the shadow); 'xen-blkfront: save uncompleted reqs in blkfront_resume()' (Bob Liu 2016)",
    example="d1/51712/q0: request id 4 re-issued at 110.000 ms after the resume as op 1 sector "
    "0+8 (1 segments), issued at 100.000 ms as op 1 sector 32768+8 (1 segments): the write "
    "lands on other sectors",
)
def reissue_mismatch(streams: Streams, options: AnalysisOptions) -> pl.LazyFrame:
    """A request outstanding at suspend, re-issued after the resume with other contents.

    ## What it means
    After save/restore (or migration) the frontend replays, from its shadow
    copy, every request it had not seen answered. The replay must be the same
    request: same operation, sector, length and segments. A difference means
    the shadow lost a field: a write lands on the wrong sectors (silent
    corruption, `critical`) or a read returns other data (`high`).

    ## The real bug
    Seed 003 (Jed Davis, NetBSD xbd, 2006): the "recovery ring" shadowing each
    outstanding request; as posted, not every request field is copied into the
    shadow, so the re-issued request differs from the original. Linux: "xen-blkfront:
    save uncompleted reqs in blkfront_resume()" (2016).

    ## Reading the evidence
    `orig_ns` / `orig_sector` / `orig_nr_sectors` / `orig_op` the request before
    the suspend; the `re_*` fields its re-issue after `resume_ns` (matched by
    id: the shadow ring keeps the id); `changed` the fields that differ.

    ## Known false positives
    A frontend that legitimately splits a request on resume (fewer segments
    advertised by the new backend, `402b27f9`) re-issues other ids or other
    lengths; those show here as `nr_sectors`/`nr_segments` changes.
    """
    rows = (
        reissues(streams)
        .filter(pl.col("re_ns").is_not_null() & (pl.col("seen") == "full"))
        .filter(
            _differs("operation")
            | _differs("sector_number")
            | _differs("nr_sectors")
            | _differs("nr_segments")
        )
        .with_columns(
            pl.concat_str(
                [
                    pl.when(_differs(c)).then(pl.lit(c))
                    for c in ("operation", "sector_number", "nr_sectors", "nr_segments")
                ],
                separator=",",
                ignore_nulls=True,
            ).alias("changed"),
            pl.col("ns").alias("orig_ns"),
            pl.col("operation").alias("orig_op"),
            pl.col("sector_number").alias("orig_sector"),
            pl.col("nr_sectors").alias("orig_nr_sectors"),
            pl.col("re_ns").alias("ns_at"),
        )
        .with_columns(pl.col("ns_at").alias("ns"), pl.col("re_idx").alias("idx"))
    )
    return emit(
        rows,
        "reissue-mismatch",
        message=pl.format(
            "{}: request id {} re-issued at {} ms after the resume as op {} sector {}+{} "
            "({} segments), issued at {} ms as op {} sector {}+{} ({} segments): {}",
            ring_label(),
            "id",
            ms("re_ns"),
            "re_operation",
            pl.col("re_sector_number").cast(pl.String).fill_null("?"),
            pl.col("re_nr_sectors").cast(pl.String).fill_null("?"),
            "re_nr_segments",
            ms("orig_ns"),
            "orig_op",
            pl.col("orig_sector").cast(pl.String).fill_null("?"),
            pl.col("orig_nr_sectors").cast(pl.String).fill_null("?"),
            "nr_segments",
            pl.when(pl.col("orig_op").is_in(_WRITE_OPS))
            .then(pl.lit("the write lands on other sectors"))
            .otherwise(pl.lit("the read returns other data")),
        ),
        evidence=[
            "id",
            "orig_ns",
            "orig_op",
            "orig_sector",
            "orig_nr_sectors",
            "re_ns",
            "re_operation",
            "re_sector_number",
            "re_nr_sectors",
            "suspend_ns",
            "resume_ns",
            "changed",
        ],
        severity=pl.when(pl.col("orig_op").is_in(_WRITE_OPS))
        .then(pl.lit("critical"))
        .otherwise(pl.lit("high")),
    )
