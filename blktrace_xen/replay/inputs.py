"""Streams -> the model's input events, under the trace's own (virtual) time.

A trace records two kinds of things: what the *world* did (the guest issued a request,
the backend thread ran, the disk finished an I/O, the toolstack unbound the driver) and
what the *drivers* decided (which slot a response went to, when the ring was unmapped,
which requests were re-issued after a resume). Replay keeps the first and lets each
logic redo the second, so only world events become model inputs:

==========================  ==============================================================
trace                        model input
==========================  ==============================================================
request published            ``FrontSubmit`` at its time (not for a re-issue after resume)
request consumed             ``BackConsume`` at the consume time (one per ring and time)
response to a request        ``BackComplete`` of that request at the response's time
response answering nothing   resolved when replayed (:mod:`blktrace_xen.replay.engine`)
response consumed            ``FrontConsume`` at the consume time
control                      ``Disconnect``/``Unbind``/``Bind``/``Suspend``/``Resume``/
                             ``DomainDestroy``/``Handoff`` at the traced moment
==========================  ==============================================================

Where the trace lacks what a logic needs, the conversion says so as a :class:`Caveat`
instead of guessing silently. The conversion is vectorised in Polars; only the final
construction of the event objects is a Python loop, done once and shared by every logic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import polars as pl

from blktrace_xen import schema
from blktrace_xen.model.events import (
    BackConsume,
    Bind,
    Disconnect,
    DomainDestroy,
    FrontConsume,
    FrontMutateSlot,
    FrontSetReqProd,
    FrontSubmit,
    Handoff,
    InputEvent,
    Resume,
    RingKey,
    Suspend,
    Unbind,
)
from blktrace_xen.streams import Streams

if TYPE_CHECKING:
    from blktrace_xen.replay.bulk_plan import Plan

RING: Final = list(schema.RING_KEY)

# Event codes of the merged timeline (also its tie-break order at equal time: a control
# event first, so that a request consumed at the instant of a resume is consumed by the
# new backend; then the request path in protocol order).
K_CONTROL: Final = 0
K_SUBMIT: Final = 1
K_CONSUME: Final = 2
K_COMPLETE: Final = 3
K_RESPONSE: Final = 4  # a response that answers no traced request
K_FRONT_CONSUME: Final = 5
K_SET_REQ_PROD: Final = 6  # hostile frontend, seen in a capture's snapshots
K_MUTATE: Final = 7
_MUTABLE: Final = ("operation", "sector_number", "nr_sectors", "nr_segments", "id")
# Sector numbers at or past 2**62 lie beyond any disk (512 B * 2**62 is 2 ZiB) and would
# overflow the model's i64 sector arithmetic (sector + nr_sectors): treated as unknown.
_MAX_SECTOR: Final = 1 << 62
MISSING: Final = -(1 << 62)  # a null in ReplayInput._arrays' int64 columns

# control kind -> model input; xenbus_state, ring_map/unmap, ref_get/put, disconnect_done
# and shutdown_done are what a *logic* does, so replay lets each logic redo them.
CONTROL_INPUTS: Final[dict[str, str]] = {
    "disconnect_request": "Disconnect",
    "unbind": "Unbind",
    "bind": "Bind",
    "suspend": "Suspend",
    "resume": "Resume",
    "domain_destroy": "DomainDestroy",
    "handoff": "Handoff",
}
_RESTART_KINDS: Final = ("resume", "bind", "connect", "ring_map", "handoff", "domain_create")
_CTRL_NAMES: Final = list(CONTROL_INPUTS.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Caveat:
    """Something the trace lacks that a logic needs; how replay dealt with it."""

    kind: str  # stable id: via-response, lost-records, unseen-entries, ...
    message: str
    count: int = 0
    ring: str | None = None
    t_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "count": self.count,
            "ring": self.ring,
            "t_ns": self.t_ns,
        }


@dataclass(slots=True, kw_only=True)
class ReplayInput:
    """A trace turned into model inputs, shared by every logic replayed against it.

    Columns, one row per input, time-ordered: ``kinds[i]`` (``K_*``), ``times[i]``,
    ``rings[i]`` (shared key objects) and the row's raw values ``cols = (a, b, c, d, e,
    idx, ref)``, seven lists (``args[i]`` is row ``i`` of them as a tuple, built on first
    use): for a submit (operation, sector, sectors, segments, id hint, ...); for a
    completion or an unanswered response (operation, status, ring index or None, -, id,
    ...); see :func:`build_input` for the rare kinds. ``refs[i]`` is, for
    a submit, the number of the traced request it submits; for a completion
    (``kinds[i] == K_COMPLETE``), the number of the request it completes (a re-issued
    request's completion refers to the original); else -1. Completions and unanswered
    responses are *templates* resolved by the engine against the logic's state.

    :attr:`events` is the same timeline as model input objects (None for a template),
    built on first use: the engine reads the columns, so a replay never pays for them.
    """

    kinds: list[int]
    refs: list[int]
    cols: tuple[list[Any], ...]  # a, b, c, d, e, idx, ref
    times: list[int]
    rings: list[RingKey]
    ring_params: dict[RingKey, tuple[int, int]]  # nr_ents, start idx
    caveats: list[Caveat] = field(default_factory=list)
    lost_windows: list[tuple[int, int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    _events: list[InputEvent | None] | None = field(default=None, repr=False)
    _args: list[tuple[Any, ...]] | None = field(default=None, repr=False)
    _plan: Plan | None = field(default=None, repr=False)
    # The columns as numpy arrays, kept by build_input for the plan (which otherwise
    # converts the lists): kind, ring (code), t, a, b, c, d, ref (int64, null: -2**62),
    # e (uint64, null: 0) and e_ok (not null); keys: the key object of each ring code.
    _arrays: dict[str, Any] | None = field(default=None, repr=False)

    def bulk_plan(self) -> Plan:
        """The input's steady windows (:class:`~blktrace_xen.replay.bulk_plan.Plan`),
        found on first use and shared by every logic."""
        if self._plan is None:
            from blktrace_xen.replay.bulk_plan import build_plan

            self._plan = build_plan(self)
            self._arrays = None  # the plan keeps what it needs of them
        return self._plan

    @property
    def args(self) -> list[tuple[Any, ...]]:
        """Row ``i`` of :attr:`cols` as a tuple ``(a, b, c, d, e, idx, ref)``. Built on first
        use: the engine reads the columns (zipping 7 columns of every row cost a fifth of
        :func:`build_input`)."""
        if self._args is None:
            self._args = list(zip(*self.cols, strict=True))
        return self._args

    @property
    def events(self) -> list[InputEvent | None]:
        """Row ``i`` as a model input event; None for a completion or response template."""
        if self._events is None:
            self._events = [self.event(i) for i in range(len(self.kinds))]
        return self._events

    def event(self, i: int) -> InputEvent | None:
        """Row ``i`` as a model input event (None for a completion or response template)."""
        kind = self.kinds[i]
        t = self.times[i]
        ring = self.rings[i]
        a, b, c, d, e, idx, ref = (col[i] for col in self.cols)
        if kind == K_SUBMIT:
            return FrontSubmit(
                t_ns=t,
                ring=ring,
                operation=a,
                sector_number=b,
                nr_sectors=c,
                nr_segments=d,
                id=e,
            )
        if kind == K_CONSUME:
            return BackConsume(t_ns=t, ring=ring)
        if kind == K_FRONT_CONSUME:
            return FrontConsume(t_ns=t, ring=ring)
        if kind == K_CONTROL:
            cls = _CTRL_CLASSES[a]
            if cls is Disconnect:
                return Disconnect(t_ns=t, ring=ring, side="front" if b else "back")
            ctrl: InputEvent = cls(t_ns=t, ring=ring)
            return ctrl
        if kind == K_SET_REQ_PROD:
            return FrontSetReqProd(t_ns=t, ring=ring, req_prod=b)
        if kind == K_MUTATE:
            # a: bit mask of the rewritten fields (_MUTABLE order); b, c, d, e, ref: the
            # values the slot held (sector, sectors, segments, id, operation)
            old = {
                "operation": ref,
                "sector_number": b,
                "nr_sectors": c,
                "nr_segments": d,
                "id": e,
            }
            fields = {n: old[n] for k, n in enumerate(_MUTABLE) if a >> k & 1}
            return FrontMutateSlot(t_ns=t, ring=ring, idx=idx, **fields)
        return None  # K_COMPLETE / K_RESPONSE: resolved against the logic's state


_CTRL_BY_NAME: Final[dict[str, Callable[..., InputEvent]]] = {
    "Disconnect": Disconnect,
    "Unbind": Unbind,
    "Bind": Bind,
    "Suspend": Suspend,
    "Resume": Resume,
    "DomainDestroy": DomainDestroy,
    "Handoff": Handoff,
}
_CTRL_CLASSES: Final = [_CTRL_BY_NAME[name] for name in _CTRL_NAMES]  # by code (column a)


def _ring_label(domid: int, vdev: int, queue: int) -> str:
    return f"vbd/{domid}/{vdev}/q{queue}"


def _reissues(requests: pl.DataFrame, control: pl.DataFrame, io: pl.DataFrame) -> np.ndarray:
    """canon[i]: the traced request that request ``i`` re-issues, or ``i`` itself.

    After a resume a recovering frontend publishes again what was outstanding at the
    suspend. Those pushes are the logic's doing (the model re-issues at ``Resume``), so
    replay must not submit them as new guest I/O. Each resume's first pushes are matched
    to the requests outstanding at the suspend before it: by id, else by sector, else by
    (operation, sectors, segments), as a frontend may shadow some fields and not others
    (seed 003). Matching stops at the first push that matches nothing: new guest I/O.
    """
    n = requests.height
    canon = np.arange(n, dtype=np.int64)
    resumes = control.filter(pl.col("kind") == "resume")
    if resumes.height == 0 or n == 0:
        return canon
    suspends = control.filter(pl.col("kind") == "suspend")
    answered = io.select(*RING, "req_ns", "id", "rsp_ns")
    req = (
        requests.with_row_index("_i")
        .join(
            answered,
            left_on=[*RING, "ns", "id"],
            right_on=[*RING, "req_ns", "id"],
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
        .unique(subset="_i", keep="first", maintain_order=True)
    )
    done_at: dict[int, int | None] = dict(
        zip(req["_i"].to_list(), req["rsp_ns"].to_list(), strict=True)
    )
    rows = requests.select(
        *RING, "ns", "id", "operation", "sector_number", "nr_sectors", "nr_segments"
    ).rows()
    by_ring: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(rows):
        by_ring.setdefault(r[:3], []).append(i)
    for res in resumes.select(*RING, "ns").unique(subset=[*RING, "ns"], maintain_order=True).rows():
        key, t_res = res[:3], res[3]
        idxs = by_ring.get(key) if key[1] is not None else None
        if not idxs:
            continue
        ring_sus = suspends.filter(
            (pl.col("domid") == key[0])
            & (pl.col("vdev") == key[1])
            & (pl.col("queue").fill_null(key[2]) == key[2])
            & (pl.col("ns") <= t_res)
        )
        t_sus = int(ring_sus["ns"].max()) if ring_sus.height else t_res  # type: ignore[arg-type]
        pending = [
            i
            for i in idxs
            if rows[i][3] <= t_sus
            and canon[i] == i
            and ((d := done_at.get(i)) is None or d > t_sus)
        ]
        later = [i for i in idxs if rows[i][3] >= t_res]
        for j in later:
            if not pending:
                break
            r = rows[j]
            match = next((i for i in pending if rows[i][4] == r[4]), None)
            if match is None:
                match = next((i for i in pending if rows[i][6] == r[6]), None)
            if match is None:
                match = next((i for i in pending if (rows[i][5], rows[i][7]) == (r[5], r[7])), None)
            if match is None or rows[match][5] != r[5]:
                break
            canon[j] = match
            pending.remove(match)
    return canon


def _expand_domain_wide(control: pl.DataFrame, known: pl.DataFrame) -> pl.DataFrame:
    """Domain-wide rows (vdev or queue null) become one row per known ring of the domain."""
    wide = control.filter(pl.col("vdev").is_null() | pl.col("queue").is_null())
    exact = control.filter(pl.col("vdev").is_not_null() & pl.col("queue").is_not_null())
    if wide.height == 0:
        return exact
    joined = wide.drop("vdev", "queue").join(known, on="domid", how="inner")
    joined = joined.join(
        wide.select("domid", pl.col("vdev").alias("_v"), pl.col("queue").alias("_q")).unique(),
        on="domid",
        how="left",
    ).filter(
        (pl.col("_v").is_null() | (pl.col("_v") == pl.col("vdev")))
        & (pl.col("_q").is_null() | (pl.col("_q") == pl.col("queue")))
    )
    return pl.concat([exact, joined.select(exact.columns)]).sort("ns", maintain_order=True)


def _control_events(streams: Streams, known: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The control inputs (and the rings' kicks after a bind); the number of them that
    were inferred from xenstore states."""
    ctl = streams.control.filter(pl.col("kind").cast(pl.String).is_in(list(CONTROL_INPUTS)))
    ctl = _expand_domain_wide(ctl, known)
    # The hypervisor cannot tell a migration from a destroy: both remove the domain. A
    # domain removed while its ring is suspended (no resume since) is the source of a
    # migration, so its rings see a Handoff; otherwise a DomainDestroy.
    phase = (
        pl.when(pl.col("kind") == "suspend")
        .then(pl.lit(1))
        .when(pl.col("kind") == "resume")
        .then(pl.lit(0))
        .otherwise(None)
        .forward_fill()
        .over(RING)
        .fill_null(0)
    )
    ctl = ctl.with_columns(
        pl.when((pl.col("kind") == "domain_destroy") & (phase == 1))
        .then(pl.lit("Handoff"))
        .otherwise(pl.col("kind").cast(pl.String).replace_strict(CONTROL_INPUTS))
        .alias("_name"),
        pl.when(pl.col("side") == "front")
        .then(pl.lit("front"))
        .otherwise(pl.lit("back"))
        .alias("_side"),
    )
    # An event both ends record (suspend, resume) or both inputs saw (a trace and a
    # capture) appears twice: keep the first of a run of equal kinds on one ring.
    ctl = ctl.with_columns(pl.col("_name").shift(1).over(RING).alias("_prev")).filter(
        pl.col("_prev").is_null() | (pl.col("_prev") != pl.col("_name"))
    )
    traced = {
        (int(d), int(v), int(q))
        for d, v, q in ctl.select(RING).unique().rows()
        if None not in (d, v, q)  # domain-wide rows name no ring
    }
    inferred = _xenstore_controls(streams, traced)
    if inferred.height:
        ctl = pl.concat(
            [
                ctl.select(*RING, "ns", "_name", "_side"),
                inferred.select(
                    *RING,
                    "ns",
                    "_name",
                    pl.when(pl.col("_front") == 1)
                    .then(pl.lit("front"))
                    .otherwise(pl.lit("back"))
                    .alias("_side"),
                ),
            ]
        ).sort("ns", maintain_order=True)
    # A backend that is bound again looks at the ring at once (blkback's connect kicks its
    # thread); when that finds nothing it may consume, it leaves no trace record, but it
    # is where BACK_RING_INIT under a live frontend halts (seed 002).
    kicks = ctl.filter(pl.col("_name") == "Bind").select(
        *RING, pl.col("ns").alias("t"), pl.lit(K_CONSUME, pl.UInt8).alias("kind")
    )
    return pl.concat(
        [
            ctl.select(
                *RING,
                pl.col("ns").alias("t"),
                pl.lit(K_CONTROL, pl.UInt8).alias("kind"),
                pl.col("_name")
                .replace_strict({n: i for i, n in enumerate(_CTRL_NAMES)}, return_dtype=pl.Int64)
                .alias("a"),
                (pl.col("_side") == "front").cast(pl.Int64).alias("b"),
            ),
            kicks,
        ],
        how="diagonal",
    ), inferred.height


_XB_CONNECTED: Final = 4
_XB_INITIALISING: Final = 1
_XB_CLOSING: Final = (5, 6)


def _xenstore_controls(streams: Streams, traced: set[tuple[int, int, int]]) -> pl.DataFrame:
    """Control inputs read from the xenbus states a ring capture saw, for rings whose
    control events were not traced (a capture has xenstore lines, not blkif events).

    frontend Connected -> Initialising: ``Suspend``; back to Connected: ``Resume`` (the
    backend's own state changes during a resume are its doing). Frontend Closing/Closed:
    ``Disconnect(front)``. Backend Connected -> Closing/Closed: ``Unbind`` when it is
    Connected again later with the frontend still connected (that is the ``Bind``), else
    ``Disconnect(back)``. A guess, said in the caveat ``control-from-xenstore``.
    """
    # A state change that names no domain, device or time cannot be placed on a
    # ring's timeline (hostile or damaged input): it is not replayed.
    xs = streams.control.filter(
        (pl.col("kind") == "xenbus_state")
        & pl.all_horizontal(pl.col("domid", "vdev", "ns", "value").is_not_null())
    ).select(*RING, "ns", "side", "value")
    rows: list[tuple[int, int, int, int, str, int]] = []
    by_ring: dict[tuple[int, int, int], list[tuple[int, str, int]]] = {}
    for d, v, q, ns, side, value in xs.rows():
        key = (int(d), int(v), int(q or 0))
        if key in traced:
            continue
        by_ring.setdefault(key, []).append((int(ns), str(side), int(value)))
    for key, changes in by_ring.items():
        front, back = _XB_CONNECTED, _XB_CONNECTED
        pending_stop: int | None = None  # index into rows of a back stop not yet named
        for ns, side, value in changes:
            if side == "front":
                if front == _XB_CONNECTED and value == _XB_INITIALISING:
                    rows.append((*key, ns, "Suspend", 0))
                elif front == _XB_INITIALISING and value == _XB_CONNECTED:
                    rows.append((*key, ns, "Resume", 0))
                elif front == _XB_CONNECTED and value in _XB_CLOSING:
                    rows.append((*key, ns, "Disconnect", 1))
                front = value
            elif side == "back" and front == _XB_CONNECTED:
                if back == _XB_CONNECTED and value in _XB_CLOSING:
                    pending_stop = len(rows)
                    rows.append((*key, ns, "Disconnect", 0))
                elif back in _XB_CLOSING and value == _XB_CONNECTED and pending_stop is not None:
                    rows[pending_stop] = (*rows[pending_stop][:4], "Unbind", 0)
                    rows.append((*key, ns, "Bind", 0))
                    pending_stop = None
                back = value
    return pl.DataFrame(
        rows,
        schema={
            "domid": pl.UInt16,
            "vdev": pl.UInt32,
            "queue": pl.UInt16,
            "ns": pl.Int64,
            "_name": pl.String,
            "_front": pl.Int64,
        },
        orient="row",
    )


def build_input(streams: Streams) -> ReplayInput:
    """Turn ``streams`` into the inputs every logic is replayed with."""
    requests = streams.requests
    responses = streams.responses
    io = streams.io
    caveats: list[Caveat] = []
    counts: dict[str, int] = {}

    known = pl.concat(
        [requests.select(RING), responses.select(RING), streams.rings.select(RING)]
    ).unique(maintain_order=True)
    known = known.filter(pl.all_horizontal(pl.col(RING).is_not_null()))

    canon = _reissues(requests, streams.control, io)
    req = requests.with_columns(
        pl.Series("_i", np.arange(requests.height, dtype=np.int64)),
        pl.Series("_canon", canon),
    )
    reissued = int((canon != np.arange(requests.height)).sum())
    counts["reissues_recognised"] = reissued
    full = pl.col("seen") == "full"
    own = pl.col("_i") == pl.col("_canon")

    via = req.filter(~full & own)
    if via.height:
        caveats.append(
            Caveat(
                kind="via-response",
                count=via.height,
                message=(
                    f"{via.height} request(s) were seen only through their response (a polled "
                    "capture): replayed as submitted when first seen, without a sector "
                    "range, so the disk-content oracle cannot judge them"
                ),
            )
        )
    # A request whose record did not carry its operation or id cannot be submitted
    # without inventing one; nor can its response be replayed (below).
    playable = pl.col("operation").is_not_null() & pl.col("id").is_not_null()
    # A sector range the trace did not carry, or beyond any disk (the model's i64
    # arithmetic), is replayed as unknown, as for a request seen via its response.
    ranged = (
        full
        & pl.col("sector_number").is_not_null()
        & pl.col("nr_sectors").is_not_null()
        & (pl.col("sector_number") < _MAX_SECTOR)
        & (pl.col("nr_sectors") < _MAX_SECTOR)
    )
    n_unranged = req.filter(own & playable & full & ~ranged).height
    if n_unranged:
        caveats.append(
            Caveat(
                kind="sector-unknown",
                count=n_unranged,
                message=(
                    f"{n_unranged} request(s) have no usable sector range (not traced, or "
                    "beyond any disk): replayed without one, so the disk-content oracle "
                    "cannot judge them"
                ),
            )
        )
    submits = req.filter(own & playable).select(
        *RING,
        pl.col("ns").alias("t"),
        pl.lit(K_SUBMIT, pl.UInt8).alias("kind"),
        pl.col("operation").cast(pl.Int64).alias("a"),
        pl.when(ranged).then(pl.col("sector_number")).otherwise(0).cast(pl.Int64).alias("b"),
        pl.when(ranged).then(pl.col("nr_sectors")).otherwise(0).cast(pl.Int64).alias("c"),
        pl.col("nr_segments").fill_null(1).cast(pl.Int64).alias("d"),
        pl.col("id").alias("e"),  # u64: blkif ids are opaque 64-bit values
        pl.col("_i").alias("ref"),
    )

    # Responses: the ones io pairs with a request complete that request (its canonical
    # number); the rest answer nothing traced and are resolved at replay time.
    paired = io.filter(pl.col("rsp_ns").is_not_null()).join(
        req.filter(playable).select(
            *RING, "session", "id", pl.col("ns").alias("req_ns"), "idx", "_i", "_canon"
        ),
        left_on=[*RING, "session", "id", "req_ns", "req_idx"],
        right_on=[*RING, "session", "id", "req_ns", "idx"],
        how="inner",
        nulls_equal=True,
    )
    completes = paired.select(
        *RING,
        pl.col("rsp_ns").alias("t"),
        pl.lit(K_COMPLETE, pl.UInt8).alias("kind"),
        pl.col("operation").cast(pl.Int64).alias("a"),
        pl.col("status").fill_null(0).cast(pl.Int64).alias("b"),
        pl.col("rsp_idx").cast(pl.Int64).alias("c"),
        pl.col("id").alias("e"),
        pl.col("_canon").alias("ref"),
    )
    unpaired = responses.join(
        paired.select(*RING, pl.col("rsp_ns").alias("ns"), pl.col("rsp_idx").alias("idx")),
        on=[*RING, "ns", "idx"],
        how="anti",
        nulls_equal=True,
    )
    loose = unpaired.filter(playable).select(
        *RING,
        pl.col("ns").alias("t"),
        pl.lit(K_RESPONSE, pl.UInt8).alias("kind"),
        pl.col("operation").cast(pl.Int64).alias("a"),
        pl.col("status").fill_null(0).cast(pl.Int64).alias("b"),
        pl.col("idx").cast(pl.Int64).alias("c"),
        pl.col("id").alias("e"),
    )
    n_unplayable = req.filter(own & ~playable).height + unpaired.height - loose.height
    if n_unplayable:
        caveats.append(
            Caveat(
                kind="unplayable",
                count=n_unplayable,
                message=(
                    f"{n_unplayable} request(s) or response(s) whose records did not carry "
                    "an operation or id: not replayed"
                ),
            )
        )
    counts["responses_unpaired"] = loose.height

    # The backend thread ran at each traced consume. A capture cannot see consumes
    # (req_cons is private): a request it saw answered was consumed by then, and the
    # earliest moment is its publication. Re-issued requests count too: the thread ran.
    consumed = req.select(
        *RING,
        pl.coalesce(
            pl.col("consumed_ns"),
            pl.when(pl.col("_i").is_in(paired["_i"].implode())).then(pl.col("ns")),
        ).alias("t"),
        pl.col("consumed_ns").is_null().alias("_guess"),
    ).filter(pl.col("t").is_not_null())
    n_guess = int(consumed["_guess"].sum())
    if n_guess:
        caveats.append(
            Caveat(
                kind="consume-not-traced",
                count=n_guess,
                message=(
                    f"{n_guess} answered request(s) have no traced consume: replayed as "
                    "consumed the moment they were published"
                ),
            )
        )
    consumes = consumed.unique(subset=[*RING, "t"], maintain_order=True).select(
        *RING, "t", pl.lit(K_CONSUME, pl.UInt8).alias("kind")
    )
    # A capture cannot see the frontend consume either (rsp_cons is private): a response
    # without a traced consume is read by the frontend the moment it is published.
    front_consumes = (
        responses.select(*RING, pl.coalesce("consumed_ns", "ns").alias("t"))
        .unique(maintain_order=True)
        .with_columns(pl.lit(K_FRONT_CONSUME, pl.UInt8).alias("kind"))
    )
    n_unconsumed = responses.filter(pl.col("consumed_ns").is_null()).height
    if n_unconsumed:
        caveats.append(
            Caveat(
                kind="front-consume-not-traced",
                count=n_unconsumed,
                message=(
                    f"{n_unconsumed} response(s) have no traced frontend consume: replayed "
                    "as read by the frontend the moment they were published"
                ),
            )
        )
    control, n_inferred = _control_events(streams, known)
    hostile = _hostile(streams, requests)
    n_set = hostile[0].filter(pl.col("kind") == K_SET_REQ_PROD).height
    n_mut = hostile[1].height
    if n_set or n_mut:
        caveats.append(
            Caveat(
                kind="hostile-from-capture",
                count=n_set + n_mut,
                message=(
                    f"{n_mut} request slot rewrite(s) and {n_set} implausible req_prod(s) "
                    "seen in the capture's snapshots: re-enacted at the snapshot that showed "
                    "them; a rewrite's new values are not known to replay, so the act is "
                    "judged, not what the backend made of the new values"
                ),
            )
        )
    if n_inferred:
        caveats.append(
            Caveat(
                kind="control-from-xenstore",
                count=n_inferred,
                message=(
                    f"{n_inferred} control event(s) inferred from xenbus state changes "
                    "(no traced control for the ring): a backend leaving Connected is "
                    "read as an unbind when it connects again, else as a disconnect"
                ),
            )
        )

    cols: dict[str, Any] = {
        "domid": pl.UInt16,
        "vdev": pl.UInt32,
        "queue": pl.UInt16,
        "t": pl.Int64,
        "kind": pl.UInt8,
        "a": pl.Int64,
        "b": pl.Int64,
        "c": pl.Int64,
        "d": pl.Int64,
        "e": pl.UInt64,
        "ref": pl.Int64,
        "idx": pl.Int64,
    }
    parts = [
        f.with_columns(
            [pl.lit(None, dt).alias(c) for c, dt in cols.items() if c not in f.columns]
        ).select([pl.col(c).cast(dt) for c, dt in cols.items()])
        for f in (control, submits, consumes, completes, loose, front_consumes, *hostile)
    ]
    timeline = (
        pl.concat(parts)
        .filter(pl.col("t").is_not_null() & pl.col("vdev").is_not_null())
        .filter(pl.col("domid").is_not_null())  # a row with no ring cannot reach a model
        .with_columns(pl.col("queue").fill_null(0))
        .sort(["t", "kind"], maintain_order=True)
    )
    inp = _objects(timeline)
    inp.caveats = caveats + _trace_caveats(streams, requests)
    inp.lost_windows = [
        (int(a if a is not None else b), int(b))
        for a, b in streams.lost.select("first_ns", "ns").rows()
        if b is not None
    ]
    inp.ring_params = _ring_params(streams, known)
    inp.counts = {**counts, "events": len(inp.kinds)}
    return inp


def _objects(tl: pl.DataFrame) -> ReplayInput:
    """The timeline as columns: no per-row Python loop (event objects are built on demand)."""
    if tl.height == 0:
        return ReplayInput(kinds=[], refs=[], cols=([],) * 7, times=[], rings=[], ring_params={})
    # One shared key object per ring: the engine compares keys with ``is``.
    codes = tl.select(pl.struct(RING).rank("dense").cast(pl.Int64) - 1)[:, 0]
    firsts = tl.select(*RING, codes.alias("_c")).unique("_c").sort("_c")
    keys: list[RingKey] = [(int(d), int(v), int(q)) for d, v, q, _ in firsts.rows()]
    # One ring: a list repeat instead of a lookup per row.
    rings = keys * tl.height if len(keys) == 1 else list(map(keys.__getitem__, codes.to_list()))
    kind = pl.col("kind")
    refs = tl.select(pl.when(kind.is_in([K_SUBMIT, K_COMPLETE])).then(pl.col("ref")).otherwise(-1))[
        :, 0
    ]
    inp = ReplayInput(
        kinds=tl["kind"].to_list(),
        refs=refs.to_list(),
        cols=tuple(tl[c].to_list() for c in ("a", "b", "c", "d", "e", "idx", "ref")),
        times=tl["t"].to_list(),
        rings=rings,
        ring_params={},
    )
    inp._arrays = {
        "kind": tl["kind"].cast(pl.Int64).to_numpy(),
        "ring": codes.to_numpy(),
        "keys": keys,
        "t": tl["t"].to_numpy(),
        "ref": refs.cast(pl.Int64).to_numpy(),
        **{c: tl[c].fill_null(MISSING).to_numpy() for c in ("a", "b", "c", "d")},
        "e": tl["e"].fill_null(0).to_numpy(),
        "e_ok": tl["e"].is_not_null().to_numpy(),
    }
    return inp


def _hostile(streams: Streams, requests: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hostile frontend acts a capture shows: (bogus req_prod rows, slot rewrite rows).

    A snapshot where req_prod - rsp_prod > ring size starts an implausible episode: a
    ``FrontSetReqProd`` at that snapshot, and the backend, notified, looks at the ring
    1 ns later. A ``mutations`` row becomes a ``FrontMutateSlot`` of the listed fields,
    with the values the slot held before (the new ones are not in the streams).
    """
    snaps = streams.snapshots
    bad = ((pl.col("req_prod").cast(pl.Int64) - pl.col("rsp_prod").cast(pl.Int64)) % (1 << 32)) > (
        pl.col("nr_ents").cast(pl.Int64)
    )
    starts = (
        snaps.with_columns(bad.alias("_bad"))
        .with_columns(pl.col("_bad").shift(1).over(RING).fill_null(False).alias("_was"))
        .filter(pl.col("_bad") & ~pl.col("_was"))
    )
    # Only a req_prod ahead is the frontend's act; rsp_prod ahead is the backend's.
    req_ahead = (
        (pl.col("req_prod").cast(pl.Int64) - pl.col("rsp_prod").cast(pl.Int64)) % (1 << 32)
    ) < (1 << 31)
    sets = starts.filter(req_ahead).select(
        *RING,
        pl.col("ns").alias("t"),
        pl.lit(K_SET_REQ_PROD, pl.UInt8).alias("kind"),
        pl.col("req_prod").cast(pl.Int64).alias("b"),
    )
    kicks = starts.select(
        *RING, (pl.col("ns") + 1).alias("t"), pl.lit(K_CONSUME, pl.UInt8).alias("kind")
    )
    muts = streams.mutations
    if muts.height == 0:
        return pl.concat([sets, kicks], how="diagonal"), pl.DataFrame()
    # Only a slot whose every rewritable field is known (and fits the model) is re-enacted.
    whole = pl.all_horizontal(pl.col(_MUTABLE).is_not_null()) & (
        pl.col("sector_number") < _MAX_SECTOR
    )
    held = (
        requests.filter(pl.col("idx").is_not_null() & whole)
        .select(
            *RING,
            pl.col("idx").cast(pl.Int64),
            pl.col("ns").alias("req_ns"),
            "operation",
            "sector_number",
            "nr_sectors",
            "nr_segments",
            "id",
        )
        .sort("req_ns")
    )
    mask = pl.lit(0, pl.Int64)
    for k, name in enumerate(_MUTABLE):
        mask = mask + pl.col("fields").str.contains(rf"\b{name}\b").cast(pl.Int64) * (1 << k)
    rows = (
        muts.with_columns(pl.col("idx").cast(pl.Int64), mask.alias("_mask"))
        .sort("ns")
        .join_asof(
            held,
            left_on="ns",
            right_on="req_ns",
            by=[*RING, "idx"],
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("req_ns").is_not_null() & (pl.col("_mask") > 0))
    )
    mut = rows.select(
        *RING,
        pl.col("ns").alias("t"),
        pl.lit(K_MUTATE, pl.UInt8).alias("kind"),
        pl.col("_mask").alias("a"),
        pl.col("sector_number").cast(pl.Int64).alias("b"),
        pl.col("nr_sectors").cast(pl.Int64).alias("c"),
        pl.col("nr_segments").cast(pl.Int64).alias("d"),
        pl.col("id").alias("e"),
        pl.col("operation").cast(pl.Int64).alias("ref"),
        "idx",
    )
    return pl.concat([sets, kicks], how="diagonal"), mut


def _ring_params(streams: Streams, known: pl.DataFrame) -> dict[RingKey, tuple[int, int]]:
    """Per ring: entries (from ``rings``, default 32) and the index the trace starts at."""
    nr = {
        (int(r[0]), int(r[1]), int(r[2])): int(r[3])
        for r in streams.rings.select(*RING, "nr_ents").rows()
        if None not in r
    }
    first = (
        streams.requests.filter(
            pl.col("idx").is_not_null()
            & (pl.col("seen") == "full")
            & pl.all_horizontal(pl.col(RING).is_not_null())
        )
        .group_by(RING, maintain_order=True)
        .agg(pl.col("idx").first())
    )
    start = {(int(r[0]), int(r[1]), int(r[2])): int(r[3]) for r in first.rows()}
    out: dict[RingKey, tuple[int, int]] = {}
    for r in known.rows():
        key = (int(r[0]), int(r[1]), int(r[2]))
        out[key] = (nr.get(key, 32), start.get(key, 0))
    return out


def _earliest(ns: pl.Series) -> int | None:
    """The earliest time of a column that may hold nulls (numpy would give NaN)."""
    low = ns.min()
    return None if low is None else int(str(low))


def _trace_caveats(streams: Streams, requests: pl.DataFrame) -> list[Caveat]:
    out: list[Caveat] = []
    lost = streams.lost
    if lost.height:
        n = int(lost["count"].sum() or 0)
        out.append(
            Caveat(
                kind="lost-records",
                count=n,
                t_ns=_earliest(lost["ns"]),
                message=(
                    f"{n} trace record(s) lost in {lost.height} window(s): events in those "
                    "windows are missing from the replay; violations inside them are flagged"
                ),
            )
        )
    gaps = streams.gaps
    if gaps.height:
        n = int(gaps["count"].sum() or 0)
        out.append(
            Caveat(
                kind="unseen-entries",
                count=n,
                t_ns=_earliest(gaps["ns"]),
                message=(
                    f"{n} ring entr(ies) were overwritten between two snapshots and never "
                    "seen: those requests/responses are not replayed"
                ),
            )
        )
    jumps = streams.control.filter(pl.col("kind") == "index_discontinuity")
    restarts = streams.control.filter(pl.col("kind").cast(pl.String).is_in(_RESTART_KINDS))
    for r in jumps.select(*RING, "ns", "detail").rows():
        key, t = r[:3], r[3]
        prev = requests.filter(
            (pl.col("domid") == key[0])
            & (pl.col("vdev") == key[1])
            & (pl.col("queue") == key[2])
            & (pl.col("ns") < t)
        )
        t_prev = int(prev["ns"].max()) if prev.height else -(1 << 62)  # type: ignore[arg-type]
        seen = restarts.filter(
            (pl.col("domid") == key[0])
            & (pl.col("vdev").is_null() | (pl.col("vdev") == key[1]))
            & (pl.col("ns") >= t_prev)
            & (pl.col("ns") <= t)
        )
        if seen.height:
            continue  # the restart was traced: nothing to infer
        out.append(
            Caveat(
                kind="inferred-control",
                ring=_ring_label(*key),
                t_ns=t,
                count=1,
                message=(
                    f"{_ring_label(*key)}: {r[4]} at {t} ns with no traced resume, bind or "
                    "connect: a control event the trace did not record; replay does not "
                    "invent it, so the logics see the old ring continue"
                ),
            )
        )
    return out


__all__ = ["Caveat", "ReplayInput", "build_input"]
