"""Test helper: convert the realxen poller's RXRING01 ring dumps to our pcapng ring capture.

Format (../shared/realxen/README.md): 32-byte header ``magic[8]="RXRING01", u32 domid,
u32 ring_ref, u32 page_size, u32 hz, u64 tsc_at_start``, then records of a 40-byte
header ``u64 realtime_ns, u64 monotonic_ns, u64 tsc, u32 poll_seq, u32 flags,
u32 req_prod, u32 rsp_prod`` followed by the page. Import as
``from tests.rxring import rxring_to_pcapng`` (tests/ is a package).
"""

from __future__ import annotations

import struct
from pathlib import Path

from blktrace_xen.encode.ringcap import RingcapWriter

_FILE = struct.Struct("<8sIIIIQ")
_REC = struct.Struct("<QQQIIII")


def rxring_to_pcapng(src: Path, dst: Path, *, vdev: int = 51712) -> int:
    """Write ``src`` (RXRING01) as a ring capture at ``dst``; returns the snapshot count.

    Timestamps are the poller's realtime_ns, the TSC goes into each packet.
    The realxen domU uses x86_64-abi, ring-page-order 0, backend dom0.
    """
    data = src.read_bytes()
    magic, domid, _ref, page_size, _hz, _tsc0 = _FILE.unpack_from(data, 0)
    if magic != b"RXRING01":
        raise ValueError(f"{src}: not an RXRING01 file")
    n = 0
    with RingcapWriter(dst) as w:
        iface = w.add_ring(domid, vdev, 0, abi="x86_64-abi", ring_page_order=0, backend_domid=0)
        off = _FILE.size
        while off + _REC.size + page_size <= len(data):
            realtime_ns, _mono, tsc, _seq, _flags, _rp, _sp = _REC.unpack_from(data, off)
            page = data[off + _REC.size : off + _REC.size + page_size]
            w.write_snapshot(iface, realtime_ns, page, tsc=tsc)
            off += _REC.size + page_size
            n += 1
    return n
