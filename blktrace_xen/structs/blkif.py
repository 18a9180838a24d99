"""blkif shared-ring layouts, per protocol ABI: pure construct declarations.

Provenance: ``xen/include/public/io/blkif.h`` and ``io/ring.h`` (Xen 4.17,
Debian libxen-dev), offsets as printed by gcc ``-m64`` / ``-m32`` (see
docs/xen-abi.md §1-2 and tests/oracles/ring_oracle.c, which checks every
offset below against the real headers). Field names copy the C headers.

The only difference between the ABIs is the alignment of u64 inside structs:
8 bytes for x86_64-abi (and arm-abi), 4 bytes for x86_32-abi. Explicit
``_pad*`` members are declared as raw bytes, never as ``Padding``: frontends
and backends leave stale bytes there (blkback writes only id/operation/status
of a response since XSA-216), so parsing must keep them and building must be
able to reproduce them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from construct import (
    Array,
    Bytes,
    Default,
    FixedSized,
    Int8ul,
    Int16sl,
    Int16ul,
    Int32ul,
    Int64ul,
    Peek,
    Struct,
    Switch,
    this,
)

from blktrace_xen.errors import ModelUsageError

XEN_PAGE_SIZE: Final = 4096
# offsetof(struct blkif_sring, ring): 4 RING_IDX + pvt[4] + __pad[44].
SRING_HEADER_SIZE: Final = 64
BLKIF_MAX_SEGMENTS_PER_REQUEST: Final = 11
BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: Final = 8
# XEN_PAGE_SIZE / sizeof(struct blkif_request_segment)
SEGS_PER_INDIRECT_FRAME: Final = 512
BLKIF_DISCARD_SECURE: Final = 1
VDISK_CDROM: Final = 0x1
VDISK_REMOVABLE: Final = 0x2
VDISK_READONLY: Final = 0x4
MAX_RING_PAGE_ORDER: Final = 4

ABIS: Final = ("x86_64-abi", "x86_32-abi", "arm-abi")


class BlkifOp(IntEnum):
    """``BLKIF_OP_*`` (blkif.h)."""

    BLKIF_OP_READ = 0
    BLKIF_OP_WRITE = 1
    BLKIF_OP_WRITE_BARRIER = 2
    BLKIF_OP_FLUSH_DISKCACHE = 3
    BLKIF_OP_RESERVED_1 = 4
    BLKIF_OP_DISCARD = 5
    BLKIF_OP_INDIRECT = 6


class BlkifStatus(IntEnum):
    """``BLKIF_RSP_*`` (blkif.h); the response status is an int16."""

    BLKIF_RSP_EOPNOTSUPP = -2
    BLKIF_RSP_ERROR = -1
    BLKIF_RSP_OKAY = 0


class XenbusState(IntEnum):
    """``enum xenbus_state`` (io/xenbus.h)."""

    XenbusStateUnknown = 0
    XenbusStateInitialising = 1
    XenbusStateInitWait = 2
    XenbusStateInitialised = 3
    XenbusStateConnected = 4
    XenbusStateClosing = 5
    XenbusStateClosed = 6
    XenbusStateReconfiguring = 7
    XenbusStateReconfigured = 8


# Which request layout blkback casts a slot to, by operation (Linux blkif.h
# union; any other op is `request_other`: only operation and id mean anything).
RW_OPS: Final = frozenset(
    {
        BlkifOp.BLKIF_OP_READ,
        BlkifOp.BLKIF_OP_WRITE,
        BlkifOp.BLKIF_OP_WRITE_BARRIER,
        BlkifOp.BLKIF_OP_FLUSH_DISKCACHE,
    }
)


def _pad(n: int) -> Any:
    return Default(Bytes(n), bytes(n))


@dataclass(frozen=True, slots=True)
class BlkifStructs:
    """The blkif declarations of one protocol ABI (build with :func:`blkif_structs`)."""

    abi: str
    u64_align: int
    segment: Any
    request_rw: Any
    request_discard: Any
    request_indirect: Any
    request_other: Any
    request: Any
    response: Any
    sring_header: Any
    indirect_page: Any
    entry_size: int

    def sring(self, ring_page_order: int) -> Any:
        """The whole shared-ring area of ``ring_page_order`` (one contiguous area)."""
        geo = ring_geometry(self.abi, ring_page_order)
        tail = geo.nbytes - SRING_HEADER_SIZE - geo.nr_ents * self.entry_size
        return Struct(
            "header" / self.sring_header,
            "ring" / Array(geo.nr_ents, Bytes(self.entry_size)),
            "_tail" / _pad(tail),
        )


def _check_abi(abi: str) -> None:
    if abi not in ABIS:
        raise ModelUsageError(f"unknown blkif protocol ABI {abi!r}; expected one of {ABIS}")


def blkif_structs(abi: str) -> BlkifStructs:
    """Declarations for ``abi`` ("x86_64-abi", "x86_32-abi" or "arm-abi").

    arm-abi aligns u64 on 8 bytes like x86_64-abi, so the layouts are identical.
    """
    _check_abi(abi)
    wide = abi != "x86_32-abi"
    # Bytes of padding inserted before an 8-byte-aligned u64 that follows 4 bytes.
    p4 = 4 if wide else 0

    segment = Struct(
        "gref" / Int32ul,
        "first_sect" / Int8ul,
        "last_sect" / Int8ul,
        "_pad" / _pad(2),
    )
    request_rw = Struct(
        "operation" / Int8ul,
        "nr_segments" / Int8ul,
        "handle" / Int16ul,
        "_pad0" / _pad(p4),
        "id" / Int64ul,
        "sector_number" / Int64ul,
        "seg" / Array(BLKIF_MAX_SEGMENTS_PER_REQUEST, segment),
    )
    request_discard = Struct(
        "operation" / Int8ul,
        "flag" / Int8ul,
        "handle" / Int16ul,
        "_pad0" / _pad(p4),
        "id" / Int64ul,
        "sector_number" / Int64ul,
        "nr_sectors" / Int64ul,
    )
    # x86_64: 4 tail bytes round 60 up to 64; x86_32: an explicit u64 `pad`
    # ("Make it 64 byte aligned on i386") at 56.
    request_indirect = Struct(
        "operation" / Int8ul,
        "indirect_op" / Int8ul,
        "nr_segments" / Int16ul,
        "_pad0" / _pad(p4),
        "id" / Int64ul,
        "sector_number" / Int64ul,
        "handle" / Int16ul,
        "_pad1" / _pad(2),
        "indirect_grefs" / Array(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, Int32ul),
        "_pad2" / _pad(4 if wide else 8),
    )
    request_other = Struct(
        "operation" / Int8ul,
        "_pad0" / _pad(3 + p4),
        "id" / Int64ul,
    )
    response = Struct(
        "id" / Int64ul,
        "operation" / Int8ul,
        "_pad0" / _pad(1),
        "status" / Int16sl,
        "_pad1" / _pad(p4),
    )
    entry_size = request_rw.sizeof()
    # A ring slot read as a request: the variant is chosen by `operation`.
    request = FixedSized(
        entry_size,
        Struct(
            "operation" / Peek(Int8ul),
            "body"
            / Switch(
                this.operation,
                {
                    int(BlkifOp.BLKIF_OP_READ): request_rw,
                    int(BlkifOp.BLKIF_OP_WRITE): request_rw,
                    int(BlkifOp.BLKIF_OP_WRITE_BARRIER): request_rw,
                    int(BlkifOp.BLKIF_OP_FLUSH_DISKCACHE): request_rw,
                    int(BlkifOp.BLKIF_OP_DISCARD): request_discard,
                    int(BlkifOp.BLKIF_OP_INDIRECT): request_indirect,
                },
                default=request_other,
            ),
        ),
    )
    sring_header = Struct(
        "req_prod" / Int32ul,
        "req_event" / Int32ul,
        "rsp_prod" / Int32ul,
        "rsp_event" / Int32ul,
        "pvt" / _pad(4),
        "__pad" / _pad(44),
    )
    indirect_page = Array(SEGS_PER_INDIRECT_FRAME, segment)
    return BlkifStructs(
        abi=abi,
        u64_align=8 if wide else 4,
        segment=segment,
        request_rw=request_rw,
        request_discard=request_discard,
        request_indirect=request_indirect,
        request_other=request_other,
        request=request,
        response=response,
        sring_header=sring_header,
        indirect_page=indirect_page,
        entry_size=entry_size,
    )


@dataclass(frozen=True, slots=True)
class RingGeometry:
    """Size of one blkif ring: ``__CONST_RING_SIZE`` of the ring's area."""

    abi: str
    ring_page_order: int
    nr_ents: int
    entry_size: int
    nbytes: int  # XEN_PAGE_SIZE << ring_page_order: the whole shared area


def _round_down_pow2(x: int) -> int:
    return 1 << (x.bit_length() - 1) if x > 0 else 0


def ring_geometry(abi: str, ring_page_order: int) -> RingGeometry:
    """Geometry of a blkif ring of ``2**ring_page_order`` pages (orders 0-4).

    nr_ents is the number of union entries that fit after the 64-byte header,
    rounded down to a power of two (ring.h ``__RD32``): 32 << order for both ABIs.
    """
    _check_abi(abi)
    if not 0 <= ring_page_order <= MAX_RING_PAGE_ORDER:
        raise ModelUsageError(f"ring-page-order {ring_page_order} outside 0..{MAX_RING_PAGE_ORDER}")
    entry_size = 108 if abi == "x86_32-abi" else 112
    nbytes = XEN_PAGE_SIZE << ring_page_order
    nr_ents = _round_down_pow2((nbytes - SRING_HEADER_SIZE) // entry_size)
    return RingGeometry(abi, ring_page_order, nr_ents, entry_size, nbytes)
