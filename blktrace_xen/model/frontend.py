"""The blkif frontend of one ring, as an I/O-free state machine.

The machine owns ``req_prod_pvt``/``rsp_cons`` and ``outstanding`` — the model's *truth*
about every request the guest issued and has not seen answered (by ring id). Its
:class:`FrontendLogic` owns ids and the shadow; comparing the two is how the model catches
a shadow that forgot something (seed 003).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from blktrace_xen.errors import FrontendProtocolError, ModelUsageError
from blktrace_xen.model.disk_deferred import C_AK, C_FL, C_VR
from blktrace_xen.model.events import (
    FrontMutateSlot,
    FrontSubmit,
    Notify,
    RequestPushed,
    RequestReissued,
    ResponseConsumed,
    StateChanged,
)
from blktrace_xen.model.ring import (
    BLKIF_OP_INDIRECT,
    BLKIF_RSP_OKAY,
    IO_READ,
    IO_WRITE,
    MASK32,
    Req,
    RspSlot,
    io_kind,
)
from blktrace_xen.model.state import FRONT_TRANSITIONS, FRONT_XENBUS, FrontState

if TYPE_CHECKING:
    from blktrace_xen.model.logic import FrontendLogic
    from blktrace_xen.model.system import RingSystem

F_CONNECTED = FrontState.CONNECTED
F_ERROR = FrontState.ERROR
F_SUSPENDED = FrontState.SUSPENDED
F_CLOSED = FrontState.CLOSED
_CONSUME_FROM_CONNECTED = FRONT_TRANSITIONS[F_CONNECTED]["FrontConsume"]
# What Frontend.odd_response tells its caller to do with the response.
ODD_ANSWER: Final = 0
ODD_SKIP: Final = 1
ODD_STOP: Final = 2


class Frontend:
    __slots__ = ("answered", "logic", "outstanding", "req_prod_pvt", "rsp_cons", "state", "sys")

    def __init__(self, sys: RingSystem, logic: FrontendLogic, start_idx: int) -> None:
        self.sys = sys
        self.logic = logic
        self.state = F_CONNECTED
        self.req_prod_pvt = start_idx & MASK32
        self.rsp_cons = start_idx & MASK32
        self.outstanding: dict[int, Req] = {}
        self.answered: set[int] = set()  # ids answered and not issued again since
        logic.setup(self, sys.ring.nr_ents)

    def illegal(self, event: str, problem: str) -> FrontendProtocolError:
        return FrontendProtocolError(
            self.sys.ring_name, f"frontend {self.state.value}", event, problem
        )

    def check_legal(self, event: str) -> frozenset[FrontState]:
        allowed = FRONT_TRANSITIONS[self.state].get(event)
        if allowed is None:
            raise self.illegal(event, "not a legal event in this state")
        return allowed

    def set_state(self, t_ns: int, state: FrontState) -> None:
        if state is self.state:
            return
        self.state = state
        acts = self.sys.actions
        if acts is not None:
            acts.append(
                StateChanged(
                    t_ns=t_ns,
                    ring=self.sys.key,
                    side="front",
                    backend=None,
                    state=state.value,
                    xenbus=FRONT_XENBUS[state],
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
        evidence.setdefault("side", "front")
        self.sys.violate(t_ns, invariant, req_id, idx, message, evidence)

    # ------------------------------------------------------------------ inputs

    def submit(self, ev: FrontSubmit) -> None:
        self.submit_io(
            ev.t_ns,
            ev.operation,
            ev.sector_number,
            ev.nr_sectors,
            ev.nr_segments,
            ev.id,
            ev.data_version,
            ev.indirect_op,
        )

    def submit_io(  # noqa: PLR0917 - positional on purpose: replay's hot path
        self,
        t_ns: int,
        op: int,
        sector: int,
        nr: int,
        nr_segments: int,
        want_id: int | None,
        data_version: int = 0,
        indirect_op: int | None = None,
    ) -> None:
        """:meth:`submit` from the event's fields (replay submits without the object)."""
        if self.state is not F_CONNECTED:
            self.check_legal("FrontSubmit")  # raises: CONNECTED is the only legal state
        sys = self.sys
        ring = sys.ring
        idx = self.req_prod_pvt
        nr_ents = ring.nr_ents
        if ((idx - self.rsp_cons) & MASK32) >= nr_ents:
            raise self.illegal("FrontSubmit", f"ring full ({nr_ents} requests unanswered)")
        seq_box = sys.seq
        seq = seq_box[0]
        req = Req(
            0,
            op,
            sector,
            nr,
            nr_segments,
            seq,
            data_version,
            False,
            indirect_op if op == BLKIF_OP_INDIRECT else None,
        )
        rid = self.logic.log(self, req, want_id)
        seq_box[0] = seq + 1
        req.id = rid
        outstanding = self.outstanding
        if rid in outstanding:
            self.reused_id(t_ns, rid)
        outstanding[rid] = req
        self.answered.discard(rid)
        disk = sys.disk
        if disk is not None:
            kind = IO_WRITE if op == 1 else IO_READ if op == 0 else io_kind(op, req.indirect_op, nr)
            log = sys.disk_log
            if log is not None:
                if kind:  # C_IR / C_IW are IO_READ / IO_WRITE
                    log += (kind, seq, sector, nr, 0)
            elif kind == IO_WRITE:
                disk.issue_write(seq, sector, nr)
            elif kind == IO_READ:
                disk.issue_read(seq, sector, nr)
        # push(), inlined: this is the hottest path of a replay.
        ring.slot_req[idx & ring.mask] = req
        ring.slot_rsp[idx & ring.mask] = None
        new = (idx + 1) & MASK32
        self.req_prod_pvt = new
        ring.req_prod = new
        acts = sys.actions
        if acts is not None:
            self._pushed(acts, t_ns, idx, req, False)
        if ((new - ring.rsp_prod) & MASK32) > nr_ents:
            sys.producer_violation(t_ns)

    def reused_id(self, t_ns: int, rid: int) -> None:
        """The logic handed out ``rid`` while a request with it is outstanding."""
        old = self.outstanding[rid]
        # Only a corrupted id allocator gets here (e.g. a free list broken by a
        # duplicate response): the older request can no longer be answered.
        self.violate(
            t_ns,
            "request-not-answered",
            rid,
            None,
            f"id {rid} handed out again while #{old.seq} is outstanding",
            seq=old.seq,
        )
        self._drop(old)

    def push(self, t_ns: int, req: Req, reissue: bool) -> None:
        sys = self.sys
        ring = sys.ring
        idx = self.req_prod_pvt
        ring.write_request(idx, req)
        new = (idx + 1) & MASK32
        self.req_prod_pvt = new
        # RING_PUSH_REQUESTS_AND_CHECK_NOTIFY
        ring.req_prod = new
        acts = sys.actions
        if acts is not None:
            self._pushed(acts, t_ns, idx, req, reissue)
        if ((new - ring.rsp_prod) & MASK32) > ring.nr_ents:
            sys.producer_violation(t_ns)

    def _pushed(self, acts: list[Any], t_ns: int, idx: int, req: Req, reissue: bool) -> None:
        """The actions of a push: the request, and the notification if req_event was crossed."""
        sys = self.sys
        acts.append(
            RequestPushed(
                t_ns=t_ns,
                ring=sys.key,
                idx=idx,
                id=req.id,
                seq=req.seq,
                operation=req.operation,
                sector_number=req.sector_number,
                nr_sectors=req.nr_sectors,
                nr_segments=req.nr_segments,
                reissue=reissue,
            )
        )
        if ((idx + 1 - sys.ring.req_event) & MASK32) < 1:
            acts.append(Notify(t_ns=t_ns, ring=sys.key, side="front"))

    def consume(self, t_ns: int) -> None:
        state = self.state
        if state is not F_CONNECTED:
            self.check_legal("FrontConsume")
            return  # interrupts are dropped while suspended or disabled
        sys = self.sys
        ring = sys.ring
        rp = ring.rsp_prod
        rc = self.rsp_cons
        if ((rp - rc) & MASK32) > ring.nr_ents:
            self.violate(
                t_ns,
                "implausible-response-producer",
                None,
                rp,
                f"rsp_prod {rp} - rsp_cons {rc} > {ring.nr_ents}",
                rsp_prod=rp,
                rsp_cons=rc,
            )
            if self.logic.validates_responses:
                self.set_state(t_ns, F_ERROR)  # "illegal number of responses"
            else:
                # A frontend without the check would walk ~2^32 slots of garbage; the
                # model records the break and resynchronises instead.
                self.rsp_cons = rp
            return
        # Few locals: this runs about once per response, so each one costs per I/O.
        acts = sys.actions
        outstanding = self.outstanding
        disk = sys.disk
        dlog = sys.disk_log
        retire = self.logic.retire
        slot_rsp = ring.slot_rsp
        mask = ring.mask
        while rc != rp:
            slot = slot_rsp[rc & mask]
            rsp: RspSlot = slot if slot is not None else ring.read_response(rc)
            rid, rop, status, data = rsp
            idx = rc
            rc = (rc + 1) & MASK32
            if acts is not None:
                acts.append(
                    ResponseConsumed(
                        t_ns=t_ns, ring=sys.key, idx=idx, id=rid, operation=rop, status=status
                    )
                )
            req = outstanding.get(rid)
            if req is None:
                if self.odd_response(t_ns, rid, rop, idx, rc, req, retire) == ODD_STOP:
                    return
                continue
            op = req.operation
            if (
                (rop != op or op == BLKIF_OP_INDIRECT)
                and rop != req.effective_op
                and self.odd_response(t_ns, rid, rop, idx, rc, req, retire) == ODD_STOP
            ):
                return
            del outstanding[rid]
            self.answered.add(rid)
            retire(self, rid)
            if disk is not None:
                kind = (
                    IO_WRITE
                    if op == 1
                    else IO_READ
                    if op == 0
                    else io_kind(op, req.indirect_op, req.nr_sectors)
                )
                if dlog is not None:
                    if kind == IO_WRITE:
                        dlog += (C_AK if status == BLKIF_RSP_OKAY else C_FL, req.seq, 0, 0, 0)
                    elif kind == IO_READ and status == BLKIF_RSP_OKAY:
                        # DeferredDiskOracle.log_verify, inlined (hot path).
                        dlog += (
                            C_VR,
                            req.seq,
                            req.sector_number,
                            req.nr_sectors,
                            data[0] if data is not None else -1,
                        )
                        sys.disk_ctx.append((t_ns, sys.key, rid, idx, len(sys.violations)))
                elif kind == IO_WRITE:
                    if status == BLKIF_RSP_OKAY:
                        disk.ack_write(req.seq)
                    else:
                        disk.fail_write(req.seq)
                elif kind == IO_READ and status == BLKIF_RSP_OKAY:
                    for p in disk.verify_read(req.seq, req.sector_number, req.nr_sectors, data):
                        self.violate(
                            t_ns, p.invariant, rid, idx, p.message, seq=p.seq, **p.evidence
                        )
        self.rsp_cons = rc
        # RING_FINAL_CHECK_FOR_RESPONSES
        ring.rsp_event = (rc + 1) & MASK32
        if self.state is not F_CONNECTED:  # a logic hook moved it
            self._check(_CONSUME_FROM_CONNECTED)

    def odd_response(  # noqa: PLR0917
        self,
        t_ns: int,
        rid: int,
        rop: int,
        idx: int,
        rc: int,
        req: Req | None,
        retire: Callable[[Frontend, int], None],
    ) -> int:
        """:meth:`consume` met a response at ``idx`` that answers no outstanding request
        (``req`` None) or carries another operation than ``req``'s; ``rc`` is the index
        after it. Reports it; returns :data:`ODD_ANSWER` (consume it as ``req``'s answer),
        :data:`ODD_SKIP` (go on with the next one) or :data:`ODD_STOP` (the frontend
        stopped: consuming ends here, ``rsp_cons`` set)."""
        validates = self.logic.validates_responses
        if req is None:
            if rid in self.answered:
                self.violate(t_ns, "duplicate-response", rid, idx, f"second response for id {rid}")
            else:
                self.violate(
                    t_ns,
                    "response-not-in-flight",
                    rid,
                    idx,
                    f"response for id {rid}, which is not outstanding",
                )
            if validates:
                self.rsp_cons = rc
                self.set_state(t_ns, F_ERROR)
                return ODD_STOP
            retire(self, rid)
            return ODD_SKIP
        self.violate(
            t_ns,
            "response-op-mismatch",
            rid,
            idx,
            f"response op {rop} for a request with op {req.effective_op}",
            seq=req.seq,
        )
        if validates:
            self.rsp_cons = rc
            self.set_state(t_ns, F_ERROR)
            return ODD_STOP
        return ODD_ANSWER

    def _check(self, allowed: frozenset[FrontState]) -> None:
        if self.state not in allowed:
            raise ModelUsageError(f"frontend moved to {self.state.value} illegally")

    def _drop(self, req: Req) -> None:
        """``req`` will never be answered: for a write, it is lost unless already on disk."""
        disk = self.sys.disk
        if disk is None or io_kind(req.operation, req.indirect_op, req.nr_sectors) != IO_WRITE:
            return
        disk.fail_write(req.seq)

    def suspend(self, t_ns: int) -> None:
        self.check_legal("Suspend")
        self.set_state(t_ns, F_SUSPENDED)

    def resume(self, t_ns: int, event: str) -> None:
        """On a fresh ring (already installed in ``sys.ring``): re-issue what the logic
        recovers, and account for every outstanding request it does not."""
        self.check_legal(event)
        sys = self.sys
        ring = sys.ring
        self.req_prod_pvt = ring.req_prod
        self.rsp_cons = ring.rsp_prod
        self.set_state(t_ns, F_CONNECTED)
        outstanding = self.outstanding
        reissued: set[int] = set()
        acts = sys.actions
        for req in self.logic.recover(self):
            truth = outstanding.get(req.id)
            if truth is not None:
                req.seq = truth.seq
                if req.key() != truth.key():
                    self.violate(
                        t_ns,
                        "reissue-mismatch",
                        req.id,
                        self.req_prod_pvt,
                        f"re-issued #{truth.seq} as op {req.operation} sector "
                        f"{req.sector_number}+{req.nr_sectors} nseg "
                        f"{req.nr_segments}, issued as op {truth.operation} sector "
                        f"{truth.sector_number}+{truth.nr_sectors} nseg "
                        f"{truth.nr_segments}",
                        seq=truth.seq,
                        original=truth.key(),
                        reissued=req.key(),
                    )
                reissued.add(req.id)
            if acts is not None:
                acts.append(RequestReissued(t_ns=t_ns, ring=sys.key, id=req.id, seq=req.seq))
            self.push(t_ns, req, True)
        for rid in [r for r in outstanding if r not in reissued]:
            req = outstanding.pop(rid)
            self.violate(
                t_ns,
                "request-not-answered",
                rid,
                None,
                f"#{req.seq} (op {req.operation}, sector {req.sector_number}) was "
                "outstanding at suspend and is not re-issued",
                seq=req.seq,
            )
            self._drop(req)
            disk = sys.disk
            if (
                disk is not None
                and io_kind(req.operation, req.indirect_op, req.nr_sectors) == IO_WRITE
                and not disk.holds(req.seq, req.sector_number, req.nr_sectors)
            ):
                self.violate(
                    t_ns,
                    "lost-write",
                    rid,
                    None,
                    f"write #{req.seq} dropped at resume never reached the disk",
                    seq=req.seq,
                )

    def close(self, t_ns: int, event: str) -> None:
        self.check_legal(event)
        self.set_state(t_ns, F_CLOSED)
        for req in self.outstanding.values():
            self._drop(req)
        self.outstanding.clear()

    def set_req_prod(self, t_ns: int, value: int) -> None:
        self.check_legal("FrontSetReqProd")
        ring = self.sys.ring
        ring.req_prod = value & MASK32
        if ((ring.req_prod - ring.rsp_prod) & MASK32) > ring.nr_ents:
            self.sys.producer_violation(t_ns)

    def mutate_slot(self, ev: FrontMutateSlot) -> None:
        self.check_legal("FrontMutateSlot")
        ring = self.sys.ring
        idx = ev.idx & MASK32
        if ((ring.req_prod - idx - 1) & MASK32) >= ring.nr_ents:
            raise self.illegal("FrontMutateSlot", f"index {idx} is not a published request")
        old = ring.slot_req[idx & ring.mask]
        if old is None:
            raise self.illegal("FrontMutateSlot", f"slot of index {idx} holds no request")
        changes = {
            k: v
            for k in ("operation", "sector_number", "nr_sectors", "nr_segments", "id")
            if (v := getattr(ev, k)) is not None
        }
        ring.slot_req[idx & ring.mask] = old.copy(**changes)
        self.violate(
            ev.t_ns,
            "slot-mutated",
            old.id,
            idx,
            f"published request at {idx} rewritten: {changes}",
            **changes,
        )
