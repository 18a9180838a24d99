"""Read ring captures (pcapng, formats/ringcap.md) into snapshot tables and raw pages.

The block walk is a plain loop over fixed offsets of a memory map (the hot
path: one iteration per snapshot); section and interface blocks are parsed
with the construct declarations of :mod:`blktrace_xen.structs.pcapng`.
Damage is reported, not fatal: a truncated or inconsistent block ends the
walk with a warning naming the block and its offset, and everything before it
is kept; a packet that cannot be a snapshot of its ring is skipped with a
warning.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from construct import ConstructError

from blktrace_xen import schema
from blktrace_xen.errors import DecodeError, InputFileError, MalformedRecord
from blktrace_xen.structs.blkif import ABIS, ring_geometry
from blktrace_xen.structs.pcapng import (
    BT_EPB,
    BT_IDB,
    BT_SHB,
    BYTE_ORDER_MAGIC,
    IF_DESCRIPTION,
    IF_NAME,
    IF_TSRESOL,
    LINKTYPE_USER0,
    LINKTYPE_USER1,
    LINKTYPE_USER2,
    OPT_COMMENT,
    PCAPNG_MAGIC,
    InterfaceDescriptionBody,
)

RingKey = tuple[int, int, int]

_IF_NAME_RE = re.compile(r"^vbd/(\d+)/(\d+)/q(\d+)$")
_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<II")
_EPB = struct.Struct("<IIIII")
_MAX_WARNINGS_PER_KIND = 20


@dataclass(slots=True)
class RingCapture:
    """A decoded ring capture.

    ``rings`` follows RINGS_SCHEMA and ``snapshots`` SNAPSHOTS_SCHEMA;
    ``pages[key]`` holds the raw ring areas of one ring as a read-only
    (snapshots, bytes) uint8 array, row ``i`` being snapshot ``snap == i``
    (a view into a memory map of the file when the blocks are evenly spaced);
    ``xenstore`` has columns ns, tsc, path, value; ``agent`` holds the capture
    agent's records (ns, bytes) in file order (structs/agentcap.py) and
    ``agent_description`` its interface description.
    """

    path: str
    rings: pl.DataFrame
    snapshots: pl.DataFrame
    pages: dict[RingKey, np.ndarray[Any, np.dtype[np.uint8]]]
    xenstore: pl.DataFrame
    warnings: list[str] = field(default_factory=list)
    agent: list[tuple[int, bytes]] = field(default_factory=list)
    agent_description: str = ""


@dataclass(slots=True)
class _Iface:
    linktype: int
    name: str
    key: RingKey | None = None
    abi: str = ""
    order: int = 0
    backend_domid: int = 0
    nr_ents: int = 0
    nbytes: int = 0
    ts_num: int = 1  # ns = ts * num // den
    ts_den: int = 1


def is_ringcap(path: str | Path) -> bool:
    """Whether ``path`` starts with the pcapng magic (format auto-detection)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == PCAPNG_MAGIC
    except OSError:
        return False


def parse_if_description(text: str) -> dict[str, str]:
    """``key=value`` pairs separated by whitespace."""
    out: dict[str, str] = {}
    for tok in text.split():
        k, sep, v = tok.partition("=")
        if sep:
            out[k] = v
    return out


def _tsresol(value: int) -> tuple[int, int]:
    exp = value & 0x7F
    if value & 0x80:
        return 10**9, 1 << exp
    if exp >= 9:
        return 1, 10 ** (exp - 9)
    return 10 ** (9 - exp), 1


class _Walker:
    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings: list[str] = []
        self._warn_counts: dict[str, int] = {}
        self.ifaces: list[_Iface] = []
        self.agent_description = ""

    def warn(self, kind: str, msg: str) -> None:
        n = self._warn_counts.get(kind, 0) + 1
        self._warn_counts[kind] = n
        if n <= _MAX_WARNINGS_PER_KIND:
            self.warnings.append(f"ringcap: {self.path}: {msg}")
        elif n == _MAX_WARNINGS_PER_KIND + 1:
            self.warnings.append(f"ringcap: {self.path}: further '{kind}' warnings suppressed")

    def idb(self, body: bytes, index: int, offset: int) -> None:
        try:
            parsed = InterfaceDescriptionBody.parse(body)
        except ConstructError as exc:
            raise MalformedRecord(
                "ringcap",
                f"bad interface description block: {exc}",
                path=self.path,
                offset=offset,
                record_index=index,
            ) from exc
        opts = {o.code: bytes(o.value) for o in parsed.options if o.code != 0}
        name = opts.get(IF_NAME, b"").decode("utf-8", "replace")
        iface = _Iface(linktype=parsed.linktype, name=name)
        if opts.get(IF_TSRESOL):
            iface.ts_num, iface.ts_den = _tsresol(opts[IF_TSRESOL][0])
        else:
            iface.ts_num, iface.ts_den = 1000, 1  # pcapng default: microseconds
        if parsed.linktype == LINKTYPE_USER0:
            self._ring_params(iface, opts, index, offset)
        elif parsed.linktype == LINKTYPE_USER2:
            self.agent_description = opts.get(IF_DESCRIPTION, b"").decode("utf-8", "replace")
        self.ifaces.append(iface)

    def _ring_params(self, iface: _Iface, opts: dict[int, bytes], index: int, offset: int) -> None:
        where = f"block #{index} at offset {offset:#x}: interface {len(self.ifaces)}"
        m = _IF_NAME_RE.match(iface.name)
        if not m:
            self.warn(
                "iface",
                f"{where}: if_name {iface.name!r} is not vbd/<domid>/<vdev>/q<queue>; "
                "its snapshots are skipped",
            )
            return
        params = parse_if_description(opts.get(IF_DESCRIPTION, b"").decode("utf-8", "replace"))
        try:
            abi = params["protocol"]
            order = int(params["ring-page-order"])
            backend = int(params.get("backend-domid", "0"))
            if abi not in ABIS:
                raise ValueError(f"unknown protocol {abi!r}")
            geo = ring_geometry(abi, order)
            if "nr-ents" in params and int(params["nr-ents"]) != geo.nr_ents:
                raise ValueError(
                    f"nr-ents={params['nr-ents']} but the geometry gives {geo.nr_ents}"
                )
        except (KeyError, ValueError, DecodeError) as exc:
            self.warn(
                "iface",
                f"{where} ({iface.name}): if_description lacks valid ring parameters "
                f"(need protocol=, ring-page-order=): {exc}; its snapshots are skipped",
            )
            return
        except Exception as exc:  # ModelUsageError from ring_geometry
            self.warn(
                "iface",
                f"{where} ({iface.name}): bad ring parameters: {exc}; its snapshots are skipped",
            )
            return
        iface.key = (int(m[1]), int(m[2]), int(m[3]))
        iface.abi, iface.order, iface.backend_domid = abi, order, backend
        iface.nr_ents, iface.nbytes = geo.nr_ents, geo.nbytes


def _tsc_from_options(buf: Any, start: int, end: int) -> int | None:
    while start + 4 <= end:
        code, length = struct.unpack_from("<HH", buf, start)
        if code == 0:
            return None
        vstart = start + 4
        if code == OPT_COMMENT and length > 4 and vstart + length <= end:
            text = bytes(buf[vstart : vstart + length])
            if text.startswith(b"tsc="):
                try:
                    value = int(text[4:])
                except ValueError:
                    return None
                # a TSC is a u64; anything else is not one
                return value if 0 <= value < 1 << 64 else None
        start = vstart + length + (-length % 4)
    return None


@dataclass(slots=True)
class RingCaptureChunk:
    """Consecutive blocks of a ring capture (see :func:`iter_ringcap_chunks`).

    Same fields as :class:`RingCapture`, restricted to this chunk: ``rings``
    lists every ring declared so far; ``snapshots`` keeps the capture's own
    ``snap`` numbers; ``pages[key]`` rows follow this chunk's snapshots of
    that ring; ``warnings`` are those raised while reading this chunk.
    """

    path: str
    rings: pl.DataFrame
    snapshots: pl.DataFrame
    pages: dict[RingKey, np.ndarray[Any, np.dtype[np.uint8]]]
    xenstore: pl.DataFrame
    warnings: list[str] = field(default_factory=list)
    agent: list[tuple[int, bytes]] = field(default_factory=list)
    agent_description: str = ""


class _RingRows:
    """Snapshots of one ring found in a window: scalars from the block walk, arrays from runs."""

    __slots__ = ("ns", "off", "pieces", "tsc", "valid")

    def __init__(self) -> None:
        self.ns: list[int] = []
        self.tsc: list[int] = []
        self.valid: list[bool] = []
        self.off: list[int] = []
        self.pieces: list[tuple[np.ndarray[Any, Any], ...]] = []

    def flush(self) -> None:
        if self.ns:
            self.pieces.append(
                (
                    np.asarray(self.ns, np.int64),
                    np.asarray(self.tsc, np.uint64),
                    np.asarray(self.valid, bool),
                    np.asarray(self.off, np.int64),
                )
            )
            self.ns, self.tsc, self.valid, self.off = [], [], [], []

    def arrays(self) -> tuple[np.ndarray[Any, Any], ...]:
        self.flush()
        if len(self.pieces) == 1:
            return self.pieces[0]
        return tuple(np.concatenate([p[i] for p in self.pieces]) for i in range(4))


@dataclass(slots=True)
class _Found:
    rings: dict[RingKey, _RingRows] = field(default_factory=dict)
    xs: tuple[list[int], list[int | None], list[str], list[str]] = field(
        default_factory=lambda: ([], [], [], [])
    )
    agent: list[tuple[int, bytes]] = field(default_factory=list)
    count: int = 0

    def ring(self, key: RingKey) -> _RingRows:
        rows = self.rings.get(key)
        if rows is None:
            rows = self.rings[key] = _RingRows()
        return rows


_TSC_WORD = _U32.unpack(b"tsc=")[0]
_POW10 = 10 ** np.arange(9, -1, -1, dtype=np.uint64)
_U64_MAX_HI, _U64_MAX_LO = divmod(2**64 - 1, 10**10)
_I64_MAX = 2**63 - 1
_PROBE_MIN = 64
_PROBE_MAX = 1 << 18


class _Reader:
    """The block walk over consecutive windows of one file, state carried between them.

    Where enhanced packet blocks have one length (the writer pads the TSC
    comment so that every snapshot of a ring does), a run of them is checked
    and decoded with NumPy at once; only blocks that are anything else (other
    block types, xenstore packets, damage, unusual options) take the
    per-block path, which alone raises warnings, so both give the same result.
    """

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self.w = _Walker(path)
        self.off = 0
        self.index = 0
        self.iface_base = 0
        self.done = False
        self.need = 0  # bytes the next block needs in the window (set on refill)
        self.snaps: dict[RingKey, int] = {}
        self._probe = _PROBE_MIN
        self._backoff = 0
        self._backoff_len = 1
        self._lut_n = -1
        self._lut: tuple[np.ndarray[Any, Any], ...] = ()
        self._lut_keys: list[RingKey] = []

    @property
    def finished(self) -> bool:
        return self.done or self.off >= self.size

    def walk(
        self, mm: Any, arr: np.ndarray[Any, Any], base: int, limit: int | None, vector: bool = True
    ) -> _Found:
        """Walk the blocks from ``self.off`` that lie in window ``mm`` (at file offset ``base``)."""
        found = _Found()
        win_end = base + len(mm)
        self.need = 0
        while not self.finished and (limit is None or found.count < limit):
            if vector and self._backoff == 0 and self.off + 8 <= win_end:
                btype, blen = _HEAD.unpack_from(mm, self.off - base)
                if btype == BT_EPB and blen >= 32 and blen % 4 == 0:
                    done = self._run(
                        arr=arr, base=base, win_end=win_end, blen=blen, found=found, limit=limit
                    )
                    if done >= 4:
                        self._backoff_len = 1
                        continue
                    # irregular stretch: walk block by block for a growing while
                    self._backoff = self._backoff_len
                    self._backoff_len = min(self._backoff_len * 2, 256)
                    if done:
                        continue
            if self._backoff:
                self._backoff -= 1
            if not self._step(mm, base, win_end, found):
                break
        return found

    def _iface_lut(self) -> tuple[np.ndarray[Any, Any], ...]:
        ifaces = self.w.ifaces
        if self._lut_n != len(ifaces):
            keys: list[RingKey] = []
            ring = np.full(len(ifaces), -1, np.int64)
            for i, f in enumerate(ifaces):
                # odd time resolutions (no u64 product) take the per-block path
                if (
                    f.linktype == LINKTYPE_USER0
                    and f.key is not None
                    and f.ts_num < 1 << 32
                    and f.ts_den <= _I64_MAX
                ):
                    if f.key not in keys:
                        keys.append(f.key)
                    ring[i] = keys.index(f.key)
            fast = ring.tolist()
            self._lut = (
                ring,
                np.array([f.nbytes for f in ifaces], np.int64),
                np.array(
                    [f.ts_num if r >= 0 else 1 for f, r in zip(ifaces, fast, strict=True)],
                    np.uint64,
                ),
                np.array(
                    [f.ts_den if r >= 0 else 1 for f, r in zip(ifaces, fast, strict=True)],
                    np.uint64,
                ),
            )
            self._lut_keys = keys
            self._lut_n = len(ifaces)
        return self._lut

    def _run(
        self,
        *,
        arr: np.ndarray[Any, Any],
        base: int,
        win_end: int,
        blen: int,
        found: _Found,
        limit: int | None,
    ) -> int:
        """Decode the run of clean, equally long snapshot blocks at ``self.off``; how many."""
        k = min((win_end - self.off) // blen, self._probe)
        if limit is not None:
            k = min(k, limit - found.count)
        if k < 2 or not self.w.ifaces:
            return 0
        o0 = self.off - base
        raw = arr[o0 : o0 + k * blen].reshape(k, blen)
        words = raw.view("<u4")
        ok = (words[:, 0] == BT_EPB) & (words[:, 1] == blen) & (words[:, -1] == blen)
        ring_of, nbytes_of, num_of, den_of = self._iface_lut()
        gi = words[:, 2].astype(np.int64) + self.iface_base
        ok &= gi < len(ring_of)
        gi = np.where(ok, gi, 0)
        caplen = words[:, 5].astype(np.int64)
        ok &= (ring_of[gi] >= 0) & (caplen == nbytes_of[gi]) & (32 + caplen <= blen)
        # options after the (4-byte multiple) page: none, end-of-options, or the
        # writer's fixed-width tsc comment first; anything else is walked per block
        opt = np.where(ok, 28 + caplen, blen - 4)
        region = blen - 4 - opt
        rows = np.arange(k)
        w0 = words[rows, np.minimum(opt, blen - 4) // 4]
        no_tsc = (region < 4) | ((w0 & 0xFFFF) == 0)
        is_tsc = (region >= 28) & (w0 == (OPT_COMMENT | 24 << 16))
        is_tsc &= words[rows, np.minimum(opt + 4, blen - 4) // 4] == _TSC_WORD
        tsc = np.zeros(k, np.uint64)
        if is_tsc.any():
            first = int(opt[np.argmax(is_tsc)])
            if (opt[is_tsc] == first).all():
                digits = raw[:, first + 8 : first + 28]
            else:
                digits = raw[rows[:, None], np.minimum(opt, blen - 28)[:, None] + 8 + np.arange(20)]
            d = digits.astype(np.uint64) - 48
            is_tsc &= (d <= 9).all(axis=1)
            hi = d[:, :10] @ _POW10
            lo = d[:, 10:] @ _POW10
            is_tsc &= (hi < _U64_MAX_HI) | ((hi == _U64_MAX_HI) & (lo <= _U64_MAX_LO))
            tsc = np.where(is_tsc, hi * np.uint64(10**10) + lo, 0)
        ok &= no_tsc | is_tsc
        ts = (words[:, 3].astype(np.uint64) << np.uint64(32)) | words[:, 4]
        num, den = num_of[gi], den_of[gi]
        ok &= ts <= np.uint64(_I64_MAX) // num
        n = k if ok.all() else int(np.argmin(ok))
        if n == 0:
            return 0
        ns = ((ts[:n] * num[:n]) // den[:n]).astype(np.int64)
        offs = self.off + 28 + blen * np.arange(n, dtype=np.int64)
        ring = ring_of[gi[:n]]
        valid = is_tsc[:n]
        tsc = tsc[:n]
        if (ring != ring[0]).any():
            # rings in order of first appearance, as the block walk would add them
            _, first_at = np.unique(ring, return_index=True)
            uniq = ring[np.sort(first_at)]
        else:
            uniq = ring[:1]
        for ri in uniq.tolist():
            rows_r = slice(None) if len(uniq) == 1 else ring == ri
            acc = found.ring(self._lut_keys[ri])
            acc.flush()
            acc.pieces.append((ns[rows_r], tsc[rows_r], valid[rows_r], offs[rows_r]))
        self.off += n * blen
        self.index += n
        found.count += n
        if n == self._probe:
            self._probe = min(self._probe * 4, _PROBE_MAX)
        elif n < k:
            self._probe = _PROBE_MIN
        return n

    def _refill(self, nbytes: int) -> bool:
        self.need = nbytes
        return False

    def _stop(self) -> bool:
        self.done = True
        return False

    def _step(self, mm: Any, base: int, win_end: int, found: _Found) -> bool:
        """One block at ``self.off``; False when the walk must stop (end, damage or window end)."""
        w, off, index, size, path = self.w, self.off, self.index, self.size, self.path
        o = off - base
        if off + 8 > win_end:
            if win_end < size and off + 8 <= size:
                return self._refill(8)
            w.warn(
                "truncated",
                f"truncated block #{index} at offset {off:#x}: "
                f"need 8 header bytes, {size - off} left",
            )
            return self._stop()
        btype, blen = _HEAD.unpack_from(mm, o)
        if btype == BT_SHB:
            if off + 12 > win_end:
                if win_end < size and off + 12 <= size:
                    return self._refill(12)
                w.warn("truncated", f"truncated block #{index} at offset {off:#x}")
                return self._stop()
            (bom,) = _U32.unpack_from(mm, o + 8)
            if bom != BYTE_ORDER_MAGIC:
                raise MalformedRecord(
                    "ringcap",
                    "big-endian or corrupt section header "
                    f"(byte-order magic {bom:#010x}); only little-endian "
                    "sections are read",
                    path=path,
                    offset=off,
                    record_index=index,
                    field="byte_order_magic",
                )
        elif index == 0:
            raise MalformedRecord(
                "ringcap",
                "first block is not a section header",
                path=path,
                offset=off,
                record_index=index,
            )
        if blen < 12 or blen % 4:
            w.warn(
                "corrupt",
                f"block #{index} at offset {off:#x}: block length {blen} is not a "
                "multiple of 4 >= 12; stopping here",
            )
            return self._stop()
        if off + blen > size:
            w.warn(
                "truncated",
                f"truncated block #{index} at offset {off:#x}: "
                f"need {blen} bytes, {size - off} left",
            )
            return self._stop()
        if off + blen > win_end:
            return self._refill(blen)
        (trail,) = _U32.unpack_from(mm, o + blen - 4)
        if trail != blen:
            w.warn(
                "corrupt",
                f"block #{index} at offset {off:#x}: trailing length {trail} "
                f"differs from {blen}; stopping here",
            )
            return self._stop()
        if btype == BT_SHB:
            self.iface_base = len(w.ifaces)
        elif btype == BT_IDB:
            w.idb(bytes(mm[o + 8 : o + blen - 4]), index, off)
        elif btype == BT_EPB:
            self._packet(mm, o, off, blen, found)
        self.off = off + blen
        self.index = index + 1
        return True

    def _packet(self, mm: Any, o: int, off: int, blen: int, found: _Found) -> None:
        w, index = self.w, self.index
        if blen < 32:
            w.warn(
                "corrupt",
                f"block #{index} at offset {off:#x}: enhanced packet block "
                f"of {blen} bytes is too short",
            )
            return
        ifid, ts_hi, ts_lo, caplen, _orig = _EPB.unpack_from(mm, o + 8)
        data = o + 28
        end = o + blen - 4
        if data + caplen > end:
            w.warn(
                "corrupt",
                f"block #{index} at offset {off:#x}: captured length {caplen} overruns the block",
            )
            return
        if self.iface_base + ifid >= len(w.ifaces):
            w.warn(
                "iface",
                f"block #{index} at offset {off:#x}: packet on undeclared interface {ifid}",
            )
            return
        iface = w.ifaces[self.iface_base + ifid]
        ns = ((ts_hi << 32) | ts_lo) * iface.ts_num // iface.ts_den
        if ns > _I64_MAX:
            w.warn(
                "time",
                f"block #{index} at offset {off:#x}: timestamp {ns} ns does not fit "
                "the ns column; skipped",
            )
            return
        opt_start = data + caplen + (-caplen % 4)
        tsc = _tsc_from_options(mm, opt_start, end) if opt_start < end else None
        if iface.linktype == LINKTYPE_USER0:
            if iface.key is None:
                w.warn(
                    "skip",
                    f"block #{index} at offset {off:#x}: snapshot on "
                    f"interface {ifid} without ring parameters skipped",
                )
            elif caplen != iface.nbytes:
                w.warn(
                    "size",
                    f"block #{index} at offset {off:#x}: snapshot of "
                    f"{caplen} bytes on {iface.name}, expected {iface.nbytes} "
                    f"({iface.abi}, ring-page-order {iface.order}); skipped",
                )
            else:
                rows = found.ring(iface.key)
                rows.ns.append(ns)
                rows.tsc.append(0 if tsc is None else tsc)
                rows.valid.append(tsc is not None)
                rows.off.append(off + 28)
                found.count += 1
        elif iface.linktype == LINKTYPE_USER2:
            found.agent.append((ns, bytes(mm[data : data + caplen])))
            found.count += 1
        elif iface.linktype == LINKTYPE_USER1:
            text = bytes(mm[data : data + caplen]).decode("utf-8", "replace")
            p, sep, v = text.rstrip("\n").partition("=")
            if not sep:
                w.warn(
                    "xenstore",
                    f"block #{index} at offset {off:#x}: xenstore "
                    f"packet {text[:60]!r} is not path=value",
                )
            else:
                found.xs[0].append(ns)
                found.xs[1].append(tsc)
                found.xs[2].append(p)
                found.xs[3].append(v)

    def rings_frame(self) -> pl.DataFrame:
        ring_rows: dict[RingKey, _Iface] = {}
        for iface in self.w.ifaces:
            if iface.key is not None and iface.key not in ring_rows:
                ring_rows[iface.key] = iface
        return pl.DataFrame(
            {
                "domid": [k[0] for k in ring_rows],
                "vdev": [k[1] for k in ring_rows],
                "queue": [k[2] for k in ring_rows],
                "abi": [i.abi for i in ring_rows.values()],
                "ring_page_order": [i.order for i in ring_rows.values()],
                "nr_ents": [i.nr_ents for i in ring_rows.values()],
                "backend_domid": [i.backend_domid for i in ring_rows.values()],
            },
            schema=schema.RINGS_SCHEMA,
        )

    def tables(
        self, found: _Found, arr: np.ndarray[Any, Any], base: int
    ) -> tuple[
        pl.DataFrame, pl.DataFrame, dict[RingKey, np.ndarray[Any, np.dtype[np.uint8]]], pl.DataFrame
    ]:
        """rings, snapshots, pages and xenstore of what ``found`` holds (pages view ``arr``)."""
        rings = self.rings_frame()
        params = {
            (r[0], r[1], r[2]): (r[3], r[4])
            for r in rings.select(
                "domid", "vdev", "queue", "nr_ents", "ring_page_order"
            ).iter_rows()
        }
        pages: dict[RingKey, np.ndarray[Any, np.dtype[np.uint8]]] = {}
        frames = []
        # rings in order of their first snapshot
        for key, rows in found.rings.items():
            nss, tscs, valid, offs = rows.arrays()
            nr_ents, order = params[key]
            nbytes = 4096 << order
            rel = offs - base
            n = len(rel)
            steps = np.diff(rel)
            if n > 1 and (steps == steps[0]).all() and steps[0] >= nbytes:
                # one ring, equal blocks (the usual case): a view, no copy
                page_arr = np.lib.stride_tricks.as_strided(
                    arr[int(rel[0]) :],
                    shape=(n, nbytes),
                    strides=(int(steps[0]), 1),
                    writeable=False,
                )
            else:
                page_arr = np.empty((n, nbytes), dtype=np.uint8)
                for i, o in enumerate(rel.tolist()):
                    page_arr[i] = arr[o : o + nbytes]
                page_arr.flags.writeable = False
            pages[key] = page_arr
            hdr = page_arr[:, :16].copy().view("<u4") if n else np.zeros((0, 4), "<u4")
            first = self.snaps.get(key, 0)
            self.snaps[key] = first + n
            frames.append(
                pl.DataFrame(
                    {
                        "domid": np.full(n, key[0], np.uint16),
                        "vdev": np.full(n, key[1], np.uint32),
                        "queue": np.full(n, key[2], np.uint16),
                        "snap": np.arange(first, first + n, dtype=np.uint32),
                        "ns": nss,
                        "tsc": pl.Series(tscs, dtype=pl.UInt64).set(pl.Series(~valid), None),
                        "req_prod": hdr[:, 0],
                        "req_event": hdr[:, 1],
                        "rsp_prod": hdr[:, 2],
                        "rsp_event": hdr[:, 3],
                        "nr_ents": np.full(n, nr_ents, np.uint16),
                    },
                    schema=schema.SNAPSHOTS_SCHEMA,
                )
            )
        snapshots = pl.concat(frames) if frames else schema.empty("snapshots")
        xs = found.xs
        xenstore = pl.DataFrame(
            {"ns": xs[0], "tsc": xs[1], "path": xs[2], "value": xs[3]},
            schema=_XENSTORE_SCHEMA,
        )
        return rings, snapshots, pages, xenstore


_XENSTORE_SCHEMA = {"ns": pl.Int64, "tsc": pl.UInt64, "path": pl.String, "value": pl.String}


def _open(path: str) -> tuple[Any, int]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise InputFileError(path, f"cannot open: {exc.strerror}") from exc
    head = f.read(4)
    if head != PCAPNG_MAGIC:
        f.close()
        raise InputFileError(path, "not a pcapng ring capture (no section header magic)")
    return f, f.seek(0, 2)


def _window(f: Any, start: int, length: int) -> tuple[Any, np.ndarray[Any, Any]]:
    # The mapping is unmapped when the last page view of it goes (no explicit close:
    # pages handed out are views into it).
    mm = mmap.mmap(f.fileno(), length, offset=start, access=mmap.ACCESS_READ)
    return mm, np.frombuffer(mm, dtype=np.uint8)


def read_ringcap(path: str | Path, *, _vector: bool = True) -> RingCapture:
    """Decode a whole ring capture (see :class:`RingCapture`)."""
    path = str(path)
    f, size = _open(path)
    with f:
        mm, arr = _window(f, 0, size)
        reader = _Reader(path, size)
        found = reader.walk(mm, arr, 0, None, _vector)
        rings, snapshots, pages, xenstore = reader.tables(found, arr, 0)
    return RingCapture(
        path,
        rings,
        snapshots,
        pages,
        xenstore,
        reader.w.warnings,
        found.agent,
        reader.w.agent_description,
    )


def iter_ringcap_chunks(
    path: str | Path, *, snapshots_per_chunk: int = 16384, _vector: bool = True
) -> Iterator[RingCaptureChunk]:
    """Read a ring capture as consecutive chunks of at most ``snapshots_per_chunk`` snapshots.

    Memory stays bounded by one chunk: each chunk maps only its own stretch of
    the file, and its pages are views into that mapping, released when the
    chunk is dropped. Concatenating the chunks' snapshots, xenstore rows and
    warnings gives :func:`read_ringcap`'s tables; feeding them in order to
    :class:`blktrace_xen.decode.ring.RingStreamsBuilder` (or
    :func:`blktrace_xen.decode.ring.derive_ring_streams_chunked`) gives
    :func:`blktrace_xen.decode.ring.derive_ring_streams`'s result. The last
    chunk (possibly empty) has the final ``rings`` table.
    """
    path = str(path)
    if snapshots_per_chunk < 1:
        raise InputFileError(path, f"snapshots_per_chunk must be >= 1, got {snapshots_per_chunk}")
    f, size = _open(path)
    with f:
        reader = _Reader(path, size)
        per_snap = 4096 + 64  # bytes per snapshot block, refined as the file is read
        warned = 0
        while True:
            start = reader.off - reader.off % mmap.ALLOCATIONGRANULARITY
            want = max(int(snapshots_per_chunk * per_snap * 1.02), reader.need, 1 << 16)
            length = min(size - start, reader.off - start + want)
            mm, arr = _window(f, start, length)
            before = reader.off
            found = reader.walk(mm, arr, start, snapshots_per_chunk, _vector)
            if found.count:
                per_snap = max(per_snap, (reader.off - before) // found.count)
            if found.count or found.xs[0] or len(reader.w.warnings) > warned or reader.finished:
                rings, snapshots, pages, xenstore = reader.tables(found, arr, start)
                chunk = RingCaptureChunk(
                    path,
                    rings,
                    snapshots,
                    pages,
                    xenstore,
                    reader.w.warnings[warned:],
                    found.agent,
                    reader.w.agent_description,
                )
                warned = len(reader.w.warnings)
                del mm, arr, found, pages
                yield chunk
                del chunk
            else:
                del mm, arr, found
            if reader.finished:
                return


def ringcap_summary(path: str | Path) -> dict[str, Any]:
    """What ``blktrace-xen info`` prints about a ring capture (read chunk by chunk)."""
    frames: list[pl.DataFrame] = []
    warnings: list[str] = []
    xenstore_lines = 0
    ring_table = pl.DataFrame(schema=schema.RINGS_SCHEMA)
    agent: list[tuple[int, bytes]] = []
    description = ""
    for chunk in iter_ringcap_chunks(path):
        frames.append(chunk.snapshots)
        warnings.extend(chunk.warnings)
        xenstore_lines += chunk.xenstore.height
        ring_table = chunk.rings
        agent.extend(chunk.agent)
        description = chunk.agent_description or description
    snapshots = pl.concat(frames)
    rings = []
    for row in ring_table.iter_rows(named=True):
        key = (row["domid"], row["vdev"], row["queue"])
        s = snapshots.filter(
            (pl.col("domid") == key[0]) & (pl.col("vdev") == key[1]) & (pl.col("queue") == key[2])
        )
        rings.append(
            {
                **row,
                "name": f"vbd/{key[0]}/{key[1]}/q{key[2]}",
                "snapshots": s.height,
                "first_ns": s["ns"].min() if s.height else None,
                "last_ns": s["ns"].max() if s.height else None,
                "req_prod_first": s["req_prod"][0] if s.height else None,
                "req_prod_last": s["req_prod"][-1] if s.height else None,
                "rsp_prod_last": s["rsp_prod"][-1] if s.height else None,
            }
        )
    out: dict[str, Any] = {
        "format": "ringcap",
        "path": str(path),
        "rings": rings,
        "snapshots": snapshots.height,
        "xenstore_lines": xenstore_lines,
        "warnings": warnings,
    }
    if agent:
        out["agent"] = _agent_summary(agent, description, str(path), warnings)
    return out


def _agent_summary(
    records: list[tuple[int, bytes]], description: str, path: str, warnings: list[str]
) -> dict[str, Any]:
    from blktrace_xen.decode.agentcap import agent_tables
    from blktrace_xen.structs.agentcap import AgentWhat, Kind

    t = agent_tables(records, path)
    warnings.extend(t.warnings)
    lost = int(t.get(Kind.LOST)["count"].sum() or 0)
    if lost:
        warnings.append(f"ringcap: {path}: the capture agent lost {lost} events: incomplete")
    notes = t.get(Kind.AGENT)
    ns = [n for n, _ in records]
    return {
        "description": description,
        "records": len(records),
        "per_kind": {Kind(k).name.lower(): f.height for k, f in sorted(t.frames.items())},
        "bad_records": t.bad,
        "lost_events": lost,
        "first_ns": min(ns),
        "last_ns": max(ns),
        "notes": [
            f"{AgentWhat(int(w)).name.lower()}: {text}"
            for w, text in zip(notes["what"].to_list(), notes["text"].to_list(), strict=True)
        ],
    }


_AGENT_SKIP = frozenset({"ns", "kind", "protocol", "domid", "vdev", "queue", "_reserved", "_pad"})


def _agent_dump_lines(cap: RingCapture) -> list[tuple[int, int, str]]:
    """One line per agent record: its kind, ring and fields (slot bytes as hex)."""
    from blktrace_xen.decode.agentcap import agent_tables
    from blktrace_xen.structs.agentcap import Kind

    out: list[tuple[int, int, str]] = []
    for kind, frame in agent_tables(cap.agent, cap.path).frames.items():
        name = Kind(kind).name.lower()
        for r in frame.iter_rows(named=True):
            ring = (
                f"vbd/{r['domid']}/{r['vdev']}/q{r['queue']}"
                if r["domid"] != 0xFFFF and r["queue"] != 0xFFFF
                else (f"vbd/{r['domid']}/{r['vdev']}" if r["domid"] != 0xFFFF else "-")
            )
            fields = " ".join(
                f"{k}={v.hex() if isinstance(v, bytes) else (hex(v) if k == 'ring' else v)}"
                for k, v in r.items()
                if k not in _AGENT_SKIP
            )
            out.append((r["ns"], 6, f"{r['ns']} agent {name} {ring} {fields}"))
    return out


def iter_ringcap_dump(path: str | Path) -> Iterator[str]:
    """One text line per snapshot, xenstore line, derived request and response, in time order."""
    from blktrace_xen.decode.ring import derive_ring_streams

    cap = read_ringcap(path)
    streams = derive_ring_streams(cap)
    lines: list[tuple[int, int, str]] = []
    for r in cap.snapshots.iter_rows(named=True):
        lines.append(
            (
                r["ns"],
                0,
                f"{r['ns']} vbd/{r['domid']}/{r['vdev']}/q{r['queue']} snap "
                f"#{r['snap']} req_prod={r['req_prod']} req_event={r['req_event']} "
                f"rsp_prod={r['rsp_prod']} rsp_event={r['rsp_event']}"
                + ("" if r["tsc"] is None else f" tsc={r['tsc']}"),
            )
        )
    for r in cap.xenstore.iter_rows(named=True):
        lines.append((r["ns"], 1, f"{r['ns']} xenstore {r['path']}={r['value']}"))
    for r in streams.requests.iter_rows(named=True):
        lines.append(
            (
                r["ns"],
                2,
                f"{r['ns']} vbd/{r['domid']}/{r['vdev']}/q{r['queue']} request "
                f"idx={r['idx']} id={r['id']} op={r['operation']} "
                f"sector={r['sector_number']} nr_sectors={r['nr_sectors']} seen={r['seen']}",
            )
        )
    for r in streams.responses.iter_rows(named=True):
        lines.append(
            (
                r["ns"],
                3,
                f"{r['ns']} vbd/{r['domid']}/{r['vdev']}/q{r['queue']} response "
                f"idx={r['idx']} id={r['id']} op={r['operation']} status={r['status']}",
            )
        )
    for r in streams.gaps.iter_rows(named=True):
        lines.append(
            (
                r["ns"],
                4,
                f"{r['ns']} vbd/{r['domid']}/{r['vdev']}/q{r['queue']} gap "
                f"{r['producer']} from_idx={r['from_idx']} count={r['count']}",
            )
        )
    for r in streams.anomalies.iter_rows(named=True):
        lines.append(
            (
                r["ns"],
                5,
                f"{r['ns']} vbd/{r['domid']}/{r['vdev']}/q{r['queue']} anomaly "
                f"{r['kind']} {r['producer']} {r['old']} -> {r['new']}",
            )
        )
    lines += _agent_dump_lines(cap)
    lines.sort(key=lambda t: (t[0], t[1]))
    for w in cap.warnings:
        yield f"# warning: {w}"
    for _, _, text in lines:
        yield text
