"""Agent records of a ring capture (formats/ringcap.md, "Agent interface"): pure declarations.

``blktrace-xen capture`` writes one pcapng packet per probe event on an
interface of link type ``LINKTYPE_USER2``. Every record is a 32-byte head
(:data:`RecordHead`) and a body fixed by its kind (:data:`BODIES`); slot bytes
and texts follow the fixed part. The agent runs in a minimal dom0 and packs
with :mod:`struct` (the ``*_FMT`` strings); ``tests/test_capture.py`` checks
that every format packs exactly what the construct declaration builds.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

from construct import (
    Bytes,
    GreedyBytes,
    Int8ul,
    Int16sl,
    Int16ul,
    Int32sl,
    Int32ul,
    Int64ul,
    Struct,
)

AGENT_IF_NAME: Final = "blkback-agent"
SLOT_BYTES: Final = 112  # bytes read per ring slot (an x86_64 entry; x86_32 uses the first 108)
UNKNOWN_U16: Final = 0xFFFF
UNKNOWN_U32: Final = 0xFFFFFFFF


class Kind(IntEnum):
    """What a record says (one per probe line kind of blktrace_xen.capture.probes)."""

    RSP_ENTRY = 1  # make_response entered: the response, indices, slots k (and SLOT k+1)
    RSP_EXIT = 2  # make_response returned: the index the response went to
    CONSUME = 3  # xen_blkbk_map: a read/write/flush request consumed
    NOTIFY = 4  # xen_blkif_be_int: the frontend kicked the backend
    RING = 5  # a ring's state: at connect, at first sight, with the counters
    XENBUS = 6  # frontend_changed / probe / remove of a backend device
    DISCONNECT = 7  # xen_blkif_disconnect entered: one record per ring
    DISCONNECT_RET = 8  # xen_blkif_disconnect returned
    UNMAP = 9  # grants unmapped (non-persistent)
    CLOCK = 10  # the agent's TSC / realtime calibration against the monotonic clock
    LOST = 11  # events bpftrace reported lost (its ring buffer was full)
    AGENT = 12  # the agent started, stopped, or noted something (text)
    SLOT = 13  # one ring slot read: the next slot at a response, or a disconnect dump


class SlotWhy(IntEnum):
    """Why a SLOT record was read."""

    NEXT_AT_RESPONSE = 1  # slot k+1 at make_response entry
    AT_DISCONNECT = 2  # published and not answered when the backend disconnected


class XenbusEvent(IntEnum):
    """What a XENBUS record reports."""

    FRONTEND_CHANGED = 1  # the frontend's state as the backend read it
    PROBE = 2
    REMOVE = 3
    BACKEND_STATE = 4  # the backend switched its own state


class RingReason(IntEnum):
    """Why a RING record was written."""

    CONNECT = 1  # read_per_ring_refs returned 0: the ring was just mapped
    FIRST_SIGHT = 3  # the first request the agent saw the ring consume


class AgentWhat(IntEnum):
    """AGENT records."""

    START = 1  # text: probes attached, kernel, bpftrace version, missing probes
    STOP = 2  # text: why it stopped, events, lost events
    NOTE = 3  # text: anything the agent saw that a reader should know (e.g. counters)


# flags of a XENBUS record
UNDER_UNBIND: Final = 1  # the call ran inside a sysfs unbind
UNDER_BIND: Final = 2  # the call ran inside a sysfs bind

HEAD_FMT: Final = "<BBHIHHIQII"
RecordHead = Struct(
    "kind" / Int8ul,
    "protocol"
    / Int8ul,  # the kernel's enum blkif_protocol: 1 native, 2 x86_32, 3 x86_64; 0 unknown
    "domid" / Int16ul,  # frontend domain; 0xffff unknown
    "vdev" / Int32ul,  # xenstore device number; 0xffffffff unknown
    "queue" / Int16ul,  # 0xffff: the record is about the whole device
    "cpu" / Int16ul,
    "tid" / Int32ul,
    "ring" / Int64ul,  # kernel address of the ring (or device): tells backend instances apart
    "nr_ents" / Int32ul,
    "reserved" / Int32ul,
)

# Indices as the backend saw them: its private response producer and request
# consumer, and the shared req_prod / rsp_prod.
_INDICES = (
    "rsp_prod_pvt" / Int32ul,
    "req_cons" / Int32ul,
    "req_prod" / Int32ul,
    "rsp_prod" / Int32ul,
)
_COUNTERS = (
    "st_rd_req" / Int64ul,
    "st_wr_req" / Int64ul,
    "st_f_req" / Int64ul,
    "st_ds_req" / Int64ul,
)

BODY_FMT: Final[dict[Kind, str]] = {
    Kind.RSP_ENTRY: "<IIIIhBBQ",
    Kind.RSP_EXIT: "<QQII",
    Kind.CONSUME: "<IIIIi",
    Kind.NOTIFY: "<IIII",
    Kind.RING: "<IIIIIIQQQQQ",
    Kind.XENBUS: "<IIII",
    Kind.DISCONNECT: "<IIIIiIQ",
    Kind.DISCONNECT_RET: "<iI",
    Kind.UNMAP: "<II",
    Kind.CLOCK: "<QQQQ",
    Kind.LOST: "<Q",
    Kind.AGENT: "<II",
    Kind.SLOT: "<IIQ",
}

BODIES: Final[dict[Kind, Any]] = {
    Kind.RSP_ENTRY: Struct(
        *_INDICES,
        "status" / Int16sl,
        "operation" / Int8ul,
        "pad" / Int8ul,
        "id" / Int64ul,
        "slot" / Bytes(SLOT_BYTES),  # slot rsp_prod_pvt as read at entry
    ),
    Kind.RSP_EXIT: Struct(
        "entry_ns" / Int64ul,  # the RSP_ENTRY of the same call (0: entered before the agent)
        "id" / Int64ul,
        "idx" / Int32ul,  # where the response was found; 0xffffffff: not found
        "rsp_prod_pvt" / Int32ul,  # at exit
    ),
    # req_cons is after the consume: the request consumed is req_cons - 1
    Kind.CONSUME: Struct(*_INDICES, "nr_grants" / Int32sl),  # grant pages handed to the map
    Kind.NOTIFY: Struct(*_INDICES),
    Kind.RING: Struct(
        *_INDICES,
        "nr_ring_pages" / Int32ul,
        "reason" / Int32ul,  # RingReason
        "sring" / Int64ul,  # kernel address of the mapped shared ring (0: not mapped)
        *_COUNTERS,
    ),
    Kind.XENBUS: Struct(
        "event" / Int32ul,  # XenbusEvent
        "frontend_state" / Int32ul,  # 255 when the event does not carry it
        "backend_state" / Int32ul,  # 255 when the event does not carry it
        "flags" / Int32ul,  # UNDER_UNBIND | UNDER_BIND
        "nodename" / GreedyBytes,  # backend/vbd/<domid>/<vdev>, or the frontend's path
    ),
    # inflight: req_cons - rsp_prod_pvt, the requests consumed and not yet answered
    Kind.DISCONNECT: Struct(*_INDICES, "inflight" / Int32sl, "pad" / Int32ul, "sring" / Int64ul),
    Kind.DISCONNECT_RET: Struct("ret" / Int32sl, "pad" / Int32ul),
    Kind.UNMAP: Struct("grants" / Int32ul, "pad" / Int32ul),
    Kind.CLOCK: Struct(
        "tsc" / Int64ul,
        "realtime_ns" / Int64ul,
        "mono_before_ns" / Int64ul,  # the TSC was read between these two monotonic reads
        "mono_after_ns" / Int64ul,
    ),
    Kind.LOST: Struct("count" / Int64ul),
    Kind.AGENT: Struct("what" / Int32ul, "pad" / Int32ul, "text" / GreedyBytes),
    Kind.SLOT: Struct(
        "idx" / Int32ul,
        "why" / Int32ul,  # SlotWhy
        "entry_ns" / Int64ul,  # the RSP_ENTRY or DISCONNECT it belongs to
        "slot" / Bytes(SLOT_BYTES),
    ),
}

__all__ = [
    "AGENT_IF_NAME",
    "BODIES",
    "BODY_FMT",
    "HEAD_FMT",
    "SLOT_BYTES",
    "UNDER_BIND",
    "UNDER_UNBIND",
    "UNKNOWN_U16",
    "UNKNOWN_U32",
    "AgentWhat",
    "Kind",
    "RecordHead",
    "RingReason",
    "SlotWhy",
    "XenbusEvent",
]
