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
    ``xenstore`` has columns ns, tsc, path, value.
    """

    path: str
    rings: pl.DataFrame
    snapshots: pl.DataFrame
    pages: dict[RingKey, np.ndarray[Any, np.dtype[np.uint8]]]
    xenstore: pl.DataFrame
    warnings: list[str] = field(default_factory=list)


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
                    return int(text[4:])
                except ValueError:
                    return None
        start = vstart + length + (-length % 4)
    return None


def read_ringcap(path: str | Path) -> RingCapture:
    """Decode a whole ring capture (see :class:`RingCapture`)."""
    path = str(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputFileError(path, f"cannot open: {exc.strerror}") from exc
    with f:
        head = f.read(4)
        if head != PCAPNG_MAGIC:
            raise InputFileError(path, "not a pcapng ring capture (no section header magic)")
        size = f.seek(0, 2)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _decode(path, mm, size)


def _decode(path: str, mm: Any, size: int) -> RingCapture:
    w = _Walker(path)
    # per ring: lists of (ns, tsc, data offset)
    snaps: dict[RingKey, tuple[list[int], list[int | None], list[int]]] = {}
    xs: tuple[list[int], list[int | None], list[str], list[str]] = ([], [], [], [])
    iface_base = 0
    off = 0
    index = 0
    while off < size:
        if off + 8 > size:
            w.warn(
                "truncated",
                f"truncated block #{index} at offset {off:#x}: "
                f"need 8 header bytes, {size - off} left",
            )
            break
        btype, blen = _HEAD.unpack_from(mm, off)
        if btype == BT_SHB:
            if off + 12 > size:
                w.warn("truncated", f"truncated block #{index} at offset {off:#x}")
                break
            (bom,) = _U32.unpack_from(mm, off + 8)
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
            iface_base = len(w.ifaces)
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
            break
        if off + blen > size:
            w.warn(
                "truncated",
                f"truncated block #{index} at offset {off:#x}: "
                f"need {blen} bytes, {size - off} left",
            )
            break
        (trail,) = _U32.unpack_from(mm, off + blen - 4)
        if trail != blen:
            w.warn(
                "corrupt",
                f"block #{index} at offset {off:#x}: trailing length {trail} "
                f"differs from {blen}; stopping here",
            )
            break
        if btype == BT_IDB:
            w.idb(bytes(mm[off + 8 : off + blen - 4]), index, off)
        elif btype == BT_EPB:
            if blen < 32:
                w.warn(
                    "corrupt",
                    f"block #{index} at offset {off:#x}: enhanced packet block "
                    f"of {blen} bytes is too short",
                )
            else:
                ifid, ts_hi, ts_lo, caplen, _orig = _EPB.unpack_from(mm, off + 8)
                data = off + 28
                end = off + blen - 4
                if data + caplen > end:
                    w.warn(
                        "corrupt",
                        f"block #{index} at offset {off:#x}: captured length "
                        f"{caplen} overruns the block",
                    )
                elif iface_base + ifid >= len(w.ifaces):
                    w.warn(
                        "iface",
                        f"block #{index} at offset {off:#x}: packet on undeclared interface {ifid}",
                    )
                else:
                    iface = w.ifaces[iface_base + ifid]
                    ns = ((ts_hi << 32) | ts_lo) * iface.ts_num // iface.ts_den
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
                            lists = snaps.setdefault(iface.key, ([], [], []))
                            lists[0].append(ns)
                            lists[1].append(tsc)
                            lists[2].append(data)
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
                            xs[0].append(ns)
                            xs[1].append(tsc)
                            xs[2].append(p)
                            xs[3].append(v)
        off += blen
        index += 1
    return _assemble(path, w, mm, snaps, xs)


def _assemble(
    path: str,
    w: _Walker,
    mm: Any,
    snaps: dict[RingKey, tuple[list[int], list[int | None], list[int]]],
    xs: tuple[list[int], list[int | None], list[str], list[str]],
) -> RingCapture:
    ring_rows: dict[RingKey, _Iface] = {}
    for iface in w.ifaces:
        if iface.key is not None and iface.key not in ring_rows:
            ring_rows[iface.key] = iface
    rings = pl.DataFrame(
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
    # A read-only file mapping that outlives `mm`: pages of a regular capture
    # are strided views into it (no copy, memory bounded by the page cache).
    buf = np.memmap(path, dtype=np.uint8, mode="r") if snaps else np.zeros(0, np.uint8)
    pages: dict[RingKey, np.ndarray[Any, np.dtype[np.uint8]]] = {}
    frames = []
    for key, (nss, tscs, offs) in snaps.items():
        iface = ring_rows[key]
        offsets = np.asarray(offs, dtype=np.int64)
        steps = np.diff(offsets)
        if len(offsets) > 1 and (steps == steps[0]).all():
            # one ring, equal blocks (the usual case): one strided copy
            arr = np.lib.stride_tricks.as_strided(
                buf[offsets[0] :],
                shape=(len(offsets), iface.nbytes),
                strides=(int(steps[0]), 1),
                writeable=False,
            )
        else:
            arr = np.empty((len(offsets), iface.nbytes), dtype=np.uint8)
            for i, o in enumerate(offsets):
                arr[i] = buf[o : o + iface.nbytes]
        pages[key] = arr
        hdr = arr[:, :16].copy().view("<u4") if len(arr) else np.zeros((0, 4), "<u4")
        n = len(offsets)
        frames.append(
            pl.DataFrame(
                {
                    "domid": np.full(n, key[0], np.uint16),
                    "vdev": np.full(n, key[1], np.uint32),
                    "queue": np.full(n, key[2], np.uint16),
                    "snap": np.arange(n, dtype=np.uint32),
                    "ns": np.asarray(nss, dtype=np.int64),
                    "tsc": pl.Series(tscs, dtype=pl.UInt64),
                    "req_prod": hdr[:, 0],
                    "req_event": hdr[:, 1],
                    "rsp_prod": hdr[:, 2],
                    "rsp_event": hdr[:, 3],
                    "nr_ents": np.full(n, iface.nr_ents, np.uint16),
                },
                schema=schema.SNAPSHOTS_SCHEMA,
            )
        )
    del buf
    snapshots = pl.concat(frames) if frames else schema.empty("snapshots")
    xenstore = pl.DataFrame(
        {"ns": xs[0], "tsc": xs[1], "path": xs[2], "value": xs[3]},
        schema={"ns": pl.Int64, "tsc": pl.UInt64, "path": pl.String, "value": pl.String},
    )
    return RingCapture(path, rings, snapshots, pages, xenstore, w.warnings)


def ringcap_summary(path: str | Path) -> dict[str, Any]:
    """What ``blktrace-xen info`` prints about a ring capture."""
    cap = read_ringcap(path)
    rings = []
    for row in cap.rings.iter_rows(named=True):
        key = (row["domid"], row["vdev"], row["queue"])
        s = cap.snapshots.filter(
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
    return {
        "format": "ringcap",
        "path": cap.path,
        "rings": rings,
        "snapshots": cap.snapshots.height,
        "xenstore_lines": cap.xenstore.height,
        "warnings": cap.warnings,
    }


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
    lines.sort(key=lambda t: (t[0], t[1]))
    for w in cap.warnings:
        yield f"# warning: {w}"
    for _, _, text in lines:
        yield text
