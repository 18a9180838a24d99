"""The shared ring page: free-running u32 indices and slots that hold a request/response union.

Provenance: ``xen/include/public/io/ring.h`` (``DEFINE_RING_TYPES``, ``RING_PUSH_*``,
``RING_REQUEST_PROD_OVERFLOW``) and ``io/blkif.h`` (x86_64 layout of the entry union).

Why slots are modelled as a union and not as a queue: a response overwrites the first 16
bytes of the slot of the request with the same ring index, the rest of the request stays.
A backend that re-reads a slot it should not (BACK_RING_INIT under a live frontend, seed
002) therefore sees a *mixture*: the response's ``id`` in the request's
``operation``/``nr_segments``/``handle`` bytes and the stale ``sector_number`` behind it.
:meth:`SharedRing.read_request` and :meth:`SharedRing.read_response` reproduce that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from blktrace_xen.model.disk import Data

MASK32: Final = 0xFFFFFFFF

BLKIF_OP_READ: Final = 0
BLKIF_OP_WRITE: Final = 1
BLKIF_OP_WRITE_BARRIER: Final = 2
BLKIF_OP_FLUSH_DISKCACHE: Final = 3
BLKIF_OP_DISCARD: Final = 5
BLKIF_OP_INDIRECT: Final = 6
KNOWN_OPS: Final = frozenset({0, 1, 2, 3, 5, 6})
RW_OPS: Final = frozenset({0, 1, 2, 3, 6})  # blkback's dispatch_rw_block_io
FLUSH_OPS: Final = frozenset({2, 3})  # may carry 0 segments (a pure flush)

BLKIF_RSP_EOPNOTSUPP: Final = -2
BLKIF_RSP_ERROR: Final = -1
BLKIF_RSP_OKAY: Final = 0

BLKIF_MAX_SEGMENTS_PER_REQUEST: Final = 11
MAX_INDIRECT_SEGMENTS: Final = 256  # Linux blkback's feature-max-indirect-segments


def u32(value: int) -> int:
    """``value`` as a RING_IDX: every index comparison in ring.h is an unsigned difference."""
    return value & MASK32


IO_NONE: Final = 0
IO_READ: Final = 1
IO_WRITE: Final = 2


def io_kind(operation: int, indirect_op: int | None, nr_sectors: int) -> int:
    """What a request does to the disk content: IO_READ, IO_WRITE (anything that changes
    it: a write, a discard, a barrier or flush that carries data) or IO_NONE."""
    if operation == BLKIF_OP_INDIRECT:
        operation = indirect_op if indirect_op is not None else -1
    if operation == BLKIF_OP_READ:
        return IO_READ
    if operation in (BLKIF_OP_WRITE, BLKIF_OP_DISCARD):
        return IO_WRITE
    if operation in (BLKIF_OP_WRITE_BARRIER, BLKIF_OP_FLUSH_DISKCACHE) and nr_sectors > 0:
        return IO_WRITE  # a FUA / pre-flushed write: the segments are written too
    return IO_NONE


class Req:
    """One request as it sits in a slot (or in a backend's or frontend's private copy).

    Treated as immutable once written to a slot: a frontend that "mutates a published
    slot" replaces the slot's object, so a backend that already copied it keeps the old one
    (this is what RING_COPY_REQUEST buys). ``seq`` and ``version`` are the model's own
    bookkeeping (which guest submission this is, which data its pages hold); ``garbage``
    marks a request decoded from a slot that held a response. ``indirect_op`` is the real
    operation of a BLKIF_OP_INDIRECT request (its response carries it), else None.
    """

    __slots__ = (
        "garbage",
        "id",
        "indirect_op",
        "nr_sectors",
        "nr_segments",
        "operation",
        "sector_number",
        "seq",
        "version",
    )

    def __init__(  # noqa: PLR0917 - positional on purpose: built on the hot path
        self,
        id: int,
        operation: int,
        sector_number: int,
        nr_sectors: int,
        nr_segments: int,
        seq: int,
        version: int,
        garbage: bool = False,
        indirect_op: int | None = None,
    ) -> None:
        self.id = id
        self.operation = operation
        self.sector_number = sector_number
        self.nr_sectors = nr_sectors
        self.nr_segments = nr_segments
        self.seq = seq
        self.version = version
        self.garbage = garbage
        self.indirect_op = indirect_op

    @property
    def effective_op(self) -> int:
        """The operation a response must carry: ``indirect_op`` for an indirect request."""
        op = self.operation
        if op == BLKIF_OP_INDIRECT and self.indirect_op is not None:
            return self.indirect_op
        return op

    def key(self) -> tuple[int, int, int, int]:
        """What must survive a re-issue unchanged: (operation, sector, sectors, segments)."""
        return (self.operation, self.sector_number, self.nr_sectors, self.nr_segments)

    def copy(self, **changes: int | None) -> Req:
        new = Req(
            self.id,
            self.operation,
            self.sector_number,
            self.nr_sectors,
            self.nr_segments,
            self.seq,
            self.version,
            self.garbage,
            self.indirect_op,
        )
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def __repr__(self) -> str:
        ind = "" if self.indirect_op is None else f", indirect_op={self.indirect_op}"
        return (
            f"Req(id={self.id}, op={self.operation}{ind}, sector={self.sector_number}, "
            f"nr_sectors={self.nr_sectors}, nseg={self.nr_segments}, seq={self.seq})"
        )


RspSlot = tuple[int, int, int, "Data | None"]
"""A response as stored in a slot: (id, operation, status, data); :class:`Rsp` is one."""


class Rsp(NamedTuple):
    """One response: ``id``, ``operation``, ``status`` as on the wire; ``data`` is what a
    READ returned (the write seqs on the disk, per block or per sector: the content of the
    granted pages, :data:`~blktrace_xen.model.disk.Data`).

    A tuple so the backend can store a plain ``(id, operation, status, data)`` in a slot
    (building a class instance per response was a tenth of the model's time)."""

    id: int
    operation: int
    status: int
    data: Data | None = None

    def __repr__(self) -> str:
        return f"Rsp(id={self.id}, op={self.operation}, status={self.status})"


class SharedRing:
    """The shared page: four public indices and ``nr_ents`` union slots.

    ``req_prod``/``rsp_event`` are written by the frontend, ``rsp_prod``/``req_event`` by the
    backend. ``slot_req[i]`` is the last request written to slot *i*, ``slot_rsp[i]`` the
    response written over it since (None when the slot's first 16 bytes are a request).
    """

    __slots__ = (
        "mask",
        "nr_ents",
        "req_event",
        "req_prod",
        "rsp_event",
        "rsp_prod",
        "slot_req",
        "slot_rsp",
    )

    def __init__(self, nr_ents: int = 32, start_idx: int = 0) -> None:
        if nr_ents <= 0 or nr_ents & (nr_ents - 1):
            from blktrace_xen.errors import ModelUsageError

            raise ModelUsageError(f"nr_ents must be a power of two, got {nr_ents}")
        self.nr_ents = nr_ents
        self.mask = nr_ents - 1
        start = u32(start_idx)
        # SHARED_RING_INIT sets both producers to 0 and both events to 1; a ring attached
        # mid-life (replay of a trace that starts late) starts at start_idx instead.
        self.req_prod = start
        self.rsp_prod = start
        self.req_event = u32(start + 1)
        self.rsp_event = u32(start + 1)
        self.slot_req: list[Req | None] = [None] * nr_ents
        self.slot_rsp: list[RspSlot | None] = [None] * nr_ents

    def write_request(self, idx: int, req: Req) -> None:
        slot = idx & self.mask
        self.slot_req[slot] = req
        self.slot_rsp[slot] = None

    def write_response(self, idx: int, rsp: RspSlot) -> None:
        self.slot_rsp[idx & self.mask] = rsp

    def read_request(self, idx: int) -> Req:
        """RING_COPY_REQUEST: the request the slot's bytes decode to (x86_64 layout)."""
        slot = idx & self.mask
        rsp = self.slot_rsp[slot]
        req = self.slot_req[slot]
        if rsp is None and req is not None:
            return req
        # Response bytes 0..15 over request bytes 0..15: request operation/nr_segments/handle
        # are the low bytes of the response id, request id = response op | status << 16.
        # An indirect request keeps indirect_op in byte 1 and a u16 nr_segments in 2..3.
        stale_sector = req.sector_number if req is not None else 0
        stale_nr = req.nr_sectors if req is not None else 0
        stale_ver = req.version if req is not None else 0
        rid, rop, rst = (rsp[0], rsp[1], rsp[2] & 0xFFFF) if rsp is not None else (0, 0, 0)
        op = rid & 0xFF
        indirect = op == BLKIF_OP_INDIRECT
        return Req(
            id=rop | (rst << 16),
            operation=op,
            sector_number=stale_sector,
            nr_sectors=stale_nr,
            nr_segments=(rid >> 16) & 0xFFFF if indirect else (rid >> 8) & 0xFF,
            seq=-1,
            version=stale_ver,
            garbage=True,
            indirect_op=(rid >> 8) & 0xFF if indirect else None,
        )

    def read_response(self, idx: int) -> Rsp:
        """RING_COPY_RESPONSE: the response the slot's bytes decode to (x86_64 layout)."""
        slot = idx & self.mask
        rsp = self.slot_rsp[slot]
        if rsp is not None:
            return Rsp(*rsp)
        req = self.slot_req[slot]
        if req is None:
            return Rsp(0, 0, 0)
        status = (req.id >> 16) & 0xFFFF
        if status >= 0x8000:
            status -= 0x10000
        if req.indirect_op is not None:
            rid = req.operation | (req.indirect_op << 8) | ((req.nr_segments & 0xFFFF) << 16)
        else:
            rid = req.operation | (req.nr_segments << 8)
        return Rsp(rid, req.id & 0xFF, status)
