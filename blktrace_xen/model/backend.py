"""The blkif backend of one ring, as an I/O-free state machine (one object per instance).

The machine owns the backend's private ring indices (``req_cons``, ``rsp_prod_pvt``), its
requests in flight, the ring mapping and its state; its :class:`BackendLogic` decides what
the driver does on connect/bind, disconnect, unbind, removal and around each I/O. The
primitives below (:meth:`Backend.stop`, :meth:`Backend.complete_goal`, :meth:`Backend.unmap`,
...) are what a logic calls; they are the driver's building blocks, not policies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from blktrace_xen.errors import FrontendProtocolError, ModelUsageError
from blktrace_xen.model.disk_deferred import C_AP, C_RD, WIDTH
from blktrace_xen.model.events import (
    BackendHalted,
    DisconnectAnswered,
    DiskWrite,
    Notify,
    RefChanged,
    RequestConsumed,
    ResponsePushed,
    RingMapped,
    RingUnmapped,
    ShutdownDone,
    StateChanged,
)
from blktrace_xen.model.ring import (
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_DISCARD,
    BLKIF_OP_INDIRECT,
    BLKIF_OP_READ,
    BLKIF_OP_WRITE,
    BLKIF_RSP_EOPNOTSUPP,
    BLKIF_RSP_ERROR,
    BLKIF_RSP_OKAY,
    FLUSH_OPS,
    IO_READ,
    IO_WRITE,
    MASK32,
    MAX_INDIRECT_SEGMENTS,
    Req,
    SharedRing,
    io_kind,
)
from blktrace_xen.model.state import BACK_TRANSITIONS, BACK_XENBUS, BackState

if TYPE_CHECKING:
    from blktrace_xen.model.disk import Data
    from blktrace_xen.model.logic import BackendLogic
    from blktrace_xen.model.system import RingSystem

S_CONNECTED = BackState.CONNECTED
S_HALTED = BackState.HALTED
S_DRAINING = BackState.DRAINING
S_DISCONNECTED = BackState.DISCONNECTED
S_GONE = BackState.GONE
_COMPLETE_FROM_CONNECTED = BACK_TRANSITIONS[S_CONNECTED]["BackComplete"]
_CONSUME_FROM_CONNECTED = BACK_TRANSITIONS[S_CONNECTED]["BackConsume"]

Hook = Callable[["Backend", Req, int], None]


def _hook(logic: BackendLogic, name: str) -> Hook | None:
    """The logic's per-I/O hook, or None when it is the reference no-op (skipped: two calls
    per I/O are a tenth of a replay's time)."""
    from blktrace_xen.model.logics.linux import LinuxBlkback

    bound = getattr(logic, name)
    if getattr(bound, "__func__", None) is getattr(LinuxBlkback, name):
        return None
    return cast("Hook", bound)


class Backend:
    """One backend instance attached (or once attached) to ``sys.ring``.

    Public attributes a logic may read or set: ``req_cons``, ``rsp_prod_pvt``, ``refcnt``,
    ``goal`` (why the backend is stopping: "disconnect", "destroy", "unbind", "remove"),
    ``pending_destroy``, ``ring`` (the page this instance maps), ``mapped``,
    ``inflight`` (id -> request), ``state``, ``instance`` (its number), ``sys``.
    """

    __slots__ = (
        "_io_done",
        "_io_started",
        "after_handoff",
        "by_seq",
        "goal",
        "inflight",
        "instance",
        "logic",
        "mapped",
        "max_indirect_segments",
        "overflow",
        "pending_destroy",
        "refcnt",
        "req_cons",
        "ring",
        "rsp_prod_pvt",
        "state",
        "sys",
        "unknown_op_status",
    )

    def __init__(self, sys: RingSystem, logic: BackendLogic, instance: int) -> None:
        self.sys = sys
        self.logic = logic
        self.instance = instance
        self.ring: SharedRing = sys.ring
        self.state = S_DISCONNECTED
        self.mapped = False
        self.req_cons = 0
        self.rsp_prod_pvt = 0
        self.inflight: dict[int, Req] = {}
        self.overflow: list[Req] = []  # requests whose id collided with one in flight
        self.by_seq: dict[int, Req] = {}  # seq -> request in flight (garbage ones excluded)
        self.refcnt = 1  # xbdback: one reference held by the instance itself
        self.goal: str | None = None
        self.pending_destroy = False
        self.after_handoff = False
        # Optional logic attributes (a logic written before they existed gets Linux's).
        self.max_indirect_segments: int = getattr(
            logic, "max_indirect_segments", MAX_INDIRECT_SEGMENTS
        )
        self.unknown_op_status: int = getattr(logic, "unknown_op_status", BLKIF_RSP_EOPNOTSUPP)
        self._io_started = _hook(logic, "io_started")
        self._io_done = _hook(logic, "io_done")

    # ------------------------------------------------------------------ helpers

    @property
    def inflight_count(self) -> int:
        return len(self.inflight) + len(self.overflow)

    def illegal(self, event: str, problem: str) -> FrontendProtocolError:
        return FrontendProtocolError(
            self.sys.ring_name, f"backend#{self.instance} {self.state.value}", event, problem
        )

    def check_legal(self, event: str) -> frozenset[BackState]:
        allowed = BACK_TRANSITIONS[self.state].get(event)
        if allowed is None:
            raise self.illegal(event, "not a legal event in this state")
        return allowed

    def set_state(self, t_ns: int, state: BackState) -> None:
        if state is self.state:
            return
        self.state = state
        acts = self.sys.actions
        if acts is not None:
            acts.append(
                StateChanged(
                    t_ns=t_ns,
                    ring=self.sys.key,
                    side="back",
                    backend=self.instance,
                    state=state.value,
                    xenbus=BACK_XENBUS[state],
                )
            )

    def violate(
        self,
        t_ns: int,
        invariant: str,
        req_id: int | None,
        idx: int | None,
        message: str,
        **evidence: Any,
    ) -> None:
        evidence.setdefault("backend", self.instance)
        self.sys.violate(t_ns, invariant, req_id, idx, message, evidence)

    # --------------------------------------------------------- primitives for logics

    def map_at(self, t_ns: int, idx: int) -> None:
        """Map the ring with ``req_cons = rsp_prod_pvt = idx`` (BACK_RING_ATTACH(idx); idx 0
        is BACK_RING_INIT) and connect."""
        self.ring = self.sys.ring
        self.req_cons = idx & MASK32
        self.rsp_prod_pvt = idx & MASK32
        self.mapped = True
        self.goal = None
        acts = self.sys.actions
        if acts is not None:
            acts.append(
                RingMapped(
                    t_ns=t_ns,
                    ring=self.sys.key,
                    backend=self.instance,
                    req_cons=self.req_cons,
                    rsp_prod_pvt=self.rsp_prod_pvt,
                )
            )
        self.set_state(t_ns, S_CONNECTED)

    def unmap(self, t_ns: int) -> None:
        if self.mapped:
            self.mapped = False
            acts = self.sys.actions
            if acts is not None:
                acts.append(RingUnmapped(t_ns=t_ns, ring=self.sys.key, backend=self.instance))

    def answer_disconnect(self, t_ns: int) -> None:
        acts = self.sys.actions
        if acts is not None:
            acts.append(DisconnectAnswered(t_ns=t_ns, ring=self.sys.key, backend=self.instance))

    def publish_shutdown_done(self, t_ns: int) -> None:
        acts = self.sys.actions
        if acts is not None:
            acts.append(ShutdownDone(t_ns=t_ns, ring=self.sys.key, backend=self.instance))

    def ref(self, t_ns: int, delta: int) -> int:
        """xbdi_get (+1) / xbdi_put (-1); returns the new count."""
        self.refcnt += delta
        acts = self.sys.actions
        if acts is not None:
            acts.append(
                RefChanged(
                    t_ns=t_ns,
                    ring=self.sys.key,
                    backend=self.instance,
                    delta=delta,
                    refcnt=self.refcnt,
                )
            )
        return self.refcnt

    def start_target(self, t_ns: int) -> None:
        """Migration: let the toolstack start the guest on the target now."""
        self.after_handoff = True
        self.sys.start_target(t_ns)

    def stop(self, t_ns: int, goal: str, *, wait: bool) -> None:
        """Stop consuming for ``goal``. ``wait``: keep the ring until the I/O in flight has
        completed (:meth:`complete_goal` runs at the last completion); else complete now."""
        self.goal = goal
        if wait and self.inflight_count:
            self.set_state(t_ns, S_DRAINING)
        else:
            self.complete_goal(t_ns)

    def complete_goal(self, t_ns: int) -> None:
        """Finish what :meth:`stop` started: unmap the ring and answer/publish as the goal
        requires; the logic's ``finish`` hook may add to it."""
        goal = self.goal or "disconnect"
        self.unmap(t_ns)
        if goal in ("disconnect", "destroy"):
            self.answer_disconnect(t_ns)
        if goal in {"destroy", "remove"} or self.pending_destroy:
            self.set_state(t_ns, S_GONE)
        else:
            self.set_state(t_ns, S_DISCONNECTED)
        self.logic.finished(self, t_ns, goal)

    # ------------------------------------------------------------------ inputs

    def consume(self, t_ns: int) -> None:
        state = self.state
        if state is S_CONNECTED:
            allowed = _CONSUME_FROM_CONNECTED  # check_legal's answer, without the call
        else:
            allowed = self.check_legal("BackConsume")
        if state is S_HALTED:
            return
        if state is S_DRAINING and not self.logic.consumes_while_draining:
            return
        ring = self.ring
        rp = ring.req_prod
        nr_ents = ring.nr_ents
        if ((rp - self.rsp_prod_pvt) & MASK32) > nr_ents and self.logic.checks_request_overflow:
            # RING_REQUEST_PROD_OVERFLOW in __do_block_io_op: "Frontend provided bogus ring
            # requests ... Halting ring processing".
            self.set_state(t_ns, S_HALTED)
            self._check(allowed, "BackConsume")
            acts = self.sys.actions
            if acts is not None:
                acts.append(
                    BackendHalted(
                        t_ns=t_ns,
                        ring=self.sys.key,
                        backend=self.instance,
                        req_prod=rp,
                        rsp_prod_pvt=self.rsp_prod_pvt,
                    )
                )
            self.violate(
                t_ns,
                "backend-halted",
                None,
                rp,
                f"req_prod {rp} - rsp_prod_pvt {self.rsp_prod_pvt} > {nr_ents}: "
                "backend parked the ring",
                req_prod=rp,
                rsp_prod_pvt=self.rsp_prod_pvt,
            )
            return
        rc = self.req_cons
        acts = self.sys.actions
        inflight = self.inflight
        by_seq = self.by_seq
        started = self._io_started
        slot_req = ring.slot_req
        slot_rsp = ring.slot_rsp
        mask = ring.mask
        # With a plausible req_prod one pass consumes at most a ring's worth. A logic
        # without the overflow check, facing a bogus req_prod (up to 2**32 ahead) and
        # answering each garbage slot at once, would spin through every index: the
        # model says so and stops there, so a hostile trace cannot hang a replay.
        budget = nr_ents
        while rc != rp and ((rc - self.rsp_prod_pvt) & MASK32) < nr_ents:
            if not budget:
                self.runaway(t_ns, rc, rp)
                break
            budget -= 1
            slot = rc & mask
            req = slot_req[slot]
            if req is None or slot_rsp[slot] is not None:
                req = ring.read_request(rc)
            idx = rc
            rc = (rc + 1) & MASK32
            self.req_cons = rc
            if acts is not None:
                self._consumed(acts, t_ns, idx, req)
            op = req.operation
            if op > BLKIF_OP_WRITE and self._reject(t_ns, idx, req):
                continue
            nseg = req.nr_segments
            if op <= BLKIF_OP_WRITE and not 0 < nseg <= BLKIF_MAX_SEGMENTS_PER_REQUEST:
                self._invalid(t_ns, idx, req, f"op {op} with {nseg} segments")
                continue
            rid = req.id
            if rid in inflight:
                self.duplicate_id(t_ns, idx, req)
            else:
                inflight[rid] = req
            if req.seq >= 0:
                by_seq[req.seq] = req
            if started is not None:
                started(self, req, t_ns)
        # RING_FINAL_CHECK_FOR_REQUESTS before sleeping.
        ring.req_event = (rc + 1) & MASK32
        if self.state is not state:
            self._check(allowed, "BackConsume")

    def runaway(self, t_ns: int, rc: int, rp: int) -> None:
        """:meth:`consume` stops after a ring's worth of a bogus req_prod (at ``rc``)."""
        self.violate(
            t_ns,
            "implausible-producer",
            None,
            rc,
            f"req_prod {rp} is {(rp - rc) & MASK32} entries past req_cons {rc}: "
            "the backend would consume them all; the model stops after a ring's worth",
            req_prod=rp,
            runaway=True,
        )

    def duplicate_id(self, t_ns: int, idx: int, req: Req) -> None:
        """:meth:`consume` read ``req`` at ``idx`` with the id of a request in flight."""
        rid = req.id
        self.violate(
            t_ns,
            "duplicate-in-flight-id",
            rid,
            idx,
            f"id {rid} consumed at {idx} while already in flight",
        )
        self.overflow.append(req)

    def _consumed(self, acts: list[Any], t_ns: int, idx: int, req: Req) -> None:
        acts.append(
            RequestConsumed(
                t_ns=t_ns,
                ring=self.sys.key,
                backend=self.instance,
                idx=idx,
                id=req.id,
                seq=req.seq,
                operation=req.operation,
                sector_number=req.sector_number,
                nr_sectors=req.nr_sectors,
                nr_segments=req.nr_segments,
            )
        )

    def _reject(self, t_ns: int, idx: int, req: Req) -> bool:
        """Linux blkback's checks for everything but a plain READ/WRITE: answer at once and
        return True, or return False to send the request to the disk."""
        op = req.operation
        nseg = req.nr_segments
        if op == BLKIF_OP_INDIRECT and self.max_indirect_segments > 0:
            iop = req.indirect_op
            if iop not in (BLKIF_OP_READ, BLKIF_OP_WRITE):
                self._invalid(t_ns, idx, req, f"indirect op {iop}")
                return True
            if not 0 < nseg <= self.max_indirect_segments:
                self._invalid(
                    t_ns,
                    idx,
                    req,
                    f"indirect op with {nseg} segments (max {self.max_indirect_segments})",
                )
                return True
        elif op in FLUSH_OPS:
            if nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST:
                self._invalid(t_ns, idx, req, f"op {op} with {nseg} segments")
                return True
        elif op != BLKIF_OP_DISCARD:
            # dispatch_other_io: "unknown/unsupported operation", answered EOPNOTSUPP. Only
            # a slot that held no request (the model knows) breaks an invariant here.
            if req.garbage:
                self._invalid(t_ns, idx, req, f"op {op}", self.unknown_op_status, raw_op=True)
            else:
                self._respond(t_ns, req, self.unknown_op_status, raw_op=True)
            return True
        return False

    def _invalid(
        self,
        t_ns: int,
        idx: int,
        req: Req,
        what: str,
        status: int = BLKIF_RSP_ERROR,
        *,
        raw_op: bool = False,
    ) -> None:
        """Rejected at once (blkback: dispatch_rw_block_io's "fail_response"; xbdback:
        EINVAL): answered with ``status``, never reaches the disk."""
        self.violate(
            t_ns,
            "invalid-request",
            req.id,
            idx,
            f"consumed slot {idx} decodes to {what}",
            garbage=req.garbage,
        )
        self._respond(t_ns, req, status, raw_op=raw_op)

    def find(self, id: int | None, seq: int | None) -> Req | None:
        if seq is not None:
            return self.by_seq.get(seq)
        if id is None:
            return None
        found = self.inflight.get(id)
        if found is None:
            for r in self.overflow:
                if r.id == id:
                    return r
        return found

    def complete(self, t_ns: int, req: Req, status: int) -> None:
        """The disk finished ``req`` (found with :meth:`find`)."""
        state = self.state
        if state is S_CONNECTED:
            allowed = _COMPLETE_FROM_CONNECTED
        else:
            allowed = self.check_legal("BackComplete")
        seq = req.seq
        by_seq = self.by_seq
        if by_seq.get(seq) is req:
            del by_seq[seq]
        rid = req.id
        inflight = self.inflight
        if inflight.get(rid) is req:
            del inflight[rid]
            if self.overflow:
                for i, r in enumerate(self.overflow):
                    if r.id == rid:
                        inflight[rid] = self.overflow.pop(i)
                        break
        else:
            self.overflow.remove(req)
        data: Data | None = None
        sys = self.sys
        op = req.operation
        if status == BLKIF_RSP_OKAY:
            kind = (
                IO_WRITE
                if op == 1
                else IO_READ
                if op == 0
                else io_kind(op, req.indirect_op, req.nr_sectors)
            )
            if kind == IO_WRITE:
                deferred = sys.deferred
                if deferred is not None and sys.actions is None and not self.after_handoff:
                    # _wrote's common case, inlined (hot path).
                    deferred.log += (C_AP, seq, req.sector_number, req.nr_sectors, 0)
                    deferred.ctx.append((t_ns, sys.key, rid, self.instance, len(sys.violations)))
                else:
                    self._wrote(t_ns, req)
            elif kind == IO_READ:
                dlog = sys.disk_log
                if dlog is not None:
                    # DeferredDiskOracle.read, inlined (hot path): the data is a token.
                    data = (sys.deferred.base + len(dlog) // WIDTH,)  # type: ignore[union-attr]
                    dlog += (C_RD, -1, req.sector_number, req.nr_sectors, 0)
                elif sys.disk is not None:
                    data = sys.disk.read(req.sector_number, req.nr_sectors)
        if self.mapped and sys.actions is None and op != BLKIF_OP_INDIRECT:
            # _respond's common case, inlined (hot path): a call per I/O.
            ring = self.ring
            idx = self.rsp_prod_pvt
            ring.slot_rsp[idx & ring.mask] = (rid, op, status, data)
            new = (idx + 1) & MASK32
            self.rsp_prod_pvt = new
            ring.rsp_prod = new
            if ((ring.req_prod - new) & MASK32) > ring.nr_ents and ring is sys.ring:
                sys.producer_violation(t_ns)
        else:
            self._respond(t_ns, req, status, data)
        done = self._io_done
        if done is not None:
            done(self, req, t_ns)
        if self.state is S_DRAINING and not self.inflight_count and self.goal is not None:
            self.logic.drained(self, t_ns)
        if self.state is not state:
            self._check(allowed, "BackComplete")

    def _wrote(self, t_ns: int, req: Req) -> None:
        """A write (or discard, or flush with data) of ``req`` reached the media."""
        sys = self.sys
        if self.after_handoff:
            self.violate(
                t_ns,
                "write-after-handoff",
                req.id,
                None,
                f"write #{req.seq} reached the disk from the source backend "
                "after the guest was started on the target",
                seq=req.seq,
            )
        disk = sys.disk
        deferred = sys.deferred
        if deferred is not None:
            # DeferredDiskOracle.log_apply, inlined (hot path).
            deferred.log += (C_AP, req.seq, req.sector_number, req.nr_sectors, 0)
            deferred.ctx.append((t_ns, sys.key, req.id, self.instance, len(sys.violations)))
        elif disk is not None:
            for p in disk.apply_write(req.seq, req.sector_number, req.nr_sectors):
                self.violate(t_ns, p.invariant, req.id, None, p.message, seq=p.seq, **p.evidence)
        if sys.actions is not None:
            sys.actions.append(
                DiskWrite(
                    t_ns=t_ns,
                    ring=sys.key,
                    backend=self.instance,
                    seq=req.seq,
                    sector_number=req.sector_number,
                    nr_sectors=req.nr_sectors,
                )
            )

    def respond_raw(self, t_ns: int, rsp_id: int, operation: int, status: int) -> None:
        """A response that answers nothing the disk did (misbehaving backend)."""
        allowed = self.check_legal("BackRespond")
        self._respond(t_ns, Req(rsp_id, operation, 0, 0, 0, -1, 0), status)
        self._check(allowed, "BackRespond")

    def _respond(
        self, t_ns: int, req: Req, status: int, data: Data | None = None, *, raw_op: bool = False
    ) -> None:
        """Write and publish the response to ``req``. Its operation is the effective one
        (``indirect_op`` for an indirect request) unless ``raw_op``: an operation the
        backend does not know is echoed as it came (dispatch_other_io)."""
        if not self.mapped:
            self.violate(
                t_ns,
                "response-after-unmap",
                req.id,
                self.rsp_prod_pvt,
                f"response to id {req.id} (#{req.seq}) written after the ring was "
                f"unmapped (backend {self.state.value})",
                seq=req.seq,
            )
            return
        op = req.operation
        if op == BLKIF_OP_INDIRECT and req.indirect_op is not None and not raw_op:
            op = req.indirect_op  # make_response(ring, id, req_operation, ...)
        ring = self.ring
        idx = self.rsp_prod_pvt
        ring.slot_rsp[idx & ring.mask] = (req.id, op, status, data)
        new = (idx + 1) & MASK32
        self.rsp_prod_pvt = new
        # RING_PUSH_RESPONSES_AND_CHECK_NOTIFY
        ring.rsp_prod = new
        sys = self.sys
        acts = sys.actions
        if acts is not None:
            acts.append(
                ResponsePushed(
                    t_ns=t_ns,
                    ring=sys.key,
                    backend=self.instance,
                    idx=idx,
                    id=req.id,
                    seq=req.seq,
                    operation=op,
                    status=status,
                )
            )
            if ((new - ring.rsp_event) & MASK32) < 1:
                acts.append(Notify(t_ns=t_ns, ring=sys.key, side="back"))
        if ((ring.req_prod - new) & MASK32) > ring.nr_ents and ring is sys.ring:
            sys.producer_violation(t_ns)

    def _check(self, allowed: frozenset[BackState], event: str) -> None:
        if self.state not in allowed:
            raise ModelUsageError(
                f"logic {self.logic.name!r} moved backend#{self.instance} to "
                f"{self.state.value} on {event}; allowed: "
                + ", ".join(sorted(s.value for s in allowed))
            )

    # -------------------------------------------------------------- control inputs

    def control(self, t_ns: int, event: str) -> None:
        """Disconnect / Unbind / DomainDestroy / Handoff / Bind."""
        allowed = self.check_legal(event)
        logic = self.logic
        if event == "Bind":
            self.ring = self.sys.ring
            if not logic.attach(self, t_ns):
                self.set_state(t_ns, S_DISCONNECTED)
        elif event == "Disconnect":
            logic.disconnect(self, t_ns, "disconnect")
        elif event == "DomainDestroy":
            if self.state is S_DISCONNECTED:
                self.unmap(t_ns)
                self.set_state(t_ns, S_GONE)
            elif self.state is S_DRAINING:
                self.pending_destroy = True
            else:
                logic.disconnect(self, t_ns, "destroy")
        elif event == "Unbind":
            logic.unbind(self, t_ns)
        elif event == "Handoff":
            if self.state is S_DISCONNECTED:
                self.set_state(t_ns, S_GONE)
                self.start_target(t_ns)
            else:
                logic.remove(self, t_ns)
        else:  # pragma: no cover - the caller only passes the names above
            raise ModelUsageError(f"unknown control event {event}")
        self._check(allowed, event)
