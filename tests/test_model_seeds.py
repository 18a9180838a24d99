"""One test per seed: the legacy logic breaks the seed's invariant, the patched one does not."""

from __future__ import annotations

from blktrace_xen.model.events import (
    BackComplete,
    BackConsume,
    Bind,
    Disconnect,
    DisconnectAnswered,
    DomainDestroy,
    FrontConsume,
    FrontSubmit,
    Handoff,
    InputEvent,
    RequestReissued,
    Resume,
    RingUnmapped,
    ShutdownDone,
    Suspend,
    TargetStarted,
    Unbind,
)
from blktrace_xen.model.ring import BLKIF_OP_READ, BLKIF_OP_WRITE
from blktrace_xen.model.system import run


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        self.t += 1000
        return self.t


def write(t: int, sector: int) -> FrontSubmit:
    return FrontSubmit(t_ns=t, operation=BLKIF_OP_WRITE, sector_number=sector, nr_sectors=8)


def read(t: int, sector: int) -> FrontSubmit:
    return FrontSubmit(t_ns=t, operation=BLKIF_OP_READ, sector_number=sector, nr_sectors=8)


def io_round(clock: Clock, seqs: range, sectors: list[int], ops: list[int]) -> list[InputEvent]:
    """Submit a batch, consume, complete every one, consume the responses."""
    evs: list[InputEvent] = [
        FrontSubmit(t_ns=clock(), operation=op, sector_number=s, nr_sectors=8)
        for s, op in zip(sectors, ops, strict=True)
    ]
    evs.append(BackConsume(t_ns=clock()))
    evs += [BackComplete(t_ns=clock(), seq=q) for q in seqs]
    evs.append(FrontConsume(t_ns=clock()))
    return evs


# ------------------------------------------------------------------ seed 000


def disconnect_during_io(destroy: bool) -> list[InputEvent]:
    c = Clock()
    evs: list[InputEvent] = [write(c(), 8 * i) for i in range(6)]
    evs.append(BackConsume(t_ns=c()))
    evs.append(DomainDestroy(t_ns=c()) if destroy else Disconnect(t_ns=c(), side="back"))
    evs += [BackComplete(t_ns=c(), seq=q) for q in range(6)]
    return evs


def test_seed000_immediate_disconnect_writes_into_unmapped_ring() -> None:
    res = run(disconnect_during_io(False), backend="xbdback-2005-immediate")
    hits = [v for v in res.violations if v.invariant == "response-after-unmap"]
    assert [v.evidence["seq"] for v in hits] == list(range(6))
    kinds = [type(a) for a in res.actions]
    # The disconnect is answered before any I/O completed.
    assert kinds.index(DisconnectAnswered) < kinds.index(RingUnmapped) + 2
    assert res.rings[(1, 51712, 0)].back_states == ["DISCONNECTED"]


def test_seed000_refcount_answers_disconnect_after_last_iodone() -> None:
    res = run(disconnect_during_io(False), backend="xbdback-2005-refcount")
    assert res.violations == []
    acts = res.actions
    answered = next(i for i, a in enumerate(acts) if isinstance(a, DisconnectAnswered))
    last_rsp = max(i for i, a in enumerate(acts) if type(a).__name__ == "ResponsePushed")
    assert answered > last_rsp
    refs = [a.refcnt for a in acts if type(a).__name__ == "RefChanged"]
    assert refs[:6] == [2, 3, 4, 5, 6, 7] and refs[-1] == 0


def test_seed000_destroy_during_heavy_io() -> None:
    legacy = run(disconnect_during_io(True), backend="xbdback-2005-immediate")
    assert "response-after-unmap" in legacy.invariants()
    patched = run(disconnect_during_io(True), backend="xbdback-2005-refcount")
    assert patched.violations == []
    assert patched.rings[(1, 51712, 0)].back_states == ["GONE"]


def test_seed000_posted_refcount_breaks_on_reconnect() -> None:
    c = Clock()
    evs: list[InputEvent] = [Disconnect(t_ns=c(), side="back"), Bind(t_ns=c())]
    evs += io_round(c, range(1), [0], [BLKIF_OP_WRITE])
    posted = run(evs, backend="xbdback-2005-refcount")
    assert posted.invariants() == {"spurious-disconnect"}
    fixed = run(evs, backend="xbdback-2005-refcount-fixed")
    assert fixed.violations == []


# ------------------------------------------------------------------ seed 002


def unbind_rebind(rounds_before: int, complete_after_bind: bool = True) -> list[InputEvent]:
    c = Clock()
    evs: list[InputEvent] = []
    q = 0
    for r in range(rounds_before):
        evs += io_round(c, range(q, q + 4), [64 * r + 8 * i for i in range(4)], [1] * 4)
        q += 4
    # I/O in flight at unbind, as with fio iodepth 16.
    evs += [write(c(), 4096 + 8 * i) for i in range(4)]
    evs.append(BackConsume(t_ns=c()))
    evs.append(Unbind(t_ns=c()))
    evs += [BackComplete(t_ns=c(), seq=q + i) for i in range(4)]
    q += 4
    evs.append(Bind(t_ns=c()))
    evs.append(FrontConsume(t_ns=c()))
    evs += io_round(c, range(q, q + 4), [0, 8, 4096, 4104], [BLKIF_OP_READ] * 4)
    if not complete_after_bind:  # a halted backend never consumed them
        evs = [e for e in evs if not (isinstance(e, BackComplete) and e.seq >= q)]
    return evs


def test_seed002_init_under_live_frontend_halts_backend() -> None:
    res = run(unbind_rebind(10, complete_after_bind=False), backend="blkback-rebind-init")
    assert "backend-halted" in res.invariants()
    assert res.rings[(1, 51712, 0)].back_states == ["HALTED"]


def test_seed002_init_early_in_ring_life_replays_old_slots() -> None:
    res = run(unbind_rebind(1), backend="blkback-rebind-init")
    # Slots 0..7 hold responses: read as requests they decode to garbage (rejected, or
    # "flushes" whose id collides with a request in flight).
    assert {"invalid-request", "duplicate-in-flight-id"} <= res.invariants()


def test_seed002_attach_at_rsp_prod_is_clean() -> None:
    for rounds in (1, 10):
        res = run(unbind_rebind(rounds), backend="blkback-rebind-attach")
        assert res.violations == [], rounds
        assert res.disk is not None and res.disk.reads_verified == 4


def test_seed002_attach_refuses_implausible_ring() -> None:
    from blktrace_xen.model.events import BindFailed, FrontSetReqProd

    c = Clock()
    evs: list[InputEvent] = [
        Unbind(t_ns=c()),
        FrontSetReqProd(t_ns=c(), req_prod=1000),
        Bind(t_ns=c()),
    ]
    res = run(evs, backend="blkback-rebind-attach")
    assert any(isinstance(a, BindFailed) and a.errno == -5 for a in res.actions)
    assert res.rings[(1, 51712, 0)].back_states == ["DISCONNECTED"]


# ------------------------------------------------------------------ seed 003


def save_restore() -> list[InputEvent]:
    c = Clock()
    evs: list[InputEvent] = io_round(c, range(2), [100, 200], [1, 1])
    # Outstanding at suspend: published, not yet consumed by the backend.
    evs += [write(c(), 300), write(c(), 400)]
    evs += [Suspend(t_ns=c()), Resume(t_ns=c()), BackConsume(t_ns=c())]
    evs += [BackComplete(t_ns=c(), seq=2, backend=1), BackComplete(t_ns=c(), seq=3, backend=1)]
    evs.append(FrontConsume(t_ns=c()))
    evs += io_round(c, range(4, 6), [300, 400], [BLKIF_OP_READ] * 2)
    return evs


def test_seed003_norecovery_loses_outstanding_requests() -> None:
    evs = save_restore()[:-9]  # nothing is re-issued, so nothing to complete after resume
    res = run(evs, frontend="xbd-2006-norecovery")
    lost = [v for v in res.violations if v.invariant == "request-not-answered"]
    assert sorted(v.evidence["seq"] for v in lost) == [2, 3]
    assert "lost-write" in res.invariants()


def test_seed003_recovery_as_posted_reissues_to_uninitialised_sector() -> None:
    res = run(save_restore(), frontend="xbd-2006-recovery-as-posted")
    broken = res.invariants()
    assert {"reissue-mismatch", "misplaced-write", "stale-read", "lost-write"} <= broken
    mism = [v for v in res.violations if v.invariant == "reissue-mismatch"]
    assert [v.evidence["reissued"][1] for v in mism] == [0, 0]  # sector_number never shadowed
    # Retire pushed indices 0 then 1 on the free list, so 300 got index 1 and 400 index 0;
    # recover_interface re-issues in index order, not in issue order.
    assert [v.evidence["original"][1] for v in mism] == [400, 300]


def test_seed003_recovery_fixed_is_clean() -> None:
    res = run(save_restore(), frontend="xbd-2006-recovery-fixed")
    assert res.violations == []
    assert sum(isinstance(a, RequestReissued) for a in res.actions) == 2


# ------------------------------------------------------------------ seed 004


def migrate(nowait: bool) -> list[InputEvent]:
    c = Clock()
    evs: list[InputEvent] = [write(c(), 8 * i) for i in range(4)]
    evs += [BackConsume(t_ns=c()), Suspend(t_ns=c()), Handoff(t_ns=c())]
    if nowait:
        # The target runs at once: it re-issues, completes, then the guest overwrites
        # sector 0 before the source's stale write lands.
        evs.append(BackConsume(t_ns=c()))
        evs += [BackComplete(t_ns=c(), seq=q, backend=1) for q in range(4)]
        evs.append(FrontConsume(t_ns=c()))
        evs += io_round(c, range(4, 5), [0], [BLKIF_OP_WRITE])
        evs += [BackComplete(t_ns=c(), seq=q, backend=0) for q in range(4)]
    else:
        evs += [BackComplete(t_ns=c(), seq=q, backend=0) for q in range(4)]
        evs.append(BackConsume(t_ns=c()))
        evs += [BackComplete(t_ns=c(), seq=q, backend=1) for q in range(4)]
        evs.append(FrontConsume(t_ns=c()))
        evs += io_round(c, range(4, 5), [0], [BLKIF_OP_WRITE])
    evs += io_round(c, range(5, 6), [0], [BLKIF_OP_READ])
    return evs


def test_seed004_remove_nowait_lets_source_write_after_handoff() -> None:
    res = run(migrate(True), backend="blkback-2008-remove-nowait")
    late = [v for v in res.violations if v.invariant == "write-after-handoff"]
    assert sorted(v.evidence["seq"] for v in late) == [0, 1, 2, 3]
    assert {"stale-read", "lost-write"} <= res.invariants()


def test_seed004_remove_wait_publishes_shutdown_done_before_target() -> None:
    res = run(migrate(False), backend="blkback-2008-remove-wait")
    assert res.violations == []
    kinds = [type(a) for a in res.actions]
    assert kinds.index(ShutdownDone) < kinds.index(TargetStarted)
    last_source_write = max(
        i for i, a in enumerate(res.actions) if type(a).__name__ == "DiskWrite" and a.backend == 0
    )
    assert last_source_write < kinds.index(TargetStarted)
