"""Operations other than plain READ/WRITE: indirect, discard, flush/barrier, unknown ops."""

from __future__ import annotations

from blktrace_xen.model.events import (
    BackComplete,
    BackConsume,
    BackRespond,
    DiskWrite,
    FrontConsume,
    FrontMutateSlot,
    FrontSubmit,
    InputEvent,
    ResponsePushed,
)
from blktrace_xen.model.logics.linux import LinuxBlkback
from blktrace_xen.model.ring import (
    BLKIF_OP_DISCARD,
    BLKIF_OP_FLUSH_DISKCACHE,
    BLKIF_OP_INDIRECT,
    BLKIF_OP_READ,
    BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER,
    BLKIF_RSP_EOPNOTSUPP,
    BLKIF_RSP_ERROR,
    Req,
    Rsp,
    SharedRing,
)
from blktrace_xen.model.system import RunResult, run


def cycle(submits: list[FrontSubmit], complete: list[int]) -> list[InputEvent]:
    """Publish ``submits``, consume, complete the seqs in ``complete``, read responses."""
    evs: list[InputEvent] = list(submits)
    evs.append(BackConsume(t_ns=100))
    evs += [BackComplete(t_ns=101 + i, seq=q) for i, q in enumerate(complete)]
    evs.append(FrontConsume(t_ns=200))
    return evs


def responses(res: RunResult) -> list[tuple[int, int]]:
    return [(a.operation, a.status) for a in res.actions if isinstance(a, ResponsePushed)]


def indirect(t: int, iop: int, sector: int, nseg: int = 64, nr: int = 512) -> FrontSubmit:
    return FrontSubmit(
        t_ns=t,
        operation=BLKIF_OP_INDIRECT,
        indirect_op=iop,
        sector_number=sector,
        nr_sectors=nr,
        nr_segments=nseg,
    )


def test_indirect_write_and_read_are_legal_and_answered_with_indirect_op() -> None:
    evs = cycle([indirect(1, BLKIF_OP_WRITE, 0)], [0])
    evs += cycle([indirect(300, BLKIF_OP_READ, 0)], [1])
    res = run(evs)
    assert res.violations == []
    assert responses(res) == [(BLKIF_OP_WRITE, 0), (BLKIF_OP_READ, 0)]
    writes = [a for a in res.actions if isinstance(a, DiskWrite)]
    assert [(w.seq, w.sector_number, w.nr_sectors) for w in writes] == [(0, 0, 512)]
    assert res.disk is not None and res.disk.reads_verified == 1


def test_oracle_judges_indirect_io_like_plain_io() -> None:
    # An indirect write whose published slot is rewritten lands elsewhere: the read of its
    # sectors still returns the first write.
    evs = cycle([indirect(1, BLKIF_OP_WRITE, 0)], [0])
    evs += [indirect(300, BLKIF_OP_WRITE, 0), FrontMutateSlot(t_ns=301, idx=1, sector_number=4096)]
    evs += cycle([], [1])
    evs += cycle([indirect(500, BLKIF_OP_READ, 0)], [2])
    res = run(evs)
    assert {"slot-mutated", "misplaced-write", "stale-read"} <= res.invariants()
    stale = next(v for v in res.violations if v.invariant == "stale-read")
    assert (stale.evidence["got"], stale.evidence["expected"]) == (0, 1)


def test_indirect_segment_limit_and_bad_indirect_op_are_rejected() -> None:
    evs = cycle([indirect(1, BLKIF_OP_WRITE, 0, nseg=257), indirect(2, 3, 64, nseg=8)], [])
    res = run(evs)
    assert [v.invariant for v in res.violations] == ["invalid-request", "invalid-request"]
    # Rejected at once with ERROR and the effective op, never reaching the disk.
    assert responses(res) == [(BLKIF_OP_WRITE, BLKIF_RSP_ERROR), (3, BLKIF_RSP_ERROR)]
    assert not any(isinstance(a, DiskWrite) for a in res.actions)
    # 256 segments is Linux blkback's maximum: legal.
    assert run(cycle([indirect(1, BLKIF_OP_WRITE, 0, nseg=256)], [0])).violations == []


def test_response_with_op_6_for_an_indirect_request_is_an_op_mismatch() -> None:
    evs: list[InputEvent] = [indirect(1, BLKIF_OP_READ, 0), BackRespond(t_ns=2, id=0, operation=6)]
    res = run([*evs, FrontConsume(t_ns=3)])
    assert res.invariants() == {"response-op-mismatch"}


def test_discard_is_legal_and_changes_the_disk_content() -> None:
    w = FrontSubmit(t_ns=1, operation=BLKIF_OP_WRITE, sector_number=0, nr_sectors=8)
    d = FrontSubmit(
        t_ns=2, operation=BLKIF_OP_DISCARD, sector_number=0, nr_sectors=16, nr_segments=0
    )
    r = FrontSubmit(t_ns=300, operation=BLKIF_OP_READ, sector_number=0, nr_sectors=8)
    res = run([*cycle([w], [0]), *cycle([d], [1]), *cycle([r], [2])])
    assert res.violations == []
    assert res.disk is not None and res.disk.sectors_written == 16
    assert responses(res) == [(BLKIF_OP_WRITE, 0), (BLKIF_OP_DISCARD, 0), (BLKIF_OP_READ, 0)]


def test_flush_and_barrier_with_and_without_data() -> None:
    pure = [
        FrontSubmit(t_ns=1, operation=op, sector_number=0, nr_sectors=0, nr_segments=0)
        for op in (BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE_BARRIER)
    ]
    res = run(cycle(pure, [0, 1]))
    assert res.violations == []
    assert not any(isinstance(a, DiskWrite) for a in res.actions)
    fua = FrontSubmit(t_ns=1, operation=BLKIF_OP_FLUSH_DISKCACHE, sector_number=8, nr_sectors=8)
    res = run(cycle([fua], [0]))
    assert res.violations == []
    assert [a.seq for a in res.actions if isinstance(a, DiskWrite)] == [0]
    # A plain write with no segment is still invalid (only flushes may have none).
    bad = FrontSubmit(
        t_ns=1, operation=BLKIF_OP_WRITE, sector_number=0, nr_sectors=0, nr_segments=0
    )
    assert run(cycle([bad], [])).invariants() == {"invalid-request"}


def test_unknown_op_is_answered_eopnotsupp_at_once_without_violation() -> None:
    op4 = FrontSubmit(t_ns=1, operation=4, sector_number=0, nr_sectors=0)
    res = run(cycle([op4], []))
    assert res.violations == []
    assert responses(res) == [(4, BLKIF_RSP_EOPNOTSUPP)]
    final = res.rings[(1, 51712, 0)]
    assert (final.outstanding, final.inflight, final.front_state) == (0, 0, "CONNECTED")


class NoIndirect(LinuxBlkback):
    name = "no-indirect"
    max_indirect_segments = 0
    unknown_op_status = BLKIF_RSP_ERROR


def test_backend_without_indirect_support_answers_it_as_an_unknown_op() -> None:
    res = run(cycle([indirect(1, BLKIF_OP_WRITE, 0)], []), backend=NoIndirect())
    assert responses(res) == [(BLKIF_OP_INDIRECT, BLKIF_RSP_ERROR)]
    # The op is echoed as it came; blkfront wants indirect_op back and stops the device.
    assert res.invariants() == {"response-op-mismatch"}
    assert res.rings[(1, 51712, 0)].front_state == "ERROR"


def test_union_slot_decodes_an_indirect_request_from_response_bytes() -> None:
    ring = SharedRing(4)
    ring.write_request(0, Req(7, BLKIF_OP_WRITE, 1234, 8, 1, 0, 0))
    # Response id bytes 0..3 = operation 6, indirect_op 1, nr_segments 300 (u16).
    ring.write_response(0, Rsp(6 | 1 << 8 | 300 << 16, BLKIF_OP_WRITE, 0))
    garbage = ring.read_request(0)
    assert (garbage.operation, garbage.indirect_op, garbage.nr_segments) == (6, 1, 300)
    assert garbage.effective_op == BLKIF_OP_WRITE
    # And back: an indirect request's bytes read as a response id.
    ring.write_request(1, Req(2, BLKIF_OP_INDIRECT, 0, 8, 300, 0, 0, indirect_op=0))
    assert ring.read_response(1).id == 6 | 0 << 8 | 300 << 16
