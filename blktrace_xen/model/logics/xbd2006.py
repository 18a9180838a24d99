"""Seed 003: NetBSD xbd (frontend), 2006 — "save/restore for xbd" (Jed Davis, port-xen).

``xbd-2006-norecovery`` (legacy): request ids are the addresses of ``struct xbdreq``; on
restore the ring is reset (disconnect_interface zeroes it and all indices) and nothing is
re-issued: every request outstanding at suspend is lost (``request-not-answered``; a write
not yet on disk is a ``lost-write``).

``xbd-2006-recovery-as-posted`` (the posted patch, line by line): ``rec_ring`` is
malloc()ed (not zeroed) with BLKIF_RING_SIZE entries, the free list threaded through
``id`` (REC_RING_NIL = PAGE_SIZE - 1, allocated iff ``id >= PAGE_SIZE``). rec_ring_log
takes the head of the free list and copies ``operation``, ``nr_segments``, ``device``
(twice), the xbdreq pointer into ``id`` and every ``frame_and_sects`` (as pseudo-physical
frames, so the data and the sector count survive) — but **not** ``sector_number``. The
ring request's id becomes the rec_ring index. rec_ring_retire frees the index without
checking it was allocated (a duplicate response corrupts the free list). On reconnect
recover_interface walks indices 0..BLKIF_RING_SIZE-1 and re-issues every allocated entry
in *index* order via rec_ring_recover, which copies ``rec_ring[idx].sector_number`` — a
field never written: the write goes to whatever the uninitialised memory says
(``reissue-mismatch``, ``misplaced-write``, then ``lost-write`` / ``stale-read``).
The model takes the uninitialised value as :attr:`uninitialised_sector` (0 by default:
fresh pages from malloc).

``xbd-2006-recovery-fixed``: the same ring, copying ``sector_number`` in rec_ring_log and
ignoring responses for unallocated entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blktrace_xen.errors import FrontendProtocolError
from blktrace_xen.model.ring import Req

if TYPE_CHECKING:
    from blktrace_xen.model.frontend import Frontend

PAGE_SIZE = 4096
REC_RING_NIL = PAGE_SIZE - 1
XBDREQ_BASE = 0xC0E41000  # i386 kernel addresses: any value >= PAGE_SIZE works
XBDREQ_SIZE = 0x40


class _XbdreqPool:
    """GET_XBDREQ / PUT_XBDREQ: the request ids of the legacy driver are these pointers."""

    def __init__(self) -> None:
        self.free: list[int] = []
        self.next = 0

    def get(self) -> int:
        if self.free:
            return self.free.pop()
        ptr = XBDREQ_BASE + self.next * XBDREQ_SIZE
        self.next += 1
        return ptr

    def put(self, ptr: int) -> None:
        self.free.append(ptr)


class Xbd2006NoRecovery:
    name = "xbd-2006-norecovery"
    validates_responses = False

    def __init__(self) -> None:
        self.pool = _XbdreqPool()
        self.live: set[int] = set()

    def setup(self, fe: Frontend, nr_ents: int) -> None:
        self.pool = _XbdreqPool()
        self.live = set()

    def log(self, fe: Frontend, req: Req, wanted_id: int | None) -> int:
        ptr = self.pool.get()
        self.live.add(ptr)
        return ptr

    def retire(self, fe: Frontend, rsp_id: int) -> None:
        if rsp_id in self.live:
            self.live.discard(rsp_id)
            self.pool.put(rsp_id)

    def recover(self, fe: Frontend) -> list[Req]:
        # Nothing is kept: the xbdreqs outstanding at suspend are simply forgotten.
        self.live.clear()
        return []


class Xbd2006RecoveryAsPosted:
    name = "xbd-2006-recovery-as-posted"
    validates_responses = False
    copies_sector_number = False
    checks_allocated_on_retire = False
    uninitialised_sector = 0

    def __init__(self) -> None:
        self.size = 0
        self.rec_id: list[int] = []
        self.rec_operation: list[int] = []
        self.rec_nr_segments: list[int] = []
        self.rec_sector_number: list[int] = []
        self.rec_frames: list[tuple[int, int]] = []  # (sectors covered, data) of the frames
        self.rec_ring_free = REC_RING_NIL
        self.pool = _XbdreqPool()

    def setup(self, fe: Frontend, nr_ents: int) -> None:
        # rec_ring_init: malloc (not zeroed) and thread the free list 0, 1, 2, ...
        self.size = nr_ents
        self.rec_id = [0] * nr_ents
        self.rec_operation = [0] * nr_ents
        self.rec_nr_segments = [0] * nr_ents
        self.rec_sector_number = [self.uninitialised_sector] * nr_ents
        self.rec_frames = [(0, 0)] * nr_ents
        self.rec_ring_free = REC_RING_NIL
        for i in range(nr_ents - 1, -1, -1):
            self.rec_id[i] = self.rec_ring_free
            self.rec_ring_free = i

    def is_alloc(self, idx: int) -> bool:
        return self.rec_id[idx] >= PAGE_SIZE  # REC_RING_ISALLOC

    def log(self, fe: Frontend, req: Req, wanted_id: int | None) -> int:
        # rec_ring_log
        if self.rec_ring_free == REC_RING_NIL:
            raise FrontendProtocolError(
                fe.sys.ring_name,
                fe.state.value,
                "FrontSubmit",
                "xbd: recovery ring exhausted (panic)",
            )
        idx = self.rec_ring_free
        rec_id = self.rec_id
        # rec_ring_retire trusts the response id (a KASSERT only), so a response
        # for a slot that was not allocated threads a live slot, or an xbdreq
        # pointer, into the free list; the C driver then scribbles over memory.
        # The model stops there with a protocol error instead of an IndexError.
        if not 0 <= idx < self.size or rec_id[idx] >= PAGE_SIZE:  # is_alloc, inlined
            raise FrontendProtocolError(
                fe.sys.ring_name,
                fe.state.value,
                "FrontSubmit",
                f"xbd: recovery ring free list corrupted (next free {idx:#x} is not a free slot):"
                " a response retired a slot that was not in flight",
            )
        self.rec_ring_free = rec_id[idx]
        self.rec_operation[idx] = req.operation
        self.rec_nr_segments[idx] = req.nr_segments
        free = self.pool.free  # the xbdreq pointer: GET_XBDREQ, a call less when one is free
        rec_id[idx] = free.pop() if free else self.pool.get()
        if self.copies_sector_number:
            self.rec_sector_number[idx] = req.sector_number
        self.rec_frames[idx] = (req.nr_sectors, req.version)  # xpmap_mtop(frame_and_sects)
        return idx

    def retire(self, fe: Frontend, rsp_id: int) -> None:
        # rec_ring_retire: KASSERT(idx < BLKIF_RING_SIZE) only
        idx = rsp_id
        if not 0 <= idx < self.size:
            return
        rec_id = self.rec_id
        rid = rec_id[idx]
        if self.checks_allocated_on_retire and rid < PAGE_SIZE:  # not is_alloc(idx)
            return
        if rid >= PAGE_SIZE:
            self.pool.free.append(rid)  # PUT_XBDREQ, inlined
        rec_id[idx] = self.rec_ring_free
        self.rec_ring_free = idx

    def recover(self, fe: Frontend) -> list[Req]:
        # recover_interface -> rec_ring_recover for every allocated index, in index order
        out: list[Req] = []
        for i in range(self.size):
            if self.is_alloc(i):
                nr_sectors, version = self.rec_frames[i]
                out.append(
                    Req(
                        i,
                        self.rec_operation[i],
                        self.rec_sector_number[i],
                        nr_sectors,
                        self.rec_nr_segments[i],
                        -1,
                        version,
                    )
                )
        return out


class Xbd2006RecoveryFixed(Xbd2006RecoveryAsPosted):
    name = "xbd-2006-recovery-fixed"
    copies_sector_number = True
    checks_allocated_on_retire = True
