"""NumPy dtypes derived from the construct blkif declarations.

The construct declarations in :mod:`blktrace_xen.structs.blkif` are the single
source of truth; the bulk decoder views ring pages through packed NumPy dtypes
built here by walking those declarations, so the two can never disagree on an
offset (tests/test_decode_ring.py also decodes random bytes both ways).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from construct import Array, Bytes, Default, FixedSized, FormatField, Renamed, Struct

from blktrace_xen.structs.blkif import SRING_HEADER_SIZE, BlkifOp, blkif_structs

_STRUCT_TO_NUMPY = {
    "B": "u1",
    "b": "i1",
    "H": "u2",
    "h": "i2",
    "L": "u4",
    "l": "i4",
    "Q": "u8",
    "q": "i8",
}


def dtype_of(con: Any) -> np.dtype[Any]:
    """Packed NumPy dtype with the same byte layout as the construct ``con``.

    Supports what the blkif declarations use: Struct of named fields,
    little-endian FormatField, Bytes (as raw u1 arrays), Array, Default.
    """
    if isinstance(con, Default | Renamed | FixedSized) and not isinstance(con, Struct):
        if isinstance(con, FixedSized):
            raise TypeError("FixedSized has no single dtype")
        return dtype_of(con.subcon)
    if isinstance(con, FormatField):
        # struct's "L" is 4 bytes, NumPy's is the platform long: map by size.
        order, code = con.fmtstr[0], con.fmtstr[1]
        if order != "<" or code not in _STRUCT_TO_NUMPY:
            raise TypeError(f"unsupported field format {con.fmtstr!r}")
        return np.dtype("<" + _STRUCT_TO_NUMPY[code])
    if isinstance(con, Bytes):
        return np.dtype((np.uint8, (con.length,)))
    if isinstance(con, Array):
        return np.dtype((dtype_of(con.subcon), (con.count,)))
    if isinstance(con, Struct):
        names: list[str] = []
        formats: list[np.dtype[Any]] = []
        offsets: list[int] = []
        off = 0
        for sub in con.subcons:
            dt = dtype_of(sub)
            if dt.itemsize:
                names.append(sub.name)
                formats.append(dt)
                offsets.append(off)
            off += dt.itemsize
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": off})
    raise TypeError(f"no dtype for construct {type(con).__name__}")


@dataclass(frozen=True, slots=True)
class BlkifDtypes:
    """Per-ABI dtypes of the blkif structs (see :func:`blkif_dtypes`)."""

    header: np.dtype[Any]
    request_rw: np.dtype[Any]
    request_discard: np.dtype[Any]
    request_indirect: np.dtype[Any]
    request_other: np.dtype[Any]
    response: np.dtype[Any]
    segment: np.dtype[Any]
    entry_size: int


@cache
def blkif_dtypes(abi: str) -> BlkifDtypes:
    """The dtypes of ``abi``; request dtypes are padded to the ring entry size."""
    s = blkif_structs(abi)
    header = dtype_of(s.sring_header)
    assert header.itemsize == SRING_HEADER_SIZE

    def entry(con: Any) -> np.dtype[Any]:
        dt = dtype_of(con)
        fields: dict[str, Any] = dict(dt.fields or {})
        return np.dtype(
            {
                "names": list(fields),
                "formats": [fields[n][0] for n in fields],
                "offsets": [fields[n][1] for n in fields],
                "itemsize": s.entry_size,
            }
        )

    return BlkifDtypes(
        header=header,
        request_rw=entry(s.request_rw),
        request_discard=entry(s.request_discard),
        request_indirect=entry(s.request_indirect),
        request_other=entry(s.request_other),
        response=entry(s.response),
        segment=dtype_of(s.segment),
        entry_size=s.entry_size,
    )


@dataclass(frozen=True, slots=True)
class RequestColumns:
    """Request fields of raw ring entries, decoded by variant (read/write, discard, indirect).

    Each ``*_valid`` mask says where the field means something for the entry's
    operation; elsewhere the value is filler the caller must null.
    """

    ops: np.ndarray[Any, Any]
    ids: np.ndarray[Any, Any]
    indirect_op: np.ndarray[Any, Any]
    is_indirect: np.ndarray[Any, Any]
    nr_segments: np.ndarray[Any, Any]
    nr_segments_valid: np.ndarray[Any, Any]
    sector: np.ndarray[Any, Any]
    sector_valid: np.ndarray[Any, Any]
    nr_sectors: np.ndarray[Any, Any]
    nr_sectors_valid: np.ndarray[Any, Any]


def request_columns(raw: np.ndarray[Any, Any], dts: BlkifDtypes) -> RequestColumns:
    """Decode ``raw`` ((n, entry_size) uint8: whole request entries) with ``dts``."""
    nf = len(raw)
    ops = raw[:, 0] if nf else np.zeros(0, np.uint8)
    rw_v = raw.view(dts.request_rw)[:, 0] if nf else np.zeros(0, dts.request_rw)
    ds_v = raw.view(dts.request_discard)[:, 0] if nf else np.zeros(0, dts.request_discard)
    in_v = raw.view(dts.request_indirect)[:, 0] if nf else np.zeros(0, dts.request_indirect)
    is_rw = ops <= BlkifOp.BLKIF_OP_FLUSH_DISKCACHE
    is_ds = ops == BlkifOp.BLKIF_OP_DISCARD
    is_in = ops == BlkifOp.BLKIF_OP_INDIRECT
    # id sits at the same offset in every variant (8, or 4 on x86_32)
    nseg_rw = rw_v["nr_segments"].astype(np.int64)
    segs = rw_v["seg"]
    used = np.arange(11)[None, :] < np.minimum(nseg_rw, 11)[:, None]
    seg_len = segs["last_sect"].astype(np.int64) - segs["first_sect"].astype(np.int64) + 1
    rw_sectors = np.where(used & (seg_len > 0), seg_len, 0).sum(axis=1)
    return RequestColumns(
        ops=ops,
        ids=rw_v["id"],
        indirect_op=in_v["indirect_op"],
        is_indirect=is_in,
        nr_segments=np.where(is_rw, nseg_rw, np.where(is_in, in_v["nr_segments"], 0)),
        nr_segments_valid=is_rw | is_in,
        sector=np.where(is_ds, ds_v["sector_number"], rw_v["sector_number"]),
        sector_valid=is_rw | is_ds | is_in,
        nr_sectors=np.where(is_ds, ds_v["nr_sectors"], rw_sectors.astype(np.uint64)),
        nr_sectors_valid=is_rw | is_ds,
    )
