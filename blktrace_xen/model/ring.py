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

from typing import TYPE_CHECKING, Final

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

BLKIF_RSP_EOPNOTSUPP: Final = -2
BLKIF_RSP_ERROR: Final = -1
BLKIF_RSP_OKAY: Final = 0

BLKIF_MAX_SEGMENTS_PER_REQUEST: Final = 11


def u32(value: int) -> int:
    """``value`` as a RING_IDX: every index comparison in ring.h is an unsigned difference."""
    return value & MASK32


class Req:
    """One request as it sits in a slot (or in a backend's or frontend's private copy).

    Treated as immutable once written to a slot: a frontend that "mutates a published
    slot" replaces the slot's object, so a backend that already copied it keeps the old one
    (this is what RING_COPY_REQUEST buys). ``seq`` and ``version`` are the model's own
    bookkeeping (which guest submission this is, which data its pages hold); ``garbage``
    marks a request decoded from a slot that held a response.
    """

    __slots__ = (
        "garbage",
        "id",
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
    ) -> None:
        self.id = id
        self.operation = operation
        self.sector_number = sector_number
        self.nr_sectors = nr_sectors
        self.nr_segments = nr_segments
        self.seq = seq
        self.version = version
        self.garbage = garbage

    def key(self) -> tuple[int, int, int, int]:
        """What must survive a re-issue unchanged: (operation, sector, sectors, segments)."""
        return (self.operation, self.sector_number, self.nr_sectors, self.nr_segments)

    def copy(self, **changes: int) -> Req:
        new = Req(
            self.id,
            self.operation,
            self.sector_number,
            self.nr_sectors,
            self.nr_segments,
            self.seq,
            self.version,
            self.garbage,
        )
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def __repr__(self) -> str:
        return (
            f"Req(id={self.id}, op={self.operation}, sector={self.sector_number}, "
            f"nr_sectors={self.nr_sectors}, nseg={self.nr_segments}, seq={self.seq})"
        )


class Rsp:
    """One response: ``id``, ``operation``, ``status`` as on the wire; ``data`` is what a
    READ returned (the write seqs on the disk, per block or per sector: the content of the
    granted pages, :data:`~blktrace_xen.model.disk.Data`)."""

    __slots__ = ("data", "id", "operation", "status")

    def __init__(self, id: int, operation: int, status: int, data: Data | None = None) -> None:
        self.id = id
        self.operation = operation
        self.status = status
        self.data = data

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
        self.slot_rsp: list[Rsp | None] = [None] * nr_ents

    def write_request(self, idx: int, req: Req) -> None:
        slot = idx & self.mask
        self.slot_req[slot] = req
        self.slot_rsp[slot] = None

    def write_response(self, idx: int, rsp: Rsp) -> None:
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
        stale_sector = req.sector_number if req is not None else 0
        stale_nr = req.nr_sectors if req is not None else 0
        stale_ver = req.version if req is not None else 0
        rid = rsp.id if rsp is not None else 0
        rop = rsp.operation if rsp is not None else 0
        rst = (rsp.status & 0xFFFF) if rsp is not None else 0
        return Req(
            id=rop | (rst << 16),
            operation=rid & 0xFF,
            sector_number=stale_sector,
            nr_sectors=stale_nr,
            nr_segments=(rid >> 8) & 0xFF,
            seq=-1,
            version=stale_ver,
            garbage=True,
        )

    def read_response(self, idx: int) -> Rsp:
        """RING_COPY_RESPONSE: the response the slot's bytes decode to (x86_64 layout)."""
        slot = idx & self.mask
        rsp = self.slot_rsp[slot]
        if rsp is not None:
            return rsp
        req = self.slot_req[slot]
        if req is None:
            return Rsp(0, 0, 0)
        status = (req.id >> 16) & 0xFFFF
        if status >= 0x8000:
            status -= 0x10000
        return Rsp(req.operation | (req.nr_segments << 8), req.id & 0xFF, status)
