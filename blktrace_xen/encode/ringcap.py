"""Write ring captures: pcapng with one interface per blkif ring (formats/ringcap.md)."""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from blktrace_xen import __version__
from blktrace_xen.errors import ModelUsageError
from blktrace_xen.structs.agentcap import AGENT_IF_NAME
from blktrace_xen.structs.blkif import ring_geometry
from blktrace_xen.structs.pcapng import (
    BT_EPB,
    BT_IDB,
    BT_SHB,
    IF_DESCRIPTION,
    IF_NAME,
    IF_TSRESOL,
    LINKTYPE_USER0,
    LINKTYPE_USER1,
    LINKTYPE_USER2,
    OPT_COMMENT,
    SHB_USERAPPL,
    InterfaceDescriptionBody,
    SectionHeaderBody,
)


def ring_if_name(domid: int, vdev: int, queue: int) -> str:
    """The interface name of a ring: ``vbd/<frontend-domid>/<vdev>/q<queue>``."""
    return f"vbd/{domid}/{vdev}/q{queue}"


def ring_if_description(abi: str, ring_page_order: int, backend_domid: int, nr_ents: int) -> str:
    """The ring parameters as space-separated ``key=value`` pairs."""
    return (
        f"protocol={abi} ring-page-order={ring_page_order} "
        f"backend-domid={backend_domid} nr-ents={nr_ents}"
    )


def _options(opts: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    out = [{"code": c, "length": len(v), "value": v} for c, v in opts]
    out.append({"code": 0, "length": 0, "value": b""})
    return out


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class RingcapWriter:
    """Context manager writing a ring capture to a path or a binary file.

    Interfaces must be added before the first packet that uses them; any
    interface may be added at any time (pcapng allows IDBs between packets).
    """

    def __init__(self, target: str | Path | IO[bytes]) -> None:
        if isinstance(target, str | Path):
            self._f: IO[bytes] = open(target, "wb")  # noqa: SIM115 - closed in close()
            self._own = True
        else:
            self._f = target
            self._own = False
        self._sizes: dict[int, int] = {}  # iface -> page size (0 xenstore, -1 agent)
        shb = SectionHeaderBody.build(
            {
                "major_version": 1,
                "minor_version": 0,
                "section_length": -1,
                "options": _options([(SHB_USERAPPL, f"blktrace-xen {__version__}".encode())]),
            }
        )
        self._f.write(_block(BT_SHB, shb))

    def __enter__(self) -> RingcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Flush, and close the file if the writer opened it."""
        if self._own:
            self._f.close()
        else:
            self._f.flush()

    def _add_interface(self, linktype: int, opts: list[tuple[int, bytes]]) -> int:
        body = InterfaceDescriptionBody.build(
            {
                "linktype": linktype,
                "reserved": 0,
                "snaplen": 0,
                "options": _options([*opts, (IF_TSRESOL, b"\x09")]),
            }
        )
        self._f.write(_block(BT_IDB, body))
        return len(self._sizes)

    def add_ring(
        self,
        domid: int,
        vdev: int,
        queue: int = 0,
        *,
        abi: str = "x86_64-abi",
        ring_page_order: int = 0,
        backend_domid: int = 0,
    ) -> int:
        """Declare a ring; returns its interface id for :meth:`write_snapshot`."""
        geo = ring_geometry(abi, ring_page_order)
        iface = self._add_interface(
            LINKTYPE_USER0,
            [
                (IF_NAME, ring_if_name(domid, vdev, queue).encode()),
                (
                    IF_DESCRIPTION,
                    ring_if_description(abi, ring_page_order, backend_domid, geo.nr_ents).encode(),
                ),
            ],
        )
        self._sizes[iface] = geo.nbytes
        return iface

    def add_xenstore(self) -> int:
        """Declare the xenstore interface; returns its id for :meth:`write_xenstore`."""
        iface = self._add_interface(LINKTYPE_USER1, [(IF_NAME, b"xenstore")])
        self._sizes[iface] = 0
        return iface

    def add_agent(self, description: str) -> int:
        """Declare the agent interface (``capture``); returns its id for :meth:`write_agent`."""
        iface = self._add_interface(
            LINKTYPE_USER2,
            [(IF_NAME, AGENT_IF_NAME.encode()), (IF_DESCRIPTION, description.encode())],
        )
        self._sizes[iface] = -1
        return iface

    def write_agent(self, iface: int, ns: int, record: bytes) -> None:
        """One agent record (structs/agentcap.py) stamped with the dom0 monotonic clock."""
        if self._sizes.get(iface) != -1:
            raise ModelUsageError(f"interface {iface} is not an agent interface")
        self._packet(iface, ns, record, None)

    def flush(self) -> None:
        """Push what is written so far to the file (a killed capture keeps it)."""
        self._f.flush()

    def _packet(self, iface: int, ns: int, data: bytes, tsc: int | None) -> None:
        if ns < 0 or ns >= 1 << 64:
            raise ModelUsageError(f"timestamp {ns} ns is outside the pcapng range 0..2**64-1")
        opts = b""
        if tsc is not None:
            # opt_comment: standard, shown by Wireshark/tshark, and needs no
            # private enterprise number as a custom option would.
            # Fixed width (20 digits hold any u64) keeps every snapshot block of a
            # ring the same size, so readers can map the pages without copying.
            v = f"tsc={tsc:020d}".encode()
            opts = struct.pack("<HH", OPT_COMMENT, len(v)) + v + b"\0" * (-len(v) % 4)
            opts += b"\0\0\0\0"
        pad = b"\0" * (-len(data) % 4)
        total = 28 + len(data) + len(pad) + len(opts) + 4
        self._f.write(
            struct.pack(
                "<IIIIIII",
                BT_EPB,
                total,
                iface,
                (ns >> 32) & 0xFFFFFFFF,
                ns & 0xFFFFFFFF,
                len(data),
                len(data),
            )
        )
        self._f.write(data)
        self._f.write(pad + opts + struct.pack("<I", total))

    def write_snapshot(self, iface: int, ns: int, page: bytes, *, tsc: int | None = None) -> None:
        """One snapshot of the whole ring area of ``iface`` taken at ``ns``."""
        size = self._sizes.get(iface)
        if size is None or size == 0:
            raise ModelUsageError(f"interface {iface} is not a ring added with add_ring()")
        if len(page) != size:
            raise ModelUsageError(f"snapshot of {len(page)} bytes, ring area is {size} bytes")
        self._packet(iface, ns, bytes(page), tsc)

    def write_xenstore(
        self, ns: int, path: str, value: str, *, tsc: int | None = None, iface: int | None = None
    ) -> None:
        """One xenstore write ``path=value`` seen at ``ns``."""
        if iface is None:
            candidates = [i for i, s in self._sizes.items() if s == 0]
            if not candidates:
                raise ModelUsageError("add_xenstore() before write_xenstore()")
            iface = candidates[0]
        elif self._sizes.get(iface) != 0:
            raise ModelUsageError(f"interface {iface} is not a xenstore interface")
        self._packet(iface, ns, f"{path}={value}".encode(), tsc)
