"""Build blkif ring areas byte-exactly: the writer side of the ring decoder.

Pure bytes, no I/O. Layouts come from the construct declarations (through the
NumPy dtypes derived from them), so a page built here decodes with the same
offsets the decoder uses. Writers reproduce what real drivers do: a request is
written whole (Linux blkfront builds it in a shadow and copies the struct,
8f5a695d9900), a response writes only id, operation and status (blkback since
XSA-216), so the rest of the slot keeps the request's stale bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from blktrace_xen.decode.ring_dtypes import blkif_dtypes
from blktrace_xen.errors import ModelUsageError
from blktrace_xen.structs.blkif import (
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    RW_OPS,
    SRING_HEADER_SIZE,
    BlkifOp,
    ring_geometry,
)

_U32 = 0xFFFFFFFF

Segment = tuple[int, int, int]  # (gref, first_sect, last_sect)


class RingPage:
    """The mutable shared-ring area of one ring (all its pages), as both ends see it.

    Starts in the ``SHARED_RING_INIT`` state: producers 0, events 1, padding 0.
    """

    def __init__(self, abi: str, ring_page_order: int) -> None:
        self.geometry = ring_geometry(abi, ring_page_order)
        self.abi = abi
        self._dt = blkif_dtypes(abi)
        self._buf = np.zeros(self.geometry.nbytes, dtype=np.uint8)
        self._hdr = self._buf[:SRING_HEADER_SIZE].view(self._dt.header)[0]
        self._slots = self._buf[
            SRING_HEADER_SIZE : SRING_HEADER_SIZE + self.geometry.nr_ents * self._dt.entry_size
        ].reshape(self.geometry.nr_ents, self._dt.entry_size)
        self.req_prod = 0
        self.rsp_prod = 0
        self.req_event = 1
        self.rsp_event = 1

    # --- header ---------------------------------------------------------
    def _get(self, name: str) -> int:
        return int(self._hdr[name])

    def _set(self, name: str, value: int) -> None:
        self._hdr[name] = value & _U32

    @property
    def req_prod(self) -> int:
        return self._get("req_prod")

    @req_prod.setter
    def req_prod(self, value: int) -> None:
        self._set("req_prod", value)

    @property
    def req_event(self) -> int:
        return self._get("req_event")

    @req_event.setter
    def req_event(self, value: int) -> None:
        self._set("req_event", value)

    @property
    def rsp_prod(self) -> int:
        return self._get("rsp_prod")

    @rsp_prod.setter
    def rsp_prod(self, value: int) -> None:
        self._set("rsp_prod", value)

    @property
    def rsp_event(self) -> int:
        return self._get("rsp_event")

    @rsp_event.setter
    def rsp_event(self, value: int) -> None:
        self._set("rsp_event", value)

    # --- slots ----------------------------------------------------------
    def slot(self, idx: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The raw bytes of the slot holding ring index ``idx`` (a view)."""
        row: np.ndarray[Any, np.dtype[np.uint8]] = self._slots[
            (idx & _U32) & (self.geometry.nr_ents - 1)
        ]
        return row

    def put_raw(self, idx: int, data: bytes, offset: int = 0) -> None:
        """Overwrite bytes of a slot as-is (torn writes, garbage, stale bytes)."""
        if offset < 0 or offset + len(data) > self._dt.entry_size:
            raise ModelUsageError(f"{len(data)} bytes at {offset} do not fit a ring entry")
        self.slot(idx)[offset : offset + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def put_request(
        self,
        idx: int,
        *,
        operation: int,
        id: int,
        sector_number: int = 0,
        nr_segments: int | None = None,
        segments: Sequence[Segment] = (),
        handle: int = 0,
        indirect_op: int | None = None,
        indirect_grefs: Sequence[int] = (),
        nr_sectors: int = 0,
        flag: int = 0,
    ) -> None:
        """Write a whole request into the slot of ``idx`` (the variant follows ``operation``).

        ``nr_segments`` defaults to ``len(segments)``; give it explicitly to
        write a malformed request. For indirect requests it counts the
        segments held in the indirect pages.
        """
        slot = self.slot(idx)
        slot[:] = 0
        op = int(operation)
        if op in RW_OPS:
            if len(segments) > BLKIF_MAX_SEGMENTS_PER_REQUEST:
                raise ModelUsageError(
                    f"{len(segments)} segments > {BLKIF_MAX_SEGMENTS_PER_REQUEST}"
                )
            rec = slot.view(self._dt.request_rw)[0]
            rec["nr_segments"] = len(segments) if nr_segments is None else nr_segments
            rec["handle"] = handle
            rec["sector_number"] = sector_number
            for i, (gref, first, last) in enumerate(segments):
                rec["seg"][i]["gref"] = gref
                rec["seg"][i]["first_sect"] = first
                rec["seg"][i]["last_sect"] = last
        elif op == BlkifOp.BLKIF_OP_DISCARD:
            rec = slot.view(self._dt.request_discard)[0]
            rec["flag"] = flag
            rec["handle"] = handle
            rec["sector_number"] = sector_number
            rec["nr_sectors"] = nr_sectors
        elif op == BlkifOp.BLKIF_OP_INDIRECT:
            if len(indirect_grefs) > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST:
                raise ModelUsageError(f"{len(indirect_grefs)} indirect pages > 8")
            rec = slot.view(self._dt.request_indirect)[0]
            rec["indirect_op"] = (
                int(BlkifOp.BLKIF_OP_READ) if indirect_op is None else int(indirect_op)
            )
            rec["nr_segments"] = nr_segments or 0
            rec["handle"] = handle
            rec["sector_number"] = sector_number
            for i, g in enumerate(indirect_grefs):
                rec["indirect_grefs"][i] = g
        else:
            rec = slot.view(self._dt.request_other)[0]
        rec["operation"] = op
        rec["id"] = id

    def put_response(self, idx: int, *, id: int, operation: int, status: int) -> None:
        """Write id, operation and status only, as blkback does since XSA-216."""
        rec = self.slot(idx).view(self._dt.response)[0]
        rec["id"] = id
        rec["operation"] = operation
        rec["status"] = status

    def to_bytes(self) -> bytes:
        """The whole ring area, ``XEN_PAGE_SIZE << ring_page_order`` bytes."""
        return self._buf.tobytes()
