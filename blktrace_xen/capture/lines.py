"""bpftrace output lines -> agent records (structs/agentcap.py), I/O-free.

One line per probe event, space-separated, kind letter first (the printf formats
of :mod:`blktrace_xen.capture.probes`). ``F`` and ``S`` lines carry slot bytes
and name the ``E`` / ``D`` line they belong to by (time, thread) and (time,
ring); they follow it in the same CPU's buffer, so the decoder keeps only the
latest head per key. A line that does not parse is counted, never guessed at.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from blktrace_xen.structs.agentcap import (
    BODY_FMT,
    HEAD_FMT,
    UNKNOWN_U16,
    UNKNOWN_U32,
    Kind,
    SlotWhy,
    XenbusEvent,
)

_HEAD: Final = struct.Struct(HEAD_FMT)
_BODY: Final = {k: struct.Struct(f) for k, f in BODY_FMT.items()}
_WORDS: Final = struct.Struct("<14Q")
_RING_FIELDS: Final = 9  # ns cpu tid ring domid vdev queue protocol nr_ents
_MAX_SAMPLES: Final = 5

Record = tuple[int, bytes]  # (monotonic ns, record bytes)


def _slot(words: list[str]) -> bytes:
    return _WORDS.pack(*(int(w, 16) for w in words))


def _u16(v: int) -> int:
    return v if 0 <= v < UNKNOWN_U16 else UNKNOWN_U16


def _u32(v: int) -> int:
    return v if 0 <= v < UNKNOWN_U32 else UNKNOWN_U32


def nodename_key(nodename: str) -> tuple[int, int] | None:
    """(domid, vdev) of a backend node name ``backend/vbd/<domid>/<vdev>``."""
    parts = nodename.strip("/").split("/")
    if (
        len(parts) >= 4
        and parts[-4] == "backend"
        and parts[-3] == "vbd"
        and parts[-2].isdigit()
        and parts[-1].isdigit()
    ):
        return int(parts[-2]), int(parts[-1])
    return None


def frontend_key(path: str) -> tuple[int, int] | None:
    """(domid, vdev) of a frontend path ``/local/domain/<domid>/device/vbd/<vdev>``."""
    parts = path.strip("/").split("/")
    if (
        len(parts) == 6
        and parts[:2] == ["local", "domain"]
        and parts[3:5] == ["device", "vbd"]
        and parts[2].isdigit()
        and parts[5].isdigit()
    ):
        return int(parts[2]), int(parts[5])
    return None


@dataclass(slots=True)
class LineDecoder:
    """Turns bpftrace lines into records; keeps what joins F/S lines to their heads."""

    unparsed: int = 0
    samples: list[str] = field(default_factory=list)  # the first unparsed lines, for the notes
    begin_ns: int | None = None
    end_ns: int | None = None
    _entries: dict[tuple[int, int], tuple[bytes, int]] = field(default_factory=dict)
    _vdevs: dict[int, int] = field(default_factory=dict)  # ring address -> vdev
    _dumps: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    def feed(self, line: str) -> list[Record]:
        """The records of one output line (most lines give one; unknown lines none)."""
        f = line.split()
        if not f:
            return []
        try:
            return self._decode(f)
        except (ValueError, IndexError, KeyError, struct.error):
            self.unparsed += 1
            if len(self.samples) < _MAX_SAMPLES:
                self.samples.append(line.rstrip()[:200])
            return []

    def _ring_head(self, kind: Kind, f: list[str], vdev_of: int | None = None) -> tuple[int, bytes]:
        ns, cpu, tid, ring, domid, vdev, queue, proto, nr_ents = f[1 : _RING_FIELDS + 1]
        addr = int(ring, 16)
        if vdev_of is not None:
            self._vdevs[addr] = vdev_of
        v = _u32(int(vdev))
        if v == UNKNOWN_U32:
            v = self._vdevs.get(addr, UNKNOWN_U32)
        head = _HEAD.pack(
            kind,
            int(proto) & 0xFF,
            _u16(int(domid)),
            v,
            _u16(int(queue)),
            int(cpu) & 0xFFFF,
            int(tid) & 0xFFFFFFFF,
            addr,
            _u32(int(nr_ents)),
            0,
        )
        return int(ns), head

    def _decode(self, f: list[str]) -> list[Record]:
        tag = f[0]
        rest = f[_RING_FIELDS + 1 :]
        if tag == "E":
            ns, head = self._ring_head(Kind.RSP_ENTRY, f)
            nums = [int(x) for x in rest[:7]]
            pvt, cons, rprod, sprod, st, op, rid = nums
            body = _BODY[Kind.RSP_ENTRY].pack(pvt, cons, rprod, sprod, st, op, 0, rid)
            slot = _slot(rest[7:21])
            self._entries[(ns, int(f[3]))] = (head, pvt)
            return [(ns, head + body + slot)]
        if tag == "F":
            ns, tid = int(f[1]), int(f[2])
            found = self._entries.pop((ns, tid), None)
            if found is None:
                raise KeyError("F without E")
            head, pvt = found
            head = bytes([Kind.SLOT]) + head[1:]
            body = _BODY[Kind.SLOT].pack((pvt + 1) & 0xFFFFFFFF, SlotWhy.NEXT_AT_RESPONSE, ns)
            return [(ns, head + body + _slot(f[3:17]))]
        if tag == "X":
            ns, head = self._ring_head(Kind.RSP_EXIT, f)
            t0, rid, found_idx, end = (int(x) for x in rest[:4])
            return [(ns, head + _BODY[Kind.RSP_EXIT].pack(t0, rid, found_idx, end))]
        if tag in ("M", "I"):
            kind = Kind.CONSUME if tag == "M" else Kind.NOTIFY
            ns, head = self._ring_head(kind, f)
            if kind == Kind.CONSUME:
                body = _BODY[kind].pack(*(int(x) for x in rest[:4]), int(rest[4]))
            else:
                body = _BODY[kind].pack(*(int(x) for x in rest[:4]))
            return [(ns, head + body)]
        if tag == "R":
            key = nodename_key(rest[11]) if len(rest) > 11 else None
            ns, head = self._ring_head(Kind.RING, f, key[1] if key else None)
            pvt, cons, rprod, sprod, pages, reason = (int(x) for x in rest[:6])
            sring = int(rest[6], 16)
            counters = [int(x) for x in rest[7:11]]
            body = _BODY[Kind.RING].pack(pvt, cons, rprod, sprod, pages, reason, sring, *counters)
            return [(ns, head + body)]
        if tag == "D":
            ns, head = self._ring_head(Kind.DISCONNECT, f)
            pvt, cons, rprod, sprod = (int(x) for x in rest[:4])
            sring = int(rest[4], 16)
            # consumed and not answered: the I/O the backend still holds
            inflight = (cons - pvt) & 0xFFFFFFFF
            body = _BODY[Kind.DISCONNECT].pack(pvt, cons, rprod, sprod, inflight, 0, sring)
            self._dumps[int(f[4], 16)] = (ns, head)
            return [(ns, head + body)]
        if tag == "S":
            # a slot dumped at a disconnect, by a second program after the D lines' one
            ns, ring, idx = int(f[1]), int(f[3], 16), int(f[4])
            d_ns, head = self._dumps[ring]
            head = bytes([Kind.SLOT]) + head[1:]
            body = _BODY[Kind.SLOT].pack(idx, SlotWhy.AT_DISCONNECT, d_ns)
            return [(ns, head + body + _slot(f[5:19]))]
        if tag == "P":
            ns, cpu, tid, domid = int(f[1]), int(f[2]), int(f[3]), int(f[4])
            nodename = f[5]
            event, fe, be, flags = (int(x) for x in f[6:10])
            key = nodename_key(nodename)
            vdev = key[1] if key else UNKNOWN_U32
            head = _HEAD.pack(
                Kind.XENBUS, 0, _u16(domid), _u32(vdev), UNKNOWN_U16, cpu, tid, 0, 0, 0
            )
            body = _BODY[Kind.XENBUS].pack(event, fe, be, flags) + nodename.encode()
            return [(ns, head + body)]
        if tag in ("V", "W"):
            # a xenbus state: V the frontend's as the backend read it, W the backend's own
            ns, cpu, tid, path, state = int(f[1]), int(f[2]), int(f[3]), f[4], int(f[5])
            key = frontend_key(path) if tag == "V" else nodename_key(path)
            if key is None:
                return []  # another driver's device (netback, ...)
            event = XenbusEvent.FRONTEND_CHANGED if tag == "V" else XenbusEvent.BACKEND_STATE
            fe, be = (state, 255) if tag == "V" else (255, state)
            head = _HEAD.pack(
                Kind.XENBUS, 0, _u16(key[0]), _u32(key[1]), UNKNOWN_U16, cpu, tid, 0, 0, 0
            )
            return [
                (
                    ns,
                    head
                    + _BODY[Kind.XENBUS].pack(event, fe & 0xFFFFFFFF, be & 0xFFFFFFFF, 0)
                    + path.encode(),
                )
            ]
        if tag == "Q":
            ns, cpu, tid = int(f[1]), int(f[2]), int(f[3])
            blkif, domid, ret = int(f[4], 16), int(f[5]), int(f[7])
            dev = nodename_key(f[6])
            vdev = dev[1] if dev else (int(f[6]) if f[6].isdigit() else UNKNOWN_U32)
            head = _HEAD.pack(
                Kind.DISCONNECT_RET, 0, _u16(domid), _u32(vdev), UNKNOWN_U16, cpu, tid, blkif, 0, 0
            )
            return [(ns, head + _BODY[Kind.DISCONNECT_RET].pack(ret, 0))]
        if tag == "U":
            ns, head = self._ring_head(Kind.UNMAP, f)
            return [(ns, head + _BODY[Kind.UNMAP].pack(int(rest[0]), 0))]
        if tag == "Attaching":  # bpftrace's own line before the probes load
            return []
        if tag == "B" and len(f) == 2:
            self.begin_ns = int(f[1])
            return []
        if tag == "Z" and len(f) == 2:
            self.end_ns = int(f[1])
            return []
        raise ValueError(f"unknown line kind {tag!r}")


__all__ = ["LineDecoder", "Record", "frontend_key", "nodename_key"]
