"""Replay a steady window (:mod:`blktrace_xen.replay.bulk_plan`) in one step, with numpy.

When a logic reaches a window with every ring of it idle and in the state the engine's
common path assumes (frontend connected with Linux's id bookkeeping, backend connected
and mapped with no per-I/O hooks, nothing in flight, the ring deep enough for the
window), the event-by-event replay of the window is fixed by counting, and this module
writes its outcome directly:

* the ring indices and event indices, the slots' final contents (the last requests and
  responses, as the objects the event path would have left there);
* the frontend's id bookkeeping (the free list grows by the retired ids in retirement
  order, the answered set by the ids used) and the model's seq counter;
* the disk oracle's records, as one numpy chunk, with the violation contexts of its
  applies and verifications built only if a violation needs one.

No violation can arise inside a window (the plan admits no event that could raise one),
so the violation list is unchanged. Where a check fails, nothing is changed and the
engine replays the rows one by one; ``tests/test_replay_bulk.py`` compares both ways.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from blktrace_xen.errors import FrontendProtocolError
from blktrace_xen.model.backend import S_CONNECTED
from blktrace_xen.model.disk_deferred import Ctx, DeferredDiskOracle
from blktrace_xen.model.frontend import F_CONNECTED
from blktrace_xen.model.logic import FrontendLogic
from blktrace_xen.model.logics.linux import LinuxBlkfront
from blktrace_xen.model.logics.xbd2006 import Xbd2006NoRecovery, Xbd2006RecoveryAsPosted
from blktrace_xen.model.logics.xbdback2005 import XbdbackRefcount
from blktrace_xen.model.ring import MASK32, Req

if TYPE_CHECKING:
    from blktrace_xen.model.backend import Backend
    from blktrace_xen.model.events import RingKey
    from blktrace_xen.model.system import Model, RingSystem
    from blktrace_xen.replay.bulk_plan import Template


def is_reference_front(logic: FrontendLogic) -> bool:
    """Are the logic's log and retire LinuxBlkfront's (the engine inlines those)?"""
    return all(
        getattr(getattr(logic, name, None), "__func__", None) is getattr(LinuxBlkfront, name)
        for name in ("log", "retire")
    )


# Frontend logics whose log and retire a window runs as they are, in the traced order
# (their ids are their own, not the trace's), their state saved first and put back if
# they refuse: NetBSD xbd's (own pointers, own recovery ring).
_OWN_IDS = {
    (Xbd2006NoRecovery.log, Xbd2006NoRecovery.retire),
    (Xbd2006RecoveryAsPosted.log, Xbd2006RecoveryAsPosted.retire),
}


def _own_ids(logic: FrontendLogic) -> bool:
    log = getattr(getattr(logic, "log", None), "__func__", None)
    retire = getattr(getattr(logic, "retire", None), "__func__", None)
    return (log, retire) in _OWN_IDS and hasattr(logic, "__dict__")


def _hooks_cancel(be: Backend) -> bool:
    """Do the backend's per-I/O hooks leave nothing behind over a window (every I/O
    started in it is done in it)? None, or xbdback's reference per I/O (xbdi_get at the
    start, xbdi_put at the end) while the instance holds its own, so the count never
    reaches 0 inside the window."""
    started, done = be._io_started, be._io_done
    if started is None and done is None:
        return True
    logic = type(be.logic)
    return (
        getattr(started, "__func__", None) is XbdbackRefcount.io_started
        and getattr(done, "__func__", None) is XbdbackRefcount.io_done
        and getattr(logic, "_put", None) is XbdbackRefcount._put
        and be.refcnt >= 1
        and be.sys.actions is None
    )


def ready(model: Model, keys: list[RingKey]) -> bool:
    """Is every ring in ``keys`` idle, connected and hook-free under this logic?"""
    rings = model.rings
    for key in keys:
        sys = rings.get(key)
        if sys is None or not _ready(sys):
            return False
    return True


def _ready(sys: RingSystem) -> bool:
    fe = sys.frontend
    if fe.state is not F_CONNECTED or sys.actions is not None:
        return False
    outstanding = fe.outstanding
    if is_reference_front(fe.logic):
        shadow = getattr(fe.logic, "shadow", None)
        if shadow is None or shadow.keys() != outstanding.keys():
            return False
    elif not _own_ids(fe.logic):
        return False
    backends = sys.backends
    if not backends:
        return False
    be = backends[-1]
    ring = sys.ring
    if (
        be.state is not S_CONNECTED
        or not be.mapped
        or be.after_handoff
        or be.ring is not ring
        or not _hooks_cancel(be)
    ):
        return False
    # Everything published consumed, everything produced consumed back; what is still
    # outstanding (requests the trace never answers) is in flight at this backend, each
    # once: a window leaves it as it is.
    req, rsp = ring.req_prod, ring.rsp_prod
    if not (req == fe.req_prod_pvt == be.req_cons and rsp == fe.rsp_cons == be.rsp_prod_pvt):
        return False
    # (The key comparison is a guard: the counts and indices above already imply it for
    # every state the corpus and the tests reach.)
    if len(outstanding) != ((req - rsp) & MASK32) or outstanding.keys() != be.inflight.keys():
        return False
    if any(be.by_seq.get(r.seq) is not r for r in be.inflight.values()):  # (a guard)
        return False
    return not be.overflow and all(
        not (x.by_seq or x.inflight or x.overflow) for x in backends[:-1]
    )


def apply(model: Model, tpl: Template) -> bool:
    """Replay the window ``tpl`` under ``model``'s logic; False (nothing changed) where
    a ring is too small for the window, a frontend logic refuses a request or hands out
    an id still in use, or the oracle's log cannot take a chunk."""
    rings = [model.rings[part.key] for part in tpl.parts]
    for part, sys in zip(tpl.parts, rings, strict=True):
        ring = sys.ring
        if part.max_depth > ring.nr_ents or (ring.req_prod - ring.rsp_prod) & MASK32 != part.inert:
            return False
    seq0 = model.seq[0]
    # The ids the frontend gives the window's requests: the traced ones (Linux's
    # bookkeeping takes the id it is asked for), or what the logic's log hands out.
    rid = tpl.s_id
    made: dict[int, Req] = {}
    saved: list[tuple[FrontendLogic, dict[str, object]]] = []
    own: set[int] = set()  # rings whose frontend logic runs its own log and retire
    for p, sys in enumerate(rings):
        logic = sys.frontend.logic
        # Linux's bookkeeping takes each traced id unless it is in use: then its free list
        # decides, and only its own log and retire know how.
        if (
            is_reference_front(logic)
            and not tpl.reuses_ids
            and not (sys.frontend.outstanding and _in_use(tpl, p, sys))
        ):
            continue
        if not hasattr(logic, "__dict__"):
            _restore(saved)
            return False  # (a logic with __slots__: its state cannot be saved)
        own.add(p)
        if rid is tpl.s_id:
            rid = tpl.s_id.copy()
        saved.append((logic, _saved(logic)))
        # Only the requests the slots keep at the end need to outlive the run.
        kept = set(tpl.parts[p].subs[-sys.ring.nr_ents :].tolist())
        if not _run_own_ids(sys, tpl, p, seq0=seq0, rid=rid, made=made, kept=kept):
            _restore(saved)
            return False
    oracle = model.disk if isinstance(model.disk, DeferredDiskOracle) else None
    if oracle is not None and not oracle.seal():
        _restore(saved)
        return False
    base = oracle.base if oracle is not None else 0
    rsp_starts: list[int] = []
    instances: list[int] = []
    s_op, s_sector, s_nr, s_nseg = tpl.s_op, tpl.s_sector, tpl.s_nr, tpl.s_nseg
    c_sub, c_rank, rd_pos = tpl.c_sub, tpl.c_rank, tpl.rd_pos
    for p, (part, sys) in enumerate(zip(tpl.parts, rings, strict=True)):
        ring = sys.ring
        fe = sys.frontend
        be = sys.backends[-1]
        start = ring.req_prod
        rsp_start = ring.rsp_prod
        rsp_starts.append(rsp_start)
        instances.append(be.instance)
        n = ring.nr_ents
        mask = ring.mask
        slot_req = ring.slot_req
        slot_rsp = ring.slot_rsp
        # The slots end with the window's last n requests, each overwritten by its own
        # index's response where that came later (below).
        subs = part.subs
        first = max(subs.size - n, 0)
        for rank, w in enumerate(subs[first:].tolist(), start=first):
            at = (start + rank) & mask
            req = made.get(w)
            if req is None:
                req = Req(
                    int(rid[w]),
                    int(s_op[w]),
                    int(s_sector[w]),
                    int(s_nr[w]),
                    int(s_nseg[w]),
                    seq0 + w,
                    0,
                )
            slot_req[at] = req
            slot_rsp[at] = None
        # A response is still in its slot unless a later request took the slot: the last
        # n - inert of them are.
        keep = n - part.inert
        for c in part.cmps[max(part.cmps.size - keep, 0) :].tolist() if keep > 0 else []:
            w = int(c_sub[c])
            op = int(s_op[w])
            data = (base + int(rd_pos[c]),) if oracle is not None and op == 0 else None
            slot_rsp[(rsp_start + int(c_rank[c])) & mask] = (int(rid[w]), op, 0, data)
        end = (start + subs.size) & MASK32
        rsp_end = (rsp_start + subs.size) & MASK32
        ring.req_prod = fe.req_prod_pvt = be.req_cons = end
        ring.rsp_prod = fe.rsp_cons = be.rsp_prod_pvt = rsp_end
        if part.req_event is not None:
            ring.req_event = (start + part.req_event) & MASK32
        if part.rsp_event is not None:
            ring.rsp_event = (rsp_start + part.rsp_event) & MASK32
        if p not in own:
            # LinuxBlkfront.retire puts each id back on its free list.
            fe.logic.free.extend(part.retired_ids)  # type: ignore[attr-defined]
            fe.answered.update(part.submitted_ids)
        else:
            fe.answered.update(rid[subs].tolist())
    model.seq[0] = seq0 + tpl.n_sub
    if oracle is not None:
        records = tpl.records.copy()
        records[tpl.seq_rows, 1] += seq0
        records[tpl.token_rows, 4] += base
        n_violations = len(model.violations)
        keys = [part.key for part in tpl.parts]
        t, ring_of, sub_of = tpl.ctx_t, tpl.ctx_ring, tpl.ctx_sub
        verify, rsp_rank = tpl.ctx_is_verify, tpl.ctx_rank

        def ctx_of(k: int) -> Ctx:
            r = int(ring_of[k])
            where = (rsp_starts[r] + int(rsp_rank[k])) & MASK32 if verify[k] else instances[r]
            return (int(t[k]), keys[r], int(rid[sub_of[k]]), where, n_violations)

        oracle.add_chunk(records, int(np.size(t)), ctx_of)
    return True


def _in_use(tpl: Template, p: int, sys: RingSystem) -> bool:
    """Does a traced id of ring ``p``'s window belong to a request still outstanding?"""
    return not sys.frontend.outstanding.keys().isdisjoint(tpl.parts[p].submitted_ids)


def _saved(logic: FrontendLogic) -> dict[str, object]:
    """The logic's state, to put back if it refuses the window."""
    if is_reference_front(logic):
        # Linux's: a free list of ints (long: every retired id is appended) and the shadow
        # (empty when a window starts): a copy of each is enough, and fast.
        return {
            k: v.copy() if isinstance(v, (list, dict)) else copy.deepcopy(v)
            for k, v in vars(logic).items()
        }
    return copy.deepcopy(vars(logic))


def _restore(saved: list[tuple[FrontendLogic, dict[str, object]]]) -> None:
    for logic, state in saved:
        vars(logic).clear()
        vars(logic).update(state)


def _run_own_ids(
    sys: RingSystem,
    tpl: Template,
    p: int,
    *,
    seq0: int,
    rid: np.ndarray,
    made: dict[int, Req],
    kept: set[int],
) -> bool:
    """Run the frontend logic's log and retire for ring ``p`` of the window, in the
    traced order, as the event path calls them; ``rid[w]`` becomes the id request ``w``
    got, and ``made[w]`` the request object, for ``w`` in ``kept``. False where the logic
    refused a request or handed out an id still in use."""
    fe = sys.frontend
    logic = fe.logic
    log, retire = logic.log, logic.retire
    n_sub = tpl.n_sub
    # The frontend's part of the window's records: a submit (>= 0) or a response (< 0).
    ops = tpl.rec_op[(tpl.rec_part == p) & (tpl.rec_op < n_sub)]
    # Python lists: a numpy scalar per field and I/O cost more than the calls themselves.
    s_id, s_op, s_sector, s_nr, s_nseg = (
        x.tolist() for x in (tpl.s_id, tpl.s_op, tpl.s_sector, tpl.s_nr, tpl.s_nseg)
    )
    c_sub = tpl.c_sub.tolist()
    got_of: dict[int, int] = {}
    new = object.__new__
    try:
        for op in ops.tolist():
            if op >= 0:
                # Req(0, op, sector, sectors, segments, seq, 0) without the __init__ call.
                req = new(Req)
                req.id = 0
                req.operation = s_op[op]
                req.sector_number = s_sector[op]
                req.nr_sectors = s_nr[op]
                req.nr_segments = s_nseg[op]
                req.seq = seq0 + op
                req.version = 0
                req.garbage = False
                req.indirect_op = None
                got = log(fe, req, s_id[op])
                req.id = got
                got_of[op] = got
                if op in kept:
                    made[op] = req
            else:
                retire(fe, got_of[c_sub[-1 - op]])
    except (FrontendProtocolError, OverflowError, KeyError, IndexError):
        return False
    if not got_of:
        return True
    # An id handed out while its previous request was still outstanding: the event path
    # reports it (reused id), so the window is not for bulk.
    w = np.fromiter(got_of, dtype=np.int64, count=len(got_of))
    ids = np.fromiter(got_of.values(), dtype=np.int64, count=len(got_of))
    if not fe.outstanding.keys().isdisjoint(got_of.values()):
        return False  # one of the requests the trace never answers (a guard: the shipped
        # logics never hand out an id in use unless their state is corrupt)
    at = np.empty(n_sub, dtype=np.int64)
    at[ops[ops >= 0]] = np.flatnonzero(ops >= 0)
    done = np.empty(n_sub, dtype=np.int64)
    done[tpl.c_sub[-1 - ops[ops < 0]]] = np.flatnonzero(ops < 0)
    order = np.lexsort((at[w], ids))
    same = ids[order][1:] == ids[order][:-1]
    if (same & (done[w[order]][:-1] > at[w[order]][1:])).any():
        return False
    rid[w] = ids
    return True


__all__ = ["apply", "is_reference_front", "ready"]
