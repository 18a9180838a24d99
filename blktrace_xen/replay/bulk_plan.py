"""Where a trace can be replayed in bulk: the *steady windows* of a :class:`ReplayInput`.

Most of a long trace is plain traffic: the guest submits reads and writes, the backend
consumes them, the disk completes each one OK and the frontend consumes the responses.
Between two moments where every ring is idle (each request submitted so far has been
answered and its response consumed), such traffic leaves a logic that starts idle,
connected and without hooks in the same idle state, with every intermediate step fixed
by counting: request *k* of a ring goes to ring index ``start + k``, the *j*-th completion
to response index ``start + j``, a consume takes everything published. That is what
:mod:`blktrace_xen.replay.bulk` replays with numpy instead of one event at a time.

This module finds those stretches once per input, independent of the logic: runs of
*segments* (from one all-idle moment to the next) in which every row is plain traffic:

* only submits, backend consumes, completions and frontend consumes;
* a submit is a read or a write with a traced id and extent and 1-11 segments (an id
  reused while still outstanding is allowed: the window then runs the frontend logic's
  own bookkeeping, which picks another);
* a completion answers, with status OK, a request of its own ring submitted and consumed
  before it in the same segment, and is that request's only completion.

What depends on the logic (is each ring connected and idle when the window starts, does
the logic keep Linux's id bookkeeping and no per-I/O hooks, is the ring big enough for
the window's queue depth) is checked when a logic reaches the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import polars as pl

from blktrace_xen.model.disk_deferred import C_AK, C_AP, C_RD, C_VR, WIDTH
from blktrace_xen.model.ring import BLKIF_MAX_SEGMENTS_PER_REQUEST, IO_READ, IO_WRITE
from blktrace_xen.replay.inputs import (
    K_COMPLETE,
    K_CONSUME,
    K_FRONT_CONSUME,
    K_SUBMIT,
    MISSING,
)

if TYPE_CHECKING:
    from blktrace_xen.model.events import RingKey
    from blktrace_xen.replay.inputs import ReplayInput

# A window shorter than this is replayed event by event: setting one up costs about as
# much as replaying a few hundred events.
MIN_WINDOW_ROWS: Final = 512


@dataclass(slots=True)
class RingPart:
    """One ring's share of a window (request indices relative to the ring's req_prod at
    the window's start, response indices to its rsp_prod)."""

    key: RingKey
    max_depth: int  # most requests outstanding at once (submitted, response not consumed)
    req_event: int | None  # request index after the last backend consume, +1 (None: none)
    rsp_event: int | None  # response index after the last frontend consume, +1
    inert: int  # requests outstanding at the start that the trace never answers
    subs: np.ndarray  # the ring's submits (window submit numbers), in ring order
    cmps: np.ndarray  # the ring's completions (window completion numbers), in ring order
    retired_ids: list[int]  # the ids of cmps: the order the frontend retires them
    submitted_ids: list[int]


@dataclass(slots=True)
class Template:
    """A window as numbers relative to its start; :mod:`bulk` adds the logic's bases."""

    start: int
    end: int
    n_sub: int
    reuses_ids: bool  # a traced id is reused while still outstanding (see build_plan)
    records: np.ndarray  # (n, WIDTH) int64; seq column relative, tokens relative
    seq_rows: np.ndarray  # records whose seq column is a seq (not a read's -1)
    token_rows: np.ndarray  # records whose aux column is a token
    ctx_t: np.ndarray  # per apply/verify record: time
    ctx_ring: np.ndarray  # index into parts
    ctx_sub: np.ndarray  # the submit (window number) the context's request came from
    ctx_is_verify: np.ndarray  # bool: verify (aux: response index) or apply (backend)
    ctx_rank: np.ndarray  # verify: completion rank in its ring
    parts: list[RingPart]
    # Per submit (window order) and per completion (window order):
    s_id: np.ndarray
    s_op: np.ndarray
    s_sector: np.ndarray
    s_nr: np.ndarray
    s_nseg: np.ndarray
    c_sub: np.ndarray  # which submit it completes
    c_rank: np.ndarray  # its response's index in its ring, relative
    rd_pos: np.ndarray  # record number (relative) of its apply or backend read
    # In record order: each record's ring (index into parts) and its submit or completion
    # (window number; -1 - completion for a response's record): the order in which a
    # frontend logic's log and retire run.
    rec_part: np.ndarray
    rec_op: np.ndarray


@dataclass(slots=True)
class Plan:
    """The steady windows of an input: ``(start, end, restarts)`` row ranges; a logic not
    ready at ``start`` may join at a later all-idle row in ``restarts``."""

    windows: list[tuple[int, int, list[int]]]
    min_rows: int = MIN_WINDOW_ROWS
    window_rings: list[list[RingKey]] = field(default_factory=list)
    _cols: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _keys: list[RingKey] = field(default_factory=list, repr=False)
    _templates: dict[tuple[int, int], Template] = field(default_factory=dict, repr=False)

    def template(self, start: int, end: int) -> Template:
        """The window ``[start, end)`` as relative numbers. Kept for the next logic when
        ``start`` is where the window starts (a logic joining later gets its own)."""
        tpl = self._templates.get((start, end))
        if tpl is None:
            tpl = _template(self, start, end)
            if any(w[0] == start for w in self.windows):
                self._templates[start, end] = tpl
        return tpl


def _arrays(inp: ReplayInput) -> dict[str, Any]:
    """:attr:`ReplayInput._arrays` from the lists, for an input not made by build_input."""
    n = len(inp.kinds)
    # The input's ring keys are shared objects: code them by identity.
    uniq, ring = np.unique(
        np.fromiter(map(id, inp.rings), dtype=np.uint64, count=n), return_inverse=True
    )
    first = np.full(uniq.size, -1, dtype=np.int64)
    first[ring[::-1]] = np.arange(n)[::-1]
    e = pl.Series(values=inp.cols[4], dtype=pl.UInt64, strict=False)

    def column(j: int) -> pl.Series:
        return pl.Series(values=inp.cols[j], dtype=pl.Int64, strict=False).fill_null(MISSING)

    return {
        "kind": np.fromiter(inp.kinds, dtype=np.int64, count=n),
        "ring": ring.astype(np.int64),
        "keys": [inp.rings[int(i)] for i in first],
        "t": np.fromiter(inp.times, dtype=np.int64, count=n),
        "ref": np.fromiter(inp.refs, dtype=np.int64, count=n),
        **{name: column(j).to_numpy() for j, name in enumerate("abcd")},
        "e": e.fill_null(0).to_numpy(),
        "e_ok": e.is_not_null().to_numpy(),
    }


def build_plan(inp: ReplayInput, min_rows: int = MIN_WINDOW_ROWS) -> Plan:
    """Find the steady windows of ``inp`` (see the module doc) of ``min_rows`` rows or more."""
    n = len(inp.kinds)
    empty = Plan(windows=[], min_rows=min_rows)
    if n < min_rows:
        return empty
    arr = inp._arrays if inp._arrays is not None else _arrays(inp)
    kind = arr["kind"]
    is_sub = kind == K_SUBMIT
    is_con = kind == K_CONSUME
    is_cmp = kind == K_COMPLETE
    is_fc = kind == K_FRONT_CONSUME
    plain = is_sub | is_con | is_cmp | is_fc
    if int(plain.sum()) < min_rows:
        return empty
    ring, keys, ref = arr["ring"], arr["keys"], arr["ref"]
    a, b, c, d = arr["a"], arr["b"], arr["c"], arr["d"]
    # Ids at or past 2**63 (never in a real trace) take the event-by-event path.
    e_ok = arr["e_ok"] & (arr["e"] < np.uint64(1 << 63))
    e = arr["e"].astype(np.int64)

    # A request the trace never answers (lost, or the trace ends first) stays outstanding
    # for good: a ring counts as idle when all but those are answered, and a window
    # starting after one keeps it in flight, untouched.
    sub_rows = np.flatnonzero(is_sub)
    cmp_rows = np.flatnonzero(is_cmp)
    n_ref = int(max(ref.max(initial=-1), 0)) + 1
    sub_refs = ref[sub_rows]
    cmp_refs = ref[cmp_rows]
    good_sub_ref = (sub_refs >= 0) & (sub_refs < n_ref)
    good_cmp_ref = (cmp_refs >= 0) & (cmp_refs < n_ref)
    n_sub_of = np.bincount(sub_refs[good_sub_ref], minlength=n_ref)
    n_cmp_of = np.bincount(cmp_refs[good_cmp_ref], minlength=n_ref)
    leaked = np.zeros(n, dtype=bool)
    leaked[sub_rows] = good_sub_ref & (n_cmp_of[np.where(good_sub_ref, sub_refs, 0)] == 0)

    # Per-ring running counts, on the rows sorted by ring (stable: time order kept); one
    # ring (the common case) is sorted already.
    order = None if int(ring.min()) == int(ring.max()) else np.argsort(ring, kind="stable")

    def srt(x: np.ndarray) -> np.ndarray:
        return x if order is None else x[order]

    def unsort(x: np.ndarray) -> np.ndarray:
        if order is None:
            return x
        out = np.empty_like(x)
        out[order] = x
        return out

    g = srt(ring)
    first = np.r_[True, g[1:] != g[:-1]]
    sub_s, cmp_s = srt(is_sub), srt(is_cmp)
    s_cum = np.cumsum(sub_s)
    c_cum = np.cumsum(cmp_s)
    s_base = np.maximum.accumulate(np.where(first, s_cum - sub_s, 0))
    c_base = np.maximum.accumulate(np.where(first, c_cum - cmp_s, 0))

    def last_value(at: np.ndarray, cum: np.ndarray, base: np.ndarray) -> np.ndarray:
        """``cum`` at the ring's last row in ``at`` up to each row (base before any)."""
        at_s = srt(at)
        return np.maximum.accumulate(np.where(at_s | first, np.where(at_s, cum, base), 0))

    consumed = last_value(is_con, s_cum, s_base) - s_base  # requests consumed, per ring
    retired = last_value(is_fc, c_cum, c_base) - c_base  # responses consumed
    submitted = s_cum - s_base
    rank = submitted - 1  # a submit's number in its ring
    leak_s = srt(leaked)
    l_cum = np.cumsum(leak_s)
    lost = l_cum - np.maximum.accumulate(np.where(first, l_cum - leak_s, 0))  # per ring

    rank_u, consumed_u, retired_u = unsort(rank), unsort(consumed), unsort(retired)

    # Idle after a row: for every ring, everything submitted has been consumed back, but
    # for the requests never answered.
    busy = (submitted - lost != retired).astype(np.int64)
    flip = busy - np.where(first, 0, np.r_[0, busy[:-1]])
    idle = np.cumsum(unsort(flip)) == 0
    seg = np.r_[0, np.cumsum(idle)[:-1]]

    ok = plain.copy()
    sub_row_of = np.full(n_ref, -1, dtype=np.int64)
    sub_row_of[sub_refs[good_sub_ref]] = sub_rows[good_sub_ref]
    cmp_row_of = np.full(n_ref, -1, dtype=np.int64)
    cmp_row_of[cmp_refs[good_cmp_ref]] = cmp_rows[good_cmp_ref]

    # Submits: a read or write, traced id and extent, 1..11 segments, its one completion
    # in the same segment.
    sr = np.where(good_sub_ref, sub_refs, 0)
    op = a[sub_rows]
    nseg = d[sub_rows]
    s_ok = good_sub_ref & ((op == 0) | (op == 1)) & e_ok[sub_rows]
    s_ok &= (b[sub_rows] >= 0) & (c[sub_rows] >= 0)  # (a guard: build_input gives 0+0)
    s_ok &= (nseg >= 1) & (nseg <= BLKIF_MAX_SEGMENTS_PER_REQUEST)
    s_ok &= (n_sub_of[sr] == 1) & (n_cmp_of[sr] == 1)
    s_cmp = cmp_row_of[sr]
    s_ok &= (s_cmp >= 0) & (seg[np.maximum(s_cmp, 0)] == seg[sub_rows])
    ok[sub_rows] = s_ok

    # Completions: status OK, of a request of its ring already consumed.
    cr = np.where(good_cmp_ref, cmp_refs, 0)
    c_sub = sub_row_of[cr]
    c_subc = np.maximum(c_sub, 0)
    c_ok = good_cmp_ref & (c_sub >= 0) & (n_sub_of[cr] == 1) & (n_cmp_of[cr] == 1)
    c_ok &= (b[cmp_rows] == 0) & (ring[c_subc] == ring[cmp_rows])
    # (Needed since a request never answered does not keep a ring busy: a completion of a
    # request of an earlier segment would otherwise pass for plain.)
    c_ok &= seg[c_subc] == seg[cmp_rows]
    c_ok &= rank_u[c_subc] < consumed_u[cmp_rows]
    ok[cmp_rows] = c_ok

    # The frontend consume that retires each completion: its ring's next one.
    fc_sorted = np.where(srt(is_fc), np.arange(n), n)
    nxt = np.minimum.accumulate(fc_sorted[::-1])[::-1]  # sorted position of next fc
    pos_of = unsort(np.arange(n))
    nxt_c = nxt[pos_of[cmp_rows]]
    nxt_at = np.minimum(nxt_c, n - 1)
    retire = np.where(
        (nxt_c < n) & (g[nxt_at] == ring[cmp_rows]),
        nxt_at if order is None else order[nxt_at],
        n,
    )
    retire_of = np.full(n_ref, n, dtype=np.int64)
    retire_of[cr[c_ok]] = retire[c_ok]

    # An id reused on a ring only after the frontend consumed its previous answer.
    ids = e[sub_rows]
    by_id = np.lexsort((sub_rows, ids, ring[sub_rows]))
    same = (ring[sub_rows][by_id][1:] == ring[sub_rows][by_id][:-1]) & (
        ids[by_id][1:] == ids[by_id][:-1]
    )
    prev_retire = retire_of[sr[by_id][:-1]]
    # (Traced ids reused earlier are plain too: Linux's bookkeeping then hands out another
    # id, so a window with one runs the frontend logic's own log and retire.)
    reused = np.zeros(n, dtype=bool)
    reused[sub_rows[by_id][1:][same & (prev_retire >= sub_rows[by_id][1:])]] = True

    # Segments with a bad row, or the last one if it does not end idle, are out.
    n_seg = int(seg[-1]) + 1
    bad_seg = np.bincount(seg, weights=~ok, minlength=n_seg) > 0
    if not idle[-1]:
        bad_seg[-1] = True
    seg_end = np.flatnonzero(idle) + 1  # row after each segment's last
    seg_start = np.r_[0, seg_end[:-1]][: seg_end.size]
    windows: list[tuple[int, int, list[int]]] = []
    good = ~bad_seg[: seg_end.size]
    # Runs of good segments.
    edges = np.diff(np.r_[0, good.astype(np.int8), 0])
    for lo, hi in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        start, end = int(seg_start[lo]), int(seg_end[hi - 1])
        if end - start >= min_rows:
            windows.append((start, end, [int(x) for x in seg_end[lo : hi - 1]]))
    plan = Plan(windows=windows, min_rows=min_rows)
    plan.window_rings = [
        [keys[r] for r in np.unique(ring[start:end]).tolist()] for start, end, _ in windows
    ]
    if windows:
        plan._keys = keys
        plan._cols = {
            "kind": kind,
            "ring": ring,
            "t": arr["t"],
            "op": a,
            "sector": b,
            "nr": c,
            "nseg": d,
            "id": e,
            "ref": ref,
            "sub_row_of": sub_row_of,
            "submitted": unsort(submitted),
            "consumed": consumed_u,
            "retired": retired_u,
        }
        plan._cols["retire"] = np.full(n, n, dtype=np.int64)
        plan._cols["retire"][cmp_rows] = retire
        plan._cols["reused"] = reused
    return plan


def _template(plan: Plan, start: int, end: int) -> Template:
    cols = plan._cols
    kind = cols["kind"][start:end]
    ring = cols["ring"][start:end]
    sub = np.flatnonzero(kind == K_SUBMIT) + start
    cmp = np.flatnonzero(kind == K_COMPLETE) + start
    n_sub = sub.size
    # Submits in window order: their seq is the logic's next seq + this number.
    s_op, s_sector, s_nr = cols["op"][sub], cols["sector"][sub], cols["nr"][sub]
    s_id, s_nseg, s_ring = cols["id"][sub], cols["nseg"][sub], cols["ring"][sub]
    # Completions: which submit (window number), retired by which frontend consume.
    c_sub = np.searchsorted(sub, cols["sub_row_of"][cols["ref"][cmp]])
    c_ring = cols["ring"][cmp]
    c_op, c_sector, c_nr, c_id = s_op[c_sub], s_sector[c_sub], s_nr[c_sub], s_id[c_sub]
    c_retire = cols["retire"][cmp]
    # Completion rank in its ring, within the window.
    c_order = np.lexsort((cmp, c_ring))
    c_rank = np.empty(cmp.size, dtype=np.int64)
    rg = c_ring[c_order]
    grp_first = np.r_[True, rg[1:] != rg[:-1]] if rg.size else rg.astype(bool)
    run_start = np.maximum.accumulate(np.where(grp_first, np.arange(rg.size), 0))
    c_rank[c_order] = np.arange(rg.size) - run_start

    # Records: a submit's and a completion's at their row, a response's at the consume
    # that took it, in the ring's response order.
    is_w_s = s_op == 1
    is_w_c = c_op == 1
    rec_row = np.r_[sub, cmp, c_retire]
    rec_sub = np.r_[np.zeros(n_sub + cmp.size, dtype=np.int64), c_rank]
    rec_code = np.r_[
        np.where(is_w_s, IO_WRITE, IO_READ),
        np.where(is_w_c, C_AP, C_RD),
        np.where(is_w_c, C_AK, C_VR),
    ]
    rec_seq = np.r_[np.arange(n_sub), np.where(is_w_c, c_sub, -1), c_sub]
    rec_sector = np.r_[s_sector, c_sector, np.where(is_w_c, 0, c_sector)]
    rec_nr = np.r_[s_nr, c_nr, np.where(is_w_c, 0, c_nr)]
    # Which completion a record belongs to (-1: a submit's): for tokens and contexts.
    rec_cmp = np.r_[np.full(n_sub, -1, dtype=np.int64), np.arange(cmp.size), np.arange(cmp.size)]
    rord = np.lexsort((rec_sub, rec_row))
    records = np.empty((rec_row.size, WIDTH), dtype=np.int64)
    records[:, 0] = rec_code[rord]
    records[:, 1] = rec_seq[rord]
    records[:, 2] = rec_sector[rord]
    records[:, 3] = rec_nr[rord]
    records[:, 4] = 0
    code = records[:, 0]
    # A read's token is its backend read's record number.
    where = np.empty(rord.size, dtype=np.int64)
    where[rord] = np.arange(rord.size)
    rd_pos = where[n_sub : n_sub + cmp.size]  # record number of each completion's record
    is_vr = code == C_VR
    records[is_vr, 4] = rd_pos[rec_cmp[rord][is_vr]]
    has_ctx = (code == C_AP) | is_vr
    ctx_cmp = rec_cmp[rord][has_ctx]
    ctx_vr = is_vr[has_ctx]
    ctx_row = rec_row[rord][has_ctx]

    parts: list[RingPart] = []
    ring_ids = np.unique(ring)
    part_of = np.full(int(ring_ids.max()) + 1, -1, dtype=np.int64)
    part_of[ring_ids] = np.arange(ring_ids.size)
    for r in ring_ids.tolist():
        rows = np.flatnonzero(ring == r) + start
        k = cols["kind"][rows]
        # The ring is idle at the window's start: as many submitted as consumed back.
        # The ring is idle at the window's start: as many submitted as consumed back, but
        # for ``inert`` requests never answered.
        base = int(cols["submitted"][rows[0]]) - int(k[0] == K_SUBMIT)
        base_rsp = int(cols["retired"][rows[0]])
        mine = np.flatnonzero(s_ring == r)
        cm = np.flatnonzero(c_ring == r)
        cm = cm[np.argsort(c_rank[cm])]
        depth = cols["submitted"][sub[mine]] - cols["retired"][sub[mine]]
        cons_rows = rows[k == K_CONSUME]
        fc_rows = rows[k == K_FRONT_CONSUME]
        parts.append(
            RingPart(
                key=plan._keys[r],
                max_depth=int(depth.max(initial=0)),
                req_event=(
                    int(cols["consumed"][cons_rows[-1]]) - base + 1 if cons_rows.size else None
                ),
                rsp_event=(
                    int(cols["retired"][fc_rows[-1]]) - base_rsp + 1 if fc_rows.size else None
                ),
                inert=base - base_rsp,
                subs=mine,
                cmps=cm,
                retired_ids=c_id[cm].tolist(),
                submitted_ids=s_id[mine].tolist(),
            )
        )
    return Template(
        start=start,
        end=end,
        n_sub=n_sub,
        reuses_ids=bool(cols["reused"][start:end].any()),
        records=records,
        seq_rows=np.flatnonzero(code != C_RD),
        token_rows=np.flatnonzero(is_vr),
        ctx_t=cols["t"][ctx_row],
        ctx_ring=part_of[c_ring[ctx_cmp]],
        ctx_sub=c_sub[ctx_cmp],
        ctx_is_verify=ctx_vr,
        ctx_rank=c_rank[ctx_cmp],
        parts=parts,
        s_id=s_id,
        s_op=s_op,
        s_sector=s_sector,
        s_nr=s_nr,
        s_nseg=s_nseg,
        c_sub=c_sub,
        c_rank=c_rank,
        rd_pos=rd_pos,
        rec_part=part_of[np.r_[s_ring, c_ring, c_ring][rord]],
        rec_op=np.r_[np.arange(n_sub), np.full(cmp.size, n_sub), -1 - np.arange(cmp.size)][rord],
    )


__all__ = ["MIN_WINDOW_ROWS", "Plan", "RingPart", "Template", "build_plan"]
