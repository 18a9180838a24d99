"""Ring snapshots -> request / response streams (vectorised over snapshots).

From two consecutive snapshots of one ring, the requests published in between
are the indices ``[old req_prod, new req_prod)`` and the responses
``[old rsp_prod, new rsp_prod)``, all modulo 2**32. What a snapshot can still
show of them (ring.h: request ``i`` and response ``i`` share slot
``i & (nr_ents - 1)``; a response overwrites the slot of the request with the
same index, request ``i + nr_ents`` overwrites both):

* request ``j`` with ``j >= rsp_prod``: the slot holds the request -> ``seen=full``;
* request ``j`` with ``j < rsp_prod``: the slot already holds response ``j``;
  the request's own bytes are gone. It is emitted as ``seen=via_response``
  with id / operation / status taken from the response that answered it
  (responses whose id matches no fully seen request in flight are assigned to
  such requests first in, first out: exact when they complete in order) and
  sector / segments null. Its bytes are never decoded as a request;
* response ``k`` is visible while ``new req_prod - k <= nr_ents``;
* anything beyond: a gap record with the count, nothing invented.

A producer moving backwards is an anomaly; the stream restarts from the new
value. Request padding, unused segments and response padding are not
guaranteed zero: non-zero response padding is reported (``pad_nonzero``),
never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from blktrace_xen import schema
from blktrace_xen.decode.ring_dtypes import blkif_dtypes, request_columns
from blktrace_xen.structs.blkif import SRING_HEADER_SIZE, BlkifOp

if TYPE_CHECKING:
    from collections.abc import Iterable

    from blktrace_xen.decode.ringcap import RingCapture, RingCaptureChunk

RingKey = tuple[int, int, int]
_MASK = np.uint64(0xFFFFFFFF)
_HALF = 1 << 31
_MAX_UNKNOWN_OP_WARNINGS = 20

ANOMALIES_SCHEMA = pl.Schema(
    {
        "domid": pl.UInt16,
        "vdev": pl.UInt32,
        "queue": pl.UInt16,
        "ns": pl.Int64,
        "prev_ns": pl.Int64,
        "producer": pl.String,  # "req" or "rsp"
        "old": pl.UInt32,
        "new": pl.UInt32,
        # "backwards": a producer moved back; "implausible": req_prod - rsp_prod > nr_ents
        # (blkback's RING_REQUEST_PROD_OVERFLOW); "rsp_ahead": rsp_prod beyond req_prod.
        "kind": pl.String,
    }
)


@dataclass(slots=True)
class RingStreams:
    """What :func:`derive_ring_streams` derives from a capture."""

    requests: pl.DataFrame
    responses: pl.DataFrame
    gaps: pl.DataFrame
    mutations: pl.DataFrame
    anomalies: pl.DataFrame
    warnings: list[str] = field(default_factory=list)


def decode_headers(pages: np.ndarray[Any, np.dtype[np.uint8]]) -> np.ndarray[Any, Any]:
    """(snapshots, 4) u32 array of req_prod, req_event, rsp_prod, rsp_event."""
    return np.ascontiguousarray(pages[:, :16]).view("<u4")


def slot_view(
    pages: np.ndarray[Any, np.dtype[np.uint8]], abi: str, nr_ents: int
) -> np.ndarray[Any, Any]:
    """(snapshots, nr_ents, entry_size) zero-copy view of the slots of every snapshot."""
    es = blkif_dtypes(abi).entry_size
    return pages[:, SRING_HEADER_SIZE : SRING_HEADER_SIZE + nr_ents * es].reshape(
        len(pages), nr_ents, es
    )


def _spans(
    old: np.ndarray[Any, Any], count: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Flatten per-snapshot index ranges [old, old+count) into (snapshot, index) arrays."""
    total = int(count.sum())
    snap = np.repeat(np.arange(len(count)), count)
    starts = np.repeat(np.cumsum(count) - count, count)
    within = np.arange(total, dtype=np.int64) - starts
    idx = (np.repeat(old.astype(np.uint64), count) + within.astype(np.uint64)) & _MASK
    return snap, idx.astype(np.uint32)


@dataclass(slots=True)
class _RingInput:
    key: RingKey
    abi: str
    nr_ents: int
    ns: np.ndarray[Any, Any]
    tsc: np.ndarray[Any, Any]  # u64, with tsc_valid
    tsc_valid: np.ndarray[Any, Any]
    pages: np.ndarray[Any, np.dtype[np.uint8]]


def _nullable_tsc(r: _RingInput, rows: np.ndarray[Any, Any]) -> pl.Series:
    return pl.Series("tsc", r.tsc[rows], dtype=pl.UInt64).set(
        pl.Series(~r.tsc_valid[rows]),
        None,
    )


def _producer_deltas(
    prod: np.ndarray[Any, Any], before: int | None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per snapshot: the previous producer value, the advance, and whether it went back.

    ``before`` is the value in the snapshot preceding ``prod[0]`` (None: none).
    """
    prev = np.empty_like(prod)
    prev[0] = prod[0] if before is None else before
    prev[1:] = prod[:-1]
    delta = (prod.astype(np.int64) - prev.astype(np.int64)) & 0xFFFFFFFF
    back = delta >= _HALF
    delta[back] = 0
    return prev, delta, back


@dataclass(slots=True)
class _Carry:
    """What the next chunk of a ring needs from the snapshots before it."""

    hdr: np.ndarray[Any, Any]  # (4,) u32 header of the last snapshot
    slots: np.ndarray[Any, Any]  # (nr_ents, entry_size) copy of its slots
    ns: int
    snaps: int  # snapshots of the ring already derived
    unknown_warned: int


@dataclass(slots=True)
class _Part:
    """One chunk of one ring, derived; via-response ids are assigned when the ring ends."""

    requests: pl.DataFrame
    responses: pl.DataFrame
    gaps_req: list[dict[str, Any]]
    gaps_rsp: list[dict[str, Any]]
    mutations: pl.DataFrame
    anomalies: tuple[list[dict[str, Any]], ...]  # backwards req, backwards rsp, implausible, ahead
    # inputs of the via-response assignment, snapshot numbers global to the ring
    q_snap: np.ndarray[Any, Any]
    answered: np.ndarray[Any, Any]
    req_id: np.ndarray[Any, Any]
    s_snap: np.ndarray[Any, Any]
    rsp_id: np.ndarray[Any, Any]
    rsp_op: np.ndarray[Any, Any]


def _derive_one(r: _RingInput, warnings: list[str], carry: _Carry | None) -> tuple[_Part, _Carry]:
    """Derive consecutive snapshots of one ring, continuing from ``carry`` (None: the first)."""
    n = r.nr_ents
    dts = blkif_dtypes(r.abi)
    hdr = decode_headers(r.pages)
    rp, sp = hdr[:, 0].astype(np.int64), hdr[:, 2].astype(np.int64)
    slots = slot_view(r.pages, r.abi, n)
    key_cols = {"domid": r.key[0], "vdev": r.key[1], "queue": r.key[2]}
    base = 0 if carry is None else carry.snaps
    prev_ns = np.concatenate([r.ns[:1] if carry is None else [carry.ns], r.ns[:-1]]).astype(
        np.int64
    )

    anomalies: tuple[list[dict[str, Any]], ...] = ([], [], [], [])
    gaps_req: list[dict[str, Any]] = []
    gaps_rsp: list[dict[str, Any]] = []

    rp_prev, d_req, back_req = _producer_deltas(
        hdr[:, 0], None if carry is None else int(carry.hdr[0])
    )
    sp_prev, d_rsp, back_rsp = _producer_deltas(
        hdr[:, 2], None if carry is None else int(carry.hdr[2])
    )
    for rows, producer, back, old, new in (
        (anomalies[0], "req", back_req, rp_prev, hdr[:, 0]),
        (anomalies[1], "rsp", back_rsp, sp_prev, hdr[:, 2]),
    ):
        for i in np.flatnonzero(back):
            rows.append(
                {
                    **key_cols,
                    "ns": int(r.ns[i]),
                    "prev_ns": int(prev_ns[i]),
                    "producer": producer,
                    "old": int(old[i]),
                    "new": int(new[i]),
                    "kind": "backwards",
                }
            )
    outstanding = (rp - sp) & 0xFFFFFFFF
    for i in np.flatnonzero((outstanding > n) & (outstanding < _HALF)):
        anomalies[2].append(
            {
                **key_cols,
                "ns": int(r.ns[i]),
                "prev_ns": int(prev_ns[i]),
                "producer": "req",
                "old": int(sp[i]),
                "new": int(rp[i]),
                "kind": "implausible",
            }
        )
    for i in np.flatnonzero(outstanding >= _HALF):
        anomalies[3].append(
            {
                **key_cols,
                "ns": int(r.ns[i]),
                "prev_ns": int(prev_ns[i]),
                "producer": "rsp",
                "old": int(rp[i]),
                "new": int(sp[i]),
                "kind": "rsp_ahead",
            }
        )

    # --- requests -------------------------------------------------------
    # The first snapshot of a ring shows the requests already outstanding: [rsp_prod, req_prod).
    if carry is None and 0 <= outstanding[0] <= n:
        rp_prev[0] = hdr[0, 2]
        d_req[0] = outstanding[0]
    vis_req = np.minimum(d_req, n)
    for i in np.flatnonzero(d_req > n):
        gaps_req.append(
            {
                **key_cols,
                "ns": int(r.ns[i]),
                "prev_ns": int(prev_ns[i]),
                "producer": "req",
                "from_idx": int(rp_prev[i]),
                "count": int(d_req[i] - n),
            }
        )
    q_snap, q_idx = _spans((hdr[:, 0].astype(np.int64) - vis_req) & 0xFFFFFFFF, vis_req)
    # answered already when rsp_prod (same snapshot) is past it
    behind = (sp[q_snap] - q_idx.astype(np.int64)) & 0xFFFFFFFF
    answered = (behind >= 1) & (behind < _HALF)
    raw_req = slots[q_snap, q_idx & (n - 1)]

    # --- responses ------------------------------------------------------
    # A hostile or corrupt page can move rsp_prod by up to 2**31: spanning every index
    # would build billions of rows. With sane producers only the last n published can
    # still show in the ring; the ones before the last 2n are counted unseen unspanned.
    skip = np.maximum(d_rsp - 2 * n, 0)
    s_snap, s_idx = _spans((sp_prev.astype(np.int64) + skip) & 0xFFFFFFFF, d_rsp - skip)
    age = (rp[s_snap] - s_idx.astype(np.int64)) & 0xFFFFFFFF
    visible = age <= n
    if (~visible).any() or skip.any():
        # consecutive unseen responses of a snapshot form one gap record
        for i in np.union1d(s_snap[~visible], np.flatnonzero(skip)):
            sel = (s_snap == i) & ~visible
            first = int(sp_prev[i]) if skip[i] else int(s_idx[sel][0])
            gaps_rsp.append(
                {
                    **key_cols,
                    "ns": int(r.ns[i]),
                    "prev_ns": int(prev_ns[i]),
                    "producer": "rsp",
                    "from_idx": first,
                    "count": int(skip[i] + sel.sum()),
                }
            )
    s_snap, s_idx = s_snap[visible], s_idx[visible]
    raw_rsp = slots[s_snap, s_idx & (n - 1)]
    rsp_rec = raw_rsp.view(dts.response)[:, 0] if len(raw_rsp) else np.zeros(0, dts.response)
    pad_cols = [c for c in ("_pad0", "_pad1") if c in (dts.response.names or ())]
    pad_nonzero = np.zeros(len(rsp_rec), dtype=bool)
    for c in pad_cols:
        col = rsp_rec[c]
        pad_nonzero |= col.reshape(len(col), -1).any(axis=1) if len(col) else False

    responses = pl.DataFrame(
        {
            **{k: np.full(len(s_idx), v) for k, v in key_cols.items()},
            "session": np.zeros(len(s_idx), np.uint32),
            "ns": r.ns[s_snap],
            "tsc": _nullable_tsc(r, s_snap),
            "idx": s_idx,
            "id": rsp_rec["id"],
            "operation": rsp_rec["operation"],
            "status": rsp_rec["status"],
            "pad_nonzero": pad_nonzero,
            "source": pl.repeat("ringcap", len(s_idx), eager=True),
        }
    )
    responses = schema.conform(responses, "responses")

    # --- full requests: decode by variant --------------------------------
    full = ~answered
    f_raw = raw_req[full]
    cols = request_columns(f_raw, dts)
    ops, ids, in_v, is_in = cols.ops, cols.ids, cols.indirect_op, cols.is_indirect
    f_rows = np.flatnonzero(full)
    nr_segments, nr_segments_valid = cols.nr_segments, cols.nr_segments_valid
    sector, sector_valid = cols.sector, cols.sector_valid
    nr_sectors, nr_sectors_valid = cols.nr_sectors, cols.nr_sectors_valid
    unknown = ops > BlkifOp.BLKIF_OP_INDIRECT
    warned = 0 if carry is None else carry.unknown_warned
    for j in np.flatnonzero(unknown)[: max(0, _MAX_UNKNOWN_OP_WARNINGS - warned)]:
        i = q_snap[f_rows[j]]
        warned += 1
        warnings.append(
            f"ring vbd/{r.key[0]}/{r.key[1]}/q{r.key[2]}: snapshot #{base + i} "
            f"(ns {int(r.ns[i])}): request idx {int(q_idx[f_rows[j]])} has unknown "
            f"operation {int(ops[j])}"
        )

    total = len(q_idx)
    req_id = np.zeros(total, np.uint64)
    req_op = np.zeros(total, np.uint8)
    req_id[f_rows] = ids
    req_op[f_rows] = ops

    def nullable(
        values: np.ndarray[Any, Any], valid: np.ndarray[Any, Any], dtype: Any
    ) -> pl.Series:
        out = np.zeros(total, dtype=values.dtype if len(values) else np.uint64)
        mask = np.zeros(total, dtype=bool)
        out[f_rows] = values
        mask[f_rows] = valid
        return pl.Series(out).cast(dtype).set(pl.Series(~mask), None)

    seen = pl.Series(answered).replace_strict(
        {True: "via_response", False: "full"}, return_dtype=pl.String
    )
    # via_response ids and operations are null here; _RingAccum.finish assigns them
    answered_s = pl.Series(answered)
    requests = pl.DataFrame(
        {
            **{k: np.full(total, v) for k, v in key_cols.items()},
            "session": np.zeros(total, np.uint32),
            "ns": r.ns[q_snap],
            "tsc": _nullable_tsc(r, q_snap),
            "idx": q_idx,
            "id": pl.Series(req_id).set(answered_s, None),
            "operation": pl.Series(req_op).set(answered_s, None),
            "indirect_op": nullable(in_v, is_in, pl.UInt8),
            "nr_segments": nullable(nr_segments, nr_segments_valid, pl.UInt16),
            "sector_number": nullable(sector, sector_valid, pl.UInt64),
            "nr_sectors": nullable(nr_sectors, nr_sectors_valid, pl.UInt64),
            "seen": seen,
            "source": pl.repeat("ringcap", total, eager=True),
        }
    )
    requests = schema.conform(requests, "requests")
    mutations = _mutations(
        nr_ents=n, ns=r.ns, prev_ns=prev_ns, hdr=hdr, slots=slots, dts=dts, key_cols=key_cols
    )
    if carry is not None:
        # the pair (last snapshot of the previous chunk, first of this one)
        edge = _mutations(
            nr_ents=n,
            ns=np.array([carry.ns, r.ns[0]], np.int64),
            prev_ns=np.array([carry.ns, carry.ns], np.int64),
            hdr=np.stack([carry.hdr, hdr[0]]),
            slots=np.stack([carry.slots, slots[0]]),
            dts=dts,
            key_cols=key_cols,
        )
        if edge.height:
            mutations = pl.concat([edge, mutations])
    part = _Part(
        requests=requests,
        responses=responses,
        gaps_req=gaps_req,
        gaps_rsp=gaps_rsp,
        mutations=mutations,
        anomalies=anomalies,
        q_snap=q_snap + base,
        answered=answered,
        req_id=req_id,
        s_snap=s_snap + base,
        rsp_id=np.ascontiguousarray(rsp_rec["id"]),
        rsp_op=np.ascontiguousarray(rsp_rec["operation"]),
    )
    last = len(hdr) - 1
    new_carry = _Carry(
        hdr=hdr[last].copy(),
        slots=np.array(slots[last]),
        ns=int(r.ns[last]),
        snaps=base + len(hdr),
        unknown_warned=warned,
    )
    return part, new_carry


def _served(step: np.ndarray[Any, Any], group_start: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """For a queue whose length moves by ``step`` (+1 arrival, -1 departure, 0
    nothing, never below 0), whether each departure found the queue non-empty.

    ``step`` is in event order inside each group; ``group_start`` marks the
    first event of each group (each group is its own queue, empty at first).
    The length is the running sum minus its running minimum (0 included), so
    a departure finds the queue empty exactly when the sum reaches a new low.
    """
    level = np.cumsum(step, dtype=np.int64)
    first = np.flatnonzero(group_start)
    sizes = np.diff(np.append(first, len(step)))
    if len(first) > 1:  # the running sum since the group began
        level -= np.repeat(level[first] - step[first], sizes)
    # Shifting each later group below every earlier one lets one cumulative
    # minimum run over all groups without crossing a boundary.
    shift = np.repeat(np.arange(len(first), dtype=np.int64) * (2 * len(step) + 2), sizes)
    low = level - shift
    np.minimum.accumulate(low, out=low)
    low += shift
    del shift
    low[1:] = low[:-1].copy()  # the low before each event
    low[first] = 0
    np.minimum(low, 0, out=low)
    served: np.ndarray[Any, Any] = level >= low
    return served


def _assign_via_response(
    *,
    answered: np.ndarray[Any, Any],
    req_id: np.ndarray[Any, Any],
    rsp_id: np.ndarray[Any, Any],
    rsp_op: np.ndarray[Any, Any],
    q_snap: np.ndarray[Any, Any],
    s_snap: np.ndarray[Any, Any],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Give each request seen only through a response the id/op of the response that answered it.

    Requests and responses are taken in snapshot order (``q_snap``, ``s_snap``
    non-decreasing; requests of a snapshot first: a response cannot precede
    its request). A response whose id matches a fully seen request in flight
    answers that one; any other answers the oldest still unassigned
    via_response request. Two queues, counted with cumulative sums: one per id
    of full requests in flight, one of waiting via_response requests.
    """
    total = len(answered)
    out_id = np.zeros(total, np.uint64)
    out_op = np.zeros(total, np.uint8)
    ok = np.zeros(total, dtype=bool)
    if not answered.any() or len(s_snap) == 0:
        return out_id, out_op, ok
    nq, nr = total, len(s_snap)
    # Positions in the merged order (ties: requests first).
    q_pos = np.arange(nq, dtype=np.int64) + np.searchsorted(s_snap, q_snap, side="left")
    s_pos = np.arange(nr, dtype=np.int64) + np.searchsorted(q_snap, s_snap, side="right")

    # 1. Per id, in merged order: a full request arrives, a response departs.
    full = np.flatnonzero(~answered)
    nf = len(full)
    ev_id = np.concatenate([req_id[full].astype(np.uint64), rsp_id.astype(np.uint64)])
    order = np.lexsort((np.concatenate([q_pos[full], s_pos]), ev_id))
    ids_sorted = ev_id[order]
    del ev_id
    group_start = np.ones(len(order), dtype=bool)
    group_start[1:] = ids_sorted[1:] != ids_sorted[:-1]
    del ids_sorted
    matched = _served(np.where(order < nf, 1, -1).astype(np.int8), group_start)
    is_rsp = order >= nf
    unmatched = np.ones(nr, dtype=bool)
    unmatched[order[is_rsp] - nf] = ~matched[is_rsp]
    del order, matched, is_rsp, group_start

    # 2. In merged order: a via_response request arrives, an unmatched response departs.
    via = np.flatnonzero(answered)
    lone = np.flatnonzero(unmatched)
    step = np.zeros(nq + nr, np.int8)
    step[q_pos[via]] = 1
    step[s_pos[lone]] = -1
    start = np.zeros(nq + nr, dtype=bool)
    start[0] = True
    took = lone[_served(step, start)[s_pos[lone]]]  # in merged order
    # A FIFO queue: the k-th response served takes the k-th request that arrived.
    rows = via[: len(took)]
    out_id[rows] = rsp_id[took]
    out_op[rows] = rsp_op[took]
    ok[rows] = True
    return out_id, out_op, ok


def _mutations(
    *,
    nr_ents: int,
    ns: np.ndarray[Any, Any],
    prev_ns: np.ndarray[Any, Any],
    hdr: np.ndarray[Any, Any],
    slots: np.ndarray[Any, Any],
    dts: Any,
    key_cols: dict[str, int],
) -> pl.DataFrame:
    """Published, unanswered slots whose bytes changed between consecutive snapshots."""
    n = nr_ents
    if len(hdr) < 2:
        return schema.empty("mutations")
    rp, sp = hdr[:, 0].astype(np.int64), hdr[:, 2].astype(np.int64)
    # indices unanswered in both snapshots: [max(sp_prev, sp), min(rp_prev, rp))
    lo = np.maximum(sp[:-1], sp[1:])
    hi = np.minimum(rp[:-1], rp[1:])
    ok_wrap = ((rp[1:] - rp[:-1]) & 0xFFFFFFFF) < _HALF
    ok_wrap &= ((sp[1:] - sp[:-1]) & 0xFFFFFFFF) < _HALF
    count = np.clip(hi - lo, 0, n) * ok_wrap
    if not count.any():
        return schema.empty("mutations")
    snap, idx = _spans(lo & 0xFFFFFFFF, count)
    a = slots[snap, idx & (n - 1)]
    b = slots[snap + 1, idx & (n - 1)]
    changed = (a != b).any(axis=1)
    rows = []
    for j in np.flatnonzero(changed):
        i = int(snap[j]) + 1
        old = a[j : j + 1].view(dts.request_rw)[0]
        new = b[j : j + 1].view(dts.request_rw)[0]
        names = [f for f in (dts.request_rw.names or ()) if not np.array_equal(old[f], new[f])]
        rows.append(
            {
                **key_cols,
                "ns": int(ns[i]),
                "prev_ns": int(prev_ns[i]),
                "idx": int(idx[j]),
                "fields": ",".join(names),
            }
        )
    return pl.DataFrame(rows, schema=schema.MUTATIONS_SCHEMA) if rows else schema.empty("mutations")


class _RingAccum:
    """The derived parts of one ring, chunk after chunk."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.carry: _Carry | None = None
        self.warnings: list[str] = []

    def add(self, r: _RingInput) -> None:
        part, self.carry = _derive_one(r, self.warnings, self.carry)
        self.parts.append(part)

    def finish(self) -> dict[str, pl.DataFrame]:
        ps = self.parts
        requests = pl.concat([p.requests for p in ps])
        answered = np.concatenate([p.answered for p in ps])
        if answered.any():
            # pair via_response requests with responses whose id matches no full request in flight
            req_id = np.concatenate([p.req_id for p in ps])
            via_id, via_op, via_ok = _assign_via_response(
                answered=answered,
                req_id=req_id,
                rsp_id=np.concatenate([p.rsp_id for p in ps]),
                rsp_op=np.concatenate([p.rsp_op for p in ps]),
                q_snap=np.concatenate([p.q_snap for p in ps]),
                s_snap=np.concatenate([p.s_snap for p in ps]),
            )
            unknown = pl.Series(answered & ~via_ok)
            requests = requests.with_columns(
                pl.Series("id", np.where(answered, via_id, req_id))
                .set(unknown, None)
                .cast(requests.schema["id"]),
                pl.Series(
                    "operation", np.where(answered, via_op, requests["operation"].fill_null(0))
                )
                .set(unknown, None)
                .cast(requests.schema["operation"]),
            )
        gaps = [g for p in ps for g in p.gaps_req] + [g for p in ps for g in p.gaps_rsp]
        anomalies = [a for k in range(4) for p in ps for a in p.anomalies[k]]
        return {
            "requests": requests,
            "responses": pl.concat([p.responses for p in ps]),
            "gaps": pl.DataFrame(gaps, schema=schema.GAPS_SCHEMA) if gaps else schema.empty("gaps"),
            "mutations": pl.concat([p.mutations for p in ps]),
            "anomalies": pl.DataFrame(anomalies, schema=ANOMALIES_SCHEMA)
            if anomalies
            else pl.DataFrame(schema=ANOMALIES_SCHEMA),
        }


class RingStreamsBuilder:
    """Derive ring streams from a capture read chunk by chunk (bounded memory).

    Feed it every chunk of :func:`blktrace_xen.decode.ringcap.iter_ringcap_chunks`
    in order with :meth:`add`, then call :meth:`finish`: the result equals
    :func:`derive_ring_streams` of the whole capture. Each ring carries its last
    snapshot (header and slots) across chunks, and requests seen only through
    their response get their ids when the whole ring has been seen.
    """

    def __init__(self) -> None:
        self._rings: dict[RingKey, _RingAccum] = {}
        self._order: list[RingKey] = []

    def add(self, chunk: RingCapture | RingCaptureChunk) -> None:
        """Derive the snapshots of ``chunk``, continuing each ring where the last chunk ended."""
        params = {
            (row[0], row[1], row[2]): (row[3], row[4])
            for row in chunk.rings.select("domid", "vdev", "queue", "abi", "nr_ents").iter_rows()
        }
        for key in params:
            if key not in self._rings:
                self._rings[key] = _RingAccum()
                self._order.append(key)
        for key, pages in chunk.pages.items():
            if len(pages) == 0:
                continue
            abi, nr_ents = params[key]
            snaps = chunk.snapshots.filter(
                (pl.col("domid") == key[0])
                & (pl.col("vdev") == key[1])
                & (pl.col("queue") == key[2])
            ).sort("snap")
            tsc = snaps["tsc"]
            ring = _RingInput(
                key=key,
                abi=abi,
                nr_ents=nr_ents,
                ns=snaps["ns"].to_numpy(),
                tsc=tsc.fill_null(0).to_numpy().astype(np.uint64),
                tsc_valid=tsc.is_not_null().to_numpy(),
                pages=pages,
            )
            self._rings[key].add(ring)

    def finish(self) -> RingStreams:
        """Requests, responses, gaps, mutations and anomalies of every ring fed so far."""
        warnings: list[str] = []
        parts: dict[str, list[pl.DataFrame]] = {
            k: [] for k in ("requests", "responses", "gaps", "mutations", "anomalies")
        }
        for key in self._order:
            acc = self._rings[key]
            if not acc.parts:
                continue
            warnings.extend(acc.warnings)
            for k, df in acc.finish().items():
                parts[k].append(df)

        def cat(name: str, empty: pl.DataFrame) -> pl.DataFrame:
            return pl.concat(parts[name]) if parts[name] else empty

        return RingStreams(
            requests=cat("requests", schema.empty("requests")),
            responses=cat("responses", schema.empty("responses")),
            gaps=cat("gaps", schema.empty("gaps")),
            mutations=cat("mutations", schema.empty("mutations")),
            anomalies=cat("anomalies", pl.DataFrame(schema=ANOMALIES_SCHEMA)),
            warnings=warnings,
        )


def derive_ring_streams(capture: RingCapture) -> RingStreams:
    """Requests, responses, gaps, mutations and anomalies of every ring in ``capture``."""
    b = RingStreamsBuilder()
    b.add(capture)
    return b.finish()


def derive_ring_streams_chunked(chunks: Iterable[RingCaptureChunk]) -> RingStreams:
    """:func:`derive_ring_streams` of a capture given as its chunks, in order (bounded memory)."""
    b = RingStreamsBuilder()
    for chunk in chunks:
        b.add(chunk)
        del chunk  # let the chunk's file window go before the next is mapped
    return b.finish()
