"""Run one logic over a :class:`~blktrace_xen.replay.inputs.ReplayInput`.

The loop feeds the pre-built events to a fresh :class:`~blktrace_xen.model.system.Model`.
Two kinds of step depend on what the logic did before, so they are resolved here:

* a **completion** of traced request *r* becomes ``BackComplete(seq=s)`` where *s* is the
  sequence number the model gave *r* when it was submitted (a logic may have refused a
  submission, which shifts later numbers). If no backend of this logic holds *s* (it never
  consumed it, or threw it away), there was no disk I/O to finish: the step is skipped
  and counted.
* a traced **response that answers no traced request** is skipped when this logic has
  already produced a response at that ring index itself (a backend rejecting a garbage
  slot does so at once); else it completes the backend request in flight with that id
  (a slot the backend read as a request); else it is a response the backend invented
  (``BackRespond``, a misbehaving backend).

An event the logic's state machines reject (``FrontendProtocolError``: e.g. a consume
on a ring this logic already tore down) leaves the model unchanged; it is skipped and
reported, never hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blktrace_xen.errors import FrontendProtocolError
from blktrace_xen.model.backend import (
    _COMPLETE_FROM_CONNECTED,
    S_CONNECTED,
    S_DRAINING,
    Backend,
)
from blktrace_xen.model.backend import (
    _CONSUME_FROM_CONNECTED as _BACK_CONSUME_ALLOWED,
)
from blktrace_xen.model.disk import Data
from blktrace_xen.model.disk_deferred import C_AK, C_AP, C_FL, C_RD, C_VR, WIDTH, DeferredDiskOracle
from blktrace_xen.model.events import (
    BackComplete,
    BackRespond,
    RingKey,
    Violation,
)
from blktrace_xen.model.frontend import _CONSUME_FROM_CONNECTED as _FRONT_CONSUME_ALLOWED
from blktrace_xen.model.frontend import F_CONNECTED, ODD_STOP, Frontend
from blktrace_xen.model.logic import BackendLogic, FrontendLogic
from blktrace_xen.model.ring import (
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_INDIRECT,
    BLKIF_OP_READ,
    BLKIF_OP_WRITE,
    BLKIF_RSP_OKAY,
    IO_READ,
    IO_WRITE,
    MASK32,
    Req,
    RspSlot,
    io_kind,
)
from blktrace_xen.model.system import Model, RingSystem, RunResult
from blktrace_xen.replay.bulk import apply as bulk_apply
from blktrace_xen.replay.bulk import is_reference_front
from blktrace_xen.replay.bulk import ready as bulk_ready
from blktrace_xen.replay.inputs import (
    K_COMPLETE,
    K_CONSUME,
    K_FRONT_CONSUME,
    K_RESPONSE,
    K_SUBMIT,
    ReplayInput,
)

MAX_SKIPPED_KEPT = 50
_ILLEGAL = "illegal in this logic's state"
# What a skipped row is called in the report (rows of other kinds: their event's class).
_EVENT_NAMES = {
    K_SUBMIT: "FrontSubmit",
    K_CONSUME: "BackConsume",
    K_FRONT_CONSUME: "FrontConsume",
    K_COMPLETE: "response",
    K_RESPONSE: "response",
}


@dataclass(slots=True, kw_only=True)
class Skipped:
    t_ns: int
    ring: str
    event: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"t_ns": self.t_ns, "ring": self.ring, "event": self.event, "reason": self.reason}


@dataclass(slots=True, kw_only=True)
class EngineResult:
    result: RunResult
    skipped: list[Skipped] = field(default_factory=list)  # the first MAX_SKIPPED_KEPT
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    fed: int = 0
    elapsed_s: float = 0.0
    completed_at_end: int = 0
    end_ns: int = 0
    bulk_events: int = 0  # of ``fed``: replayed in steady windows (replay.bulk)

    def outcome(self) -> list[Any]:
        """Everything a replay decided, as plain values (timing left out): two runs that
        must agree (before/after a change, inline or not) compare these."""
        res = self.result
        return [
            [repr(v) for v in res.violations],
            sorted((k, repr(f)) for k, f in res.rings.items()),
            repr(res.disk),
            sorted(res.counts.items()),
            [repr(s) for s in self.skipped],
            sorted(self.skipped_by_reason.items()),
            self.fed,
            self.completed_at_end,
            self.end_ns,
        ]


def _id_holder(sys: RingSystem, rid: int) -> bool:
    return any(be.find(rid, None) is not None for be in sys.backends)


def run_logic(
    inp: ReplayInput,
    *,
    backend: str | BackendLogic,
    frontend: str | FrontendLogic,
    verify_data: bool = True,
    complete_at_end: bool = True,
    inline: bool = True,
    bulk: bool = True,
) -> EngineResult:
    """Replay ``inp`` under one backend/frontend logic pair.

    ``complete_at_end``: disk I/O this logic still has in flight when the trace ends is
    completed 1 ns after the last traced event, in issue order (see
    :func:`_complete_at_end`).

    ``inline=False`` sends every event through its machine's method instead of the
    engine's copies of their common paths: the same result, slower; the tests compare
    the two so that the copies cannot drift from the machines. ``bulk=False`` (implied by
    ``inline=False``) replays the steady windows (:mod:`blktrace_xen.replay.bulk`) event
    by event too: the same result again.
    """
    # Verdicts are read at the end, so the disk oracle may judge in bulk (same violations).
    model = Model(
        backend=backend,
        frontend=frontend,
        verify_data=verify_data,
        record_actions=False,
        disk_mode="deferred",
    )
    # Each ring starts at the geometry and index the trace shows for it.
    for key, (nr_ents, start) in inp.ring_params.items():
        model.nr_ents = nr_ents
        model.start_idx = start
        model.ring(key)
    seq_box = model.seq
    # Traced request number -> the seq this logic gave it (-1: not submitted). A list:
    # the numbers are row numbers of the trace's requests, and two dict operations per
    # I/O cost more than the list.
    seq_of = [-1] * (max(inp.refs, default=-1) + 1)
    skipped: list[Skipped] = []
    by_reason: dict[str, int] = {}
    feed = model.feed
    kinds = inp.kinds
    refs = inp.refs
    # The row's raw values, by column (see ReplayInput): a, b, c, d, e.
    col_a, col_b, col_c, col_d, col_e = inp.cols[:5]
    rings = inp.rings
    times = inp.times

    def skip(i: int, event: str, reason: str, detail: str) -> None:
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if len(skipped) < MAX_SKIPPED_KEPT:
            key = rings[i]
            skipped.append(
                Skipped(
                    t_ns=times[i],
                    ring=f"vbd/{key[0]}/{key[1]}/q{key[2]}",
                    event=event,
                    reason=f"{reason}: {detail}" if detail else reason,
                )
            )

    t0 = time.perf_counter()
    fed = 0
    # Model.feed inlined, as model.system.run does, on the input's columns (no event
    # objects): the ring's machines are looked up only when the ring changes (the ring
    # keys are shared objects, so `is` suffices). The four frequent inputs run the common
    # path of their machine's method here, in one loop (a call and the method's set-up
    # per event were a third of a replay); anything unusual calls the method itself, before
    # changing any state, so the result is the same. Only objects the machines never
    # replace are kept across events; everything a logic's hook may change is read again.
    last_key: object = None
    handlers: dict[type, Callable[[Any], None]] = {}
    backends: list[Backend] = []
    fe: Frontend  # set with the first ring
    sys: RingSystem
    ref_front = False  # the ring's frontend logic is LinuxBlkfront's log/retire: inlined
    violations = model.violations
    disk = model.disk
    dlog = disk.log if isinstance(disk, DeferredDiskOracle) else None
    dctx = disk.ctx if isinstance(disk, DeferredDiskOracle) else []
    dbase = 0  # records before dlog (DeferredDiskOracle.base): moves with each bulk window
    new_req = object.__new__
    ring_state: dict[object, tuple[RingSystem, Any, list[Backend], Frontend, bool]] = {}
    # Steady windows (replay.bulk_plan) are replayed in one step where this logic is
    # ready for them (replay.bulk), the rows between them one by one: ``stops`` are the
    # rows where a window may start, with its end and its rings.
    stops = _stops(inp) if bulk and inline else []
    plan = inp.bulk_plan() if stops else None
    bulk_events = 0
    n_rows = len(kinds)
    pos = 0
    next_stop = 0
    while True:
        stop, w_end, w_keys = stops[next_stop] if next_stop < len(stops) else (n_rows, 0, [])
        next_stop += 1
        i = pos - 1
        for kind, t, key in zip(kinds[pos:stop], times[pos:stop], rings[pos:stop], strict=True):
            i += 1
            if key is not last_key:
                # Rings may alternate every row: what a switch needs is kept per ring.
                per_ring = ring_state.get(key)
                if per_ring is None:
                    sys = model.ring(key)
                    per_ring = ring_state[key] = (
                        sys,
                        sys.handlers,
                        sys.backends,  # the RingSystem appends to this very list
                        sys.frontend,  # one per ring, for good
                        is_reference_front(sys.frontend.logic),
                    )
                sys, handlers, backends, fe, ref_front = per_ring
                last_key = key
            try:
                if kind == K_SUBMIT:
                    # Frontend.submit_io's path for a connected frontend with room on the ring.
                    ring = sys.ring
                    idx = fe.req_prod_pvt
                    nr_ents = ring.nr_ents
                    if (
                        not inline
                        or fe.state is not F_CONNECTED
                        or ((idx - fe.rsp_cons) & MASK32) >= nr_ents
                    ):
                        s = seq_box[0]
                        fe.submit_io(t, col_a[i], col_b[i], col_c[i], col_d[i], col_e[i])
                        if seq_box[0] != s:
                            seq_of[refs[i]] = s
                        fed += 1
                        continue
                    op, sector, nr = col_a[i], col_b[i], col_c[i]
                    seq = seq_box[0]
                    # Req(0, op, sector, nr, col_d[i], seq, 0) without the __init__ call.
                    sreq = new_req(Req)
                    sreq.id = 0
                    sreq.operation = op
                    sreq.sector_number = sector
                    sreq.nr_sectors = nr
                    sreq.nr_segments = col_d[i]
                    sreq.seq = seq
                    sreq.version = 0
                    sreq.garbage = False
                    sreq.indirect_op = None
                    want = col_e[i]
                    if ref_front:
                        # LinuxBlkfront.log
                        flogic = fe.logic
                        shadow = flogic.shadow  # type: ignore[attr-defined]
                        # (setdefault: the test and the store in one dict operation)
                        if want is not None and shadow.setdefault(want, sreq) is sreq:
                            rid = want
                        else:
                            free = flogic.free  # type: ignore[attr-defined]
                            rid = free.pop()
                            while rid in shadow:
                                rid = free.pop()
                            shadow[rid] = sreq
                    else:
                        rid = fe.logic.log(fe, sreq, want)
                    seq_box[0] = seq + 1
                    seq_of[refs[i]] = seq
                    sreq.id = rid
                    outstanding = fe.outstanding
                    if outstanding.setdefault(rid, sreq) is not sreq:
                        fe.reused_id(t, rid)  # reads the older request, still in place
                        outstanding[rid] = sreq
                    fe.answered.discard(rid)
                    if dlog is not None:
                        io = IO_WRITE if op == 1 else IO_READ if op == 0 else io_kind(op, None, nr)
                        if io:  # C_IR / C_IW are IO_READ / IO_WRITE
                            dlog += (io, seq, sector, nr, 0)
                    ring.slot_req[idx & ring.mask] = sreq
                    ring.slot_rsp[idx & ring.mask] = None
                    new = (idx + 1) & MASK32
                    fe.req_prod_pvt = new
                    ring.req_prod = new
                    if ((new - ring.rsp_prod) & MASK32) > nr_ents:
                        sys.producer_violation(t)
                elif kind == K_COMPLETE:
                    s2 = seq_of[refs[i]]
                    if s2 < 0:
                        skip(i, "BackComplete", "request not submitted under this logic", "")
                        continue
                    # RingSystem._back_complete for BackComplete(seq=s2), inlined: building
                    # the event object and the extra call were a fifth of a replay's time.
                    # The first backend holding it; nearly always the first and only one.
                    be = backends[0]
                    req = be.by_seq.get(s2)
                    if req is None:
                        for be in backends:
                            req = be.by_seq.get(s2)
                            if req is not None:
                                break
                        else:
                            skip(i, "BackComplete", "no I/O of this logic to complete", f"seq {s2}")
                            continue
                    status = col_b[i]
                    op = req.operation
                    rid = req.id
                    inflight = be.inflight
                    if (
                        not inline
                        or be.state is not S_CONNECTED
                        or not be.mapped
                        or be.after_handoff
                        or status != BLKIF_RSP_OKAY
                        or op not in (BLKIF_OP_READ, BLKIF_OP_WRITE)
                        or inflight.get(rid) is not req
                        or be.overflow
                    ):
                        # Anything but a plain read/write answered OK by a connected backend.
                        try:
                            be.complete(t, req, status)
                        except FrontendProtocolError as exc:
                            if not exc.problem.startswith("no backend has"):
                                raise
                            skip(i, "BackComplete", "no I/O of this logic to complete", f"seq {s2}")
                            continue
                        fed += 1
                        continue
                    # Backend.complete's path for that case.
                    seq = req.seq
                    by_seq = be.by_seq
                    if seq == s2 or by_seq.get(seq) is req:  # by_seq[s2] is req
                        del by_seq[seq]
                    del inflight[rid]
                    data: Data | None = None
                    if dlog is not None:
                        if op == BLKIF_OP_WRITE:
                            dlog += (C_AP, seq, req.sector_number, req.nr_sectors, 0)
                            dctx.append((t, sys.key, rid, be.instance, len(violations)))
                        else:
                            data = (dbase + len(dlog) // WIDTH,)
                            dlog += (C_RD, -1, req.sector_number, req.nr_sectors, 0)
                    ring = be.ring
                    idx = be.rsp_prod_pvt
                    ring.slot_rsp[idx & ring.mask] = (rid, op, 0, data)
                    new = (idx + 1) & MASK32
                    be.rsp_prod_pvt = new
                    ring.rsp_prod = new
                    if ((ring.req_prod - new) & MASK32) > ring.nr_ents and ring is sys.ring:
                        sys.producer_violation(t)
                    done = be._io_done
                    if done is not None:
                        done(be, req, t)
                        if be.state is S_DRAINING and not be.inflight_count and be.goal is not None:
                            be.logic.drained(be, t)
                        if be.state is not S_CONNECTED:
                            be._check(_COMPLETE_FROM_CONNECTED, "BackComplete")
                elif kind == K_FRONT_CONSUME:
                    # Frontend.consume for a connected frontend and a plausible rsp_prod, with
                    # actions off and the deferred oracle (else the method itself).
                    ring = sys.ring
                    rp = ring.rsp_prod
                    rc = fe.rsp_cons
                    if (
                        not inline
                        or fe.state is not F_CONNECTED
                        or ((rp - rc) & MASK32) > ring.nr_ents
                    ):
                        fe.consume(t)
                        fed += 1
                        continue
                    outstanding = fe.outstanding
                    flogic = fe.logic
                    retire = flogic.retire
                    slot_rsp = ring.slot_rsp
                    mask = ring.mask
                    while rc != rp:
                        slot = slot_rsp[rc & mask]
                        rsp: RspSlot = slot if slot is not None else ring.read_response(rc)
                        rid, rop, status, data = rsp
                        idx = rc
                        rc = (rc + 1) & MASK32
                        req = outstanding.get(rid)
                        if req is None:
                            if fe.odd_response(t, rid, rop, idx, rc, req, retire) == ODD_STOP:
                                break
                            continue
                        op = req.operation
                        if (
                            (rop != op or op == BLKIF_OP_INDIRECT)
                            and rop != req.effective_op
                            and fe.odd_response(t, rid, rop, idx, rc, req, retire) == ODD_STOP
                        ):
                            break
                        del outstanding[rid]
                        fe.answered.add(rid)
                        if ref_front:
                            # LinuxBlkfront.retire
                            if flogic.shadow.pop(rid, None) is not None:  # type: ignore[attr-defined]
                                flogic.free.append(rid)  # type: ignore[attr-defined]
                        else:
                            retire(fe, rid)
                        if dlog is not None:
                            io = (
                                IO_WRITE
                                if op == 1
                                else IO_READ
                                if op == 0
                                else io_kind(op, req.indirect_op, req.nr_sectors)
                            )
                            if io == IO_WRITE:
                                dlog += (
                                    C_AK if status == BLKIF_RSP_OKAY else C_FL,
                                    req.seq,
                                    0,
                                    0,
                                    0,
                                )
                            elif io == IO_READ and status == BLKIF_RSP_OKAY:
                                dlog += (
                                    C_VR,
                                    req.seq,
                                    req.sector_number,
                                    req.nr_sectors,
                                    data[0] if data is not None else -1,
                                )
                                dctx.append((t, sys.key, rid, idx, len(violations)))
                    else:
                        fe.rsp_cons = rc
                        # RING_FINAL_CHECK_FOR_RESPONSES
                        ring.rsp_event = (rc + 1) & MASK32
                        if fe.state is not F_CONNECTED:  # a logic hook moved it
                            fe._check(_FRONT_CONSUME_ALLOWED)
                elif kind == K_CONSUME:
                    # Backend.consume for a connected backend and a plausible req_prod, with
                    # actions off (else the method itself). A capture has one per request.
                    be = backends[-1]
                    ring = be.ring
                    rp = ring.req_prod
                    nr_ents = ring.nr_ents
                    if (
                        not inline
                        or be.state is not S_CONNECTED
                        or ((rp - be.rsp_prod_pvt) & MASK32) > nr_ents
                    ):
                        be.consume(t)
                        fed += 1
                        continue
                    rc = be.req_cons
                    inflight = be.inflight
                    by_seq = be.by_seq
                    started = be._io_started
                    slot_req = ring.slot_req
                    slot_rsp = ring.slot_rsp
                    mask = ring.mask
                    budget = nr_ents
                    while rc != rp and ((rc - be.rsp_prod_pvt) & MASK32) < nr_ents:
                        if not budget:
                            be.runaway(t, rc, rp)
                            break
                        budget -= 1
                        at = rc & mask
                        creq = slot_req[at]
                        if creq is None or slot_rsp[at] is not None:
                            creq = ring.read_request(rc)
                        idx = rc
                        rc = (rc + 1) & MASK32
                        be.req_cons = rc
                        op = creq.operation
                        if op > BLKIF_OP_WRITE and be._reject(t, idx, creq):
                            continue
                        nseg = creq.nr_segments
                        if op <= BLKIF_OP_WRITE and not 0 < nseg <= BLKIF_MAX_SEGMENTS_PER_REQUEST:
                            be._invalid(t, idx, creq, f"op {op} with {nseg} segments")
                            continue
                        rid = creq.id
                        if rid in inflight:
                            be.duplicate_id(t, idx, creq)
                        else:
                            inflight[rid] = creq
                        if creq.seq >= 0:
                            by_seq[creq.seq] = creq
                        if started is not None:
                            started(be, creq, t)
                    # RING_FINAL_CHECK_FOR_REQUESTS before sleeping.
                    ring.req_event = (rc + 1) & MASK32
                    if be.state is not S_CONNECTED:
                        be._check(_BACK_CONSUME_ALLOWED, "BackConsume")
                elif kind == K_RESPONSE:
                    op, status, idx, rid = col_a[i], col_b[i], col_c[i], col_e[i]
                    idx = -1 if idx is None else idx
                    ahead = (idx - sys.ring.rsp_prod) & MASK32 if idx >= 0 else 0
                    if idx >= 0 and ahead >= 1 << 31:
                        skip(i, "response", "already produced by this logic", f"idx {idx}")
                        continue
                    if _id_holder(sys, rid):
                        feed(BackComplete(t_ns=t, ring=key, id=rid, status=status))
                    else:
                        feed(BackRespond(t_ns=t, ring=key, id=rid, operation=op, status=status))
                else:
                    ev = inp.event(i)
                    handlers[type(ev)](ev)
                fed += 1
            except FrontendProtocolError as exc:
                skip(
                    i, _EVENT_NAMES.get(kind) or type(inp.event(i)).__name__, _ILLEGAL, exc.problem
                )
        if stop >= n_rows:
            break
        pos = stop
        if (
            plan is not None
            and bulk_ready(model, w_keys)
            and bulk_apply(model, plan.template(stop, w_end))
        ):
            fed += w_end - stop
            bulk_events += w_end - stop
            pos = w_end
            if isinstance(disk, DeferredDiskOracle):
                dbase = disk.base
            while next_stop < len(stops) and stops[next_stop][0] < w_end:
                next_stop += 1
    model.events += fed
    end_ns = (times[-1] + 1) if times else 0
    at_end = _complete_at_end(model, end_ns) if complete_at_end else 0
    result = model.finish()
    return EngineResult(
        result=result,
        skipped=skipped,
        skipped_by_reason=by_reason,
        fed=fed,
        elapsed_s=time.perf_counter() - t0,
        completed_at_end=at_end,
        end_ns=end_ns,
        bulk_events=bulk_events,
    )


def _stops(inp: ReplayInput) -> list[tuple[int, int, list[RingKey]]]:
    """Where a steady window may start: (row, the window's end, its rings), in row order."""
    plan = inp.bulk_plan()
    out: list[tuple[int, int, list[RingKey]]] = []
    for (start, end, restarts), keys in zip(plan.windows, plan.window_rings, strict=True):
        out.append((start, end, keys))
        out += [(r, end, keys) for r in restarts if end - r >= plan.min_rows]
    return out


def _complete_at_end(model: Model, end_ns: int) -> int:
    """Complete every real request still in flight at a backend, 1 ns after the trace.

    A trace often ends while I/O is in flight, and where a logic wrote into an unmapped
    ring (seed 000) or a torn-down source (seed 004) the completion left no trace record
    at all: the host crashed, or the response went nowhere. A disk finishes what it was
    given, and the seeds' failures happen exactly there, so each logic sees those
    completions at the end; the verdict says how many (caveat ``completed-at-end``).
    """
    done = 0
    for key, sys in model.rings.items():
        pending = sorted((seq, be.instance) for be in sys.backends for seq in be.by_seq)
        for seq, instance in pending:
            try:
                model.feed(BackComplete(t_ns=end_ns, ring=key, seq=seq, backend=instance))
            except FrontendProtocolError:
                continue
            done += 1
    return done


def flag_lost(violations: list[Violation], windows: list[tuple[int, int]]) -> list[bool]:
    """For each violation: does it fall in a window where trace records were lost?"""
    return [any(a <= v.t_ns <= b for a, b in windows) for v in violations]


__all__ = ["EngineResult", "Skipped", "flag_lost", "run_logic"]
