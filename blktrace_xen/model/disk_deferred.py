"""The disk-content oracle in deferred mode: log every input now, judge them all at the end.

:class:`~blktrace_xen.model.disk.DiskOracle` answers each input at once, which costs a
dozen dict operations per I/O: more than the rest of the model together in a replay. A
:class:`DeferredDiskOracle` only appends each input to a flat log of ints (about 0.1 µs)
and judges the whole log at :meth:`DeferredDiskOracle.finish`, with numpy: the same
``misplaced-write``, ``duplicated-write``, ``stale-read`` and ``lost-write`` problems, as the
same :class:`~blktrace_xen.model.events.Violation` records, put at the places of the
model's violation list where the step mode would have appended them.

What changes is *when* they appear: only at ``finish()``. A caller that reads violations
step by step (the synthesizer) keeps the step mode, the default; replay, which reads them
at the end, opts in with ``Model(disk_mode="deferred")``.

Judging in bulk relies on facts that hold for nearly every trace, checked first: every
extent is 4 KiB aligned (so a block's 8 sectors always agree), each write is acknowledged
or failed at most once and after it was issued, and a read's response comes back to the
request that asked for that extent. Where one of them fails, or a step-mode answer is
needed before the end (:meth:`DeferredDiskOracle.holds`, at a resume that drops writes),
the log is replayed through the step oracle instead: slower, never different.

Log records: 5 ints each, ``(code, seq, sector, nr_sectors, aux)``; ``aux`` is a read
verification's token (below), else 0. Apply and verify records also append their
violation context to ``ctx``. A read's :data:`~blktrace_xen.model.disk.Data` is a *token*:
the 1-tuple ``(record number of the read,)``, meaningful only to the oracle that made it.

The records before :attr:`DeferredDiskOracle.log` are kept as numpy chunks (``base`` of
them): replay's bulk windows (:mod:`blktrace_xen.replay.bulk`) add theirs as arrays, with
their contexts built only if a violation needs one, so a record number is
``base + len(log) // WIDTH``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

import numpy as np

from blktrace_xen.model.disk import BLOCK, BLOCK_SHIFT, Data, DiskOracle, DiskProblem, DiskReport
from blktrace_xen.model.events import RingKey, Violation
from blktrace_xen.model.ring import IO_READ, IO_WRITE

WIDTH: Final = 5
C_IR: Final = IO_READ  # issue read  (the frontend logs ``(io_kind, ...)`` as is)
C_IW: Final = IO_WRITE  # issue write
C_AP: Final = 3  # a write reached the media                      + ctx
C_RD: Final = 4  # the backend read the media (record no. = token)
C_AK: Final = 5  # the guest saw the write complete OK
C_FL: Final = 6  # the write failed or was dropped
C_VR: Final = 7  # the guest got the read back (aux: token, -1: no data)  + ctx

_NONE: Final = -(1 << 62)  # "a write was pending": either version is correct
MAX_BULK_ROWS: Final = 50_000_000  # block rows the numpy pass may expand to

Ctx = tuple[int, RingKey, int, int, int]
"""Where a problem becomes a violation: (t_ns, ring, request id, backend instance for an
apply / ring index for a verify, len(violations) when it was logged)."""


class _Found(NamedTuple):
    at: int  # len(violations) when the input was logged: where the step mode put it
    record: int  # log record number: order among problems logged at the same place
    violation: Violation


def _apply_violation(c: Ctx, p: DiskProblem) -> Violation:
    # As Backend._wrote -> Backend.violate builds it (evidence order included).
    return Violation(
        t_ns=c[0],
        ring=c[1],
        invariant=p.invariant,
        id=c[2],
        idx=None,
        message=p.message,
        evidence={"seq": p.seq, **p.evidence, "backend": c[3]},
    )


def _verify_violation(c: Ctx, p: DiskProblem) -> Violation:
    # As Frontend.consume -> Frontend.violate builds it.
    return Violation(
        t_ns=c[0],
        ring=c[1],
        invariant=p.invariant,
        id=c[2],
        idx=c[3],
        message=p.message,
        evidence={"seq": p.seq, **p.evidence, "side": "front"},
    )


class DeferredDiskOracle(DiskOracle):
    """A :class:`DiskOracle` that logs its inputs and judges them at :meth:`finish`.

    The model's hot paths append to :attr:`log` / :attr:`ctx` themselves; the methods
    below do the same for the rare callers. The inherited state is the step oracle's,
    filled only when the log has to be replayed (see the module doc).
    """

    __slots__ = (
        "_counts",
        "_ctx_upto",
        "_found",
        "_tokens",
        "_upto",
        "base",
        "chunks",
        "ctx",
        "lazy_ctx",
        "log",
        "sealable",
    )

    def __init__(self) -> None:
        super().__init__()
        self.log: list[int] = []  # records base, base + 1, ...: 5 ints each
        self.base = 0  # records held in chunks
        self.chunks: list[np.ndarray] = []  # (n, WIDTH) int64 arrays: records 0 .. base - 1
        self.sealable = True  # False once the log held an int no int64 can
        # None: built on demand by the lazy_ctx entry (first rank, end rank, builder)
        # that covers its rank (see add_chunk).
        self.ctx: list[Ctx | None] = []
        self.lazy_ctx: list[tuple[int, int, Callable[[int], Ctx]]] = []
        self._upto = 0  # records replayed through the step oracle so far
        self._ctx_upto = 0
        self._found: list[_Found] = []
        self._tokens: dict[int, Data] = {}
        self._counts: tuple[int, int, int, int] | None = None

    # ------------------------------------------------------------------- inputs

    def issue_write(self, seq: int, sector: int, nr_sectors: int) -> None:
        self.log += (C_IW, seq, sector, nr_sectors, 0)

    def issue_read(self, seq: int, sector: int, nr_sectors: int) -> None:
        self.log += (C_IR, seq, sector, nr_sectors, 0)

    def read(self, sector: int, nr_sectors: int) -> Data:
        log = self.log
        token = (self.base + len(log) // WIDTH,)
        log += (C_RD, -1, sector, nr_sectors, 0)
        return token

    def ack_write(self, seq: int) -> None:
        self.log += (C_AK, seq, 0, 0, 0)

    def fail_write(self, seq: int) -> None:
        self.log += (C_FL, seq, 0, 0, 0)

    def log_apply(self, ctx: Ctx, seq: int, sector: int, nr_sectors: int) -> None:
        self.log += (C_AP, seq, sector, nr_sectors, 0)
        self.ctx.append(ctx)

    def log_verify(
        self, ctx: Ctx, seq: int, sector: int, nr_sectors: int, data: Data | None
    ) -> None:
        self.log += (C_VR, seq, sector, nr_sectors, -1 if data is None else data[0])
        self.ctx.append(ctx)

    def apply_write(self, seq: int, sector: int, nr_sectors: int) -> list[DiskProblem]:
        raise NotImplementedError("deferred mode: the model logs applies with log_apply()")

    def verify_read(
        self, seq: int, sector: int, nr_sectors: int, data: Data | None
    ) -> list[DiskProblem]:
        raise NotImplementedError("deferred mode: the model logs reads back with log_verify()")

    # ------------------------------------------------------------------ chunks

    def seal(self) -> bool:
        """Move :attr:`log` into a numpy chunk (False, and nothing moved, where it holds
        an int no int64 can: the log then stays a list for good)."""
        log = self.log
        if not log:
            return True
        if not self.sealable:
            return False
        try:
            flat = np.fromiter(log, dtype=np.int64, count=len(log))
        except OverflowError:
            self.sealable = False
            return False
        self.chunks.append(flat.reshape(-1, WIDTH))
        self.base += len(log) // WIDTH
        del log[:]  # in place: the hot paths hold this very list
        return True

    def add_chunk(self, records: np.ndarray, n_ctx: int, ctx_of: Callable[[int], Ctx]) -> bool:
        """Append ``records`` ((n, WIDTH) int64) after everything logged so far, with the
        contexts of its ``n_ctx`` apply and verify records built on demand by
        ``ctx_of(k)`` (k-th of them). False, and nothing added, where the log cannot be
        sealed."""
        if not self.seal():
            return False
        self.chunks.append(records)
        self.base += len(records)
        ctx = self.ctx
        if n_ctx:
            self.lazy_ctx.append((len(ctx), len(ctx) + n_ctx, ctx_of))
            ctx += [None] * n_ctx
        return True

    def records(self) -> list[int]:
        """Every record so far, flat (slow: for the step replay)."""
        out: list[int] = []
        for chunk in self.chunks:
            out += chunk.ravel().tolist()
        return out + self.log

    def context(self, k: int) -> Ctx:
        """The context of the ``k``-th apply or verify record."""
        c = self.ctx[k]
        if c is None:
            for first, end, build in self.lazy_ctx:
                if first <= k < end:
                    c = self.ctx[k] = build(k - first)
                    break
            else:  # pragma: no cover - add_chunk registers every placeholder
                raise AssertionError(f"no context for record {k}")
        return c

    # ------------------------------------------------------------ step replay

    def _catch_up(self) -> None:
        """Replay the records not yet replayed through the step oracle."""
        log = self.records() if self.chunks else self.log
        found = self._found
        tokens = self._tokens
        k = self._ctx_upto
        context = self.context
        for i in range(self._upto, len(log) // WIDTH):
            code, seq, sector, nr, aux = log[i * WIDTH : (i + 1) * WIDTH]
            if code == C_IW:
                DiskOracle.issue_write(self, seq, sector, nr)
            elif code == C_IR:
                DiskOracle.issue_read(self, seq, sector, nr)
            elif code == C_AP:
                c = context(k)
                k += 1
                for p in DiskOracle.apply_write(self, seq, sector, nr):
                    found.append(_Found(c[4], i, _apply_violation(c, p)))
            elif code == C_RD:
                tokens[i] = DiskOracle.read(self, sector, nr)
            elif code == C_AK:
                DiskOracle.ack_write(self, seq)
            elif code == C_FL:
                DiskOracle.fail_write(self, seq)
            else:
                c = context(k)
                k += 1
                data = tokens.get(aux) if aux >= 0 else None
                for p in DiskOracle.verify_read(self, seq, sector, nr, data):
                    found.append(_Found(c[4], i, _verify_violation(c, p)))
        self._upto = len(log) // WIDTH
        self._ctx_upto = k

    def holds(self, seq: int, sector: int, nr_sectors: int) -> bool:
        self._catch_up()
        return DiskOracle.holds(self, seq, sector, nr_sectors)

    @property
    def media(self) -> dict[int, int]:
        self._catch_up()
        return self.sectors(self.media_b, self.media_s)

    @property
    def acked(self) -> dict[int, int]:
        self._catch_up()
        return self.sectors(self.acked_b, self.acked_s)

    def final_check(self) -> list[DiskProblem]:
        self._catch_up()
        return DiskOracle.final_check(self)

    def report(self, problems: list[DiskProblem]) -> DiskReport:
        if self._counts is None:
            return DiskOracle.report(self, problems)
        sectors, applied, acked, reads = self._counts
        return DiskReport(
            sectors_written=sectors,
            writes_applied=applied,
            writes_acked=acked,
            reads_verified=reads,
            problems=problems,
        )

    # ------------------------------------------------------------------ judging

    def _all_records(self) -> np.ndarray | None:
        """Every record as one (n, WIDTH) int64 array; None where one does not fit."""
        log = self.log
        try:
            # fromiter converts a list of ints about a quarter faster than np.array.
            tail = np.fromiter(log, dtype=np.int64, count=len(log)).reshape(-1, WIDTH)
        except OverflowError:
            return None
        if not self.chunks:
            return tail
        return np.concatenate([*self.chunks, tail])

    def finish(self, violations: list[Violation]) -> list[DiskProblem]:
        """Judge the log: put the run's problems into ``violations`` (in place, where the
        step mode would have appended them) and return the end-of-run problems, as
        :meth:`DiskOracle.final_check` does."""
        bulk = None if self._upto else _judge_bulk(self._all_records(), self.context)
        if bulk is None:
            final = self.final_check()
            found = self._found
        else:
            found, final, self._counts = bulk
        if found:
            found.sort(key=lambda f: (f.at, f.record))
            merged: list[Violation] = []
            j = 0
            for f in found:
                merged.extend(violations[j : f.at])
                j = max(j, f.at)
                merged.append(f.violation)
            merged.extend(violations[j:])
            violations[:] = merged
        return final


# ------------------------------------------------------------------------ numpy pass


def _expand(sector: np.ndarray, nr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block rows of aligned extents: (which extent, block number), in extent order."""
    nb = nr >> BLOCK_SHIFT
    owner = np.repeat(np.arange(nb.size), nb)
    first = np.cumsum(nb) - nb
    block = (sector >> BLOCK_SHIFT)[owner] + (np.arange(owner.size) - first[owner])
    return owner, block


class _Timeline:
    """One kind of block row, sorted by key = (block, position): what held when.

    Lookups are fastest with the queries sorted by key (numpy's binary search starts from
    the previous answer), so callers sort their query rows by block first."""

    def __init__(self, key: np.ndarray, val: np.ndarray, span: int):
        order = np.argsort(key)  # keys are unique: (block, record) pairs
        self.key = key[order]
        self.val = val[order]
        self.span = span

    def last_before(self, qkey: np.ndarray, default: int = -1) -> np.ndarray:
        """Value of the last row on the query's block before its position."""
        if not self.key.size:
            return np.full(qkey.shape, default, dtype=np.int64)
        i = np.searchsorted(self.key, qkey) - 1
        ic = np.maximum(i, 0)
        ok = (i >= 0) & (self.key[ic] // self.span == qkey // self.span)
        return np.where(ok, self.val[ic], default)

    def running_total(self) -> _Timeline:
        """The same rows with each value replaced by the block's sum up to that row."""
        total = np.cumsum(self.val)
        if total.size:
            block = self.key // self.span
            start = np.r_[True, block[1:] != block[:-1]]
            base = (total - self.val)[start]
            total -= np.repeat(base, np.diff(np.r_[np.flatnonzero(start), total.size]))
        out = _Timeline.__new__(_Timeline)
        out.key, out.val, out.span = self.key, total, self.span
        return out

    def last(self) -> tuple[np.ndarray, np.ndarray]:
        """(blocks, value of the block's last row), by block."""
        block = self.key // self.span
        end = np.r_[block[1:] != block[:-1], True] if block.size else block.astype(bool)
        return block[end], self.val[end]


def _unique(values: np.ndarray, size: int) -> bool:
    """Are ``values`` (all in ``0..size-1``) distinct?"""
    return not values.size or int(np.bincount(values, minlength=size).max()) <= 1


def _judge_bulk(
    records: np.ndarray | None, context: Callable[[int], Ctx]
) -> tuple[list[_Found], list[DiskProblem], tuple[int, int, int, int]] | None:
    """The log judged with numpy, or None where the bulk pass's assumptions fail."""
    if records is None:
        return None
    n_rec = len(records)
    if n_rec == 0:
        return [], [], (0, 0, 0, 0)
    code, seq, sector, nr, aux = records.T.copy()
    # (Ack and fail records carry sector 0 and 0 sectors, so they pass as they are.)
    if ((sector | nr) & (BLOCK - 1)).any() or (sector < 0).any():
        return None
    if (nr < 0).any() or int(seq.min()) < -1:
        return None
    n_rows = int((nr >> BLOCK_SHIFT).sum())
    if n_rows > MAX_BULK_ROWS:
        return None
    n_seq = int(seq.max()) + 2  # arrays indexed by seq + 1 (seq -1: a garbage request)
    never = n_rec  # "no such record": after every position

    def pos_of(which: np.ndarray) -> np.ndarray:
        """Position of the record of each seq among ``which`` (distinct seqs)."""
        out = np.full(n_seq, never, dtype=np.int64)
        out[seq[which] + 1] = which
        return out

    iw = np.flatnonzero(code == C_IW)
    ir = np.flatnonzero(code == C_IR)
    if not (_unique(seq[iw] + 1, n_seq) and _unique(seq[ir] + 1, n_seq)):
        return None
    iw_pos = pos_of(iw)
    ir_pos = pos_of(ir)
    i_sector = np.zeros(n_seq, dtype=np.int64)
    i_nr = np.zeros(n_seq, dtype=np.int64)
    i_sector[seq[iw] + 1] = sector[iw]
    i_nr[seq[iw] + 1] = nr[iw]

    ak = np.flatnonzero(code == C_AK)
    fl = np.flatnonzero(code == C_FL)
    if (iw_pos[seq[ak] + 1] > ak).any():
        return None  # an ack of a write never issued: the step oracle raises there
    fl = fl[iw_pos[seq[fl] + 1] < fl]  # fail_write ignores a seq it never saw issued
    dec = np.concatenate([ak, fl])
    if not _unique(seq[dec] + 1, n_seq):
        return None  # answered twice: the pending counts would clamp at 0
    ak_pos = pos_of(ak)

    ap = np.flatnonzero(code == C_AP)
    vr = np.flatnonzero(code == C_VR)
    # The read verifications that compare: the first after the read's issue (it pops the
    # expectation) that carries data.
    vseq = seq[vr] + 1
    after_issue = ir_pos[vseq] < vr
    first_vr = np.full(n_seq, never, dtype=np.int64)
    np.minimum.at(first_vr, vseq[after_issue], vr[after_issue])
    checked = vr[(first_vr[vseq] == vr) & (aux[vr] >= 0)]
    c_ir = ir_pos[seq[checked] + 1]
    c_rd = aux[checked]
    if (c_rd >= n_rec).any() or (code[c_rd] != C_RD).any():
        return None
    same = (sector[c_ir] == sector[checked]) & (nr[c_ir] == nr[checked])
    same &= (sector[c_rd] == sector[checked]) & (nr[c_rd] == nr[checked])
    if not same.all():
        return None  # a response that answered another request's extent

    # Block rows of every kind. Keys are block * span + position; blocks are renumbered
    # densely only when that would not fit in an int64.
    w_own, w_blk = _expand(sector[iw], nr[iw])
    a_own, a_blk = _expand(sector[ap], nr[ap])
    d_own, d_blk = _expand(i_sector[seq[dec] + 1], i_nr[seq[dec] + 1])
    v_own, v_blk = _expand(sector[checked], nr[checked])
    span = n_rec + 1
    top = max((int(b.max()) for b in (w_blk, a_blk, d_blk, v_blk) if b.size), default=0)
    if (top + 1) * span >= 1 << 62:
        uniq, inv = np.unique(np.concatenate([w_blk, a_blk, d_blk, v_blk]), return_inverse=True)
        cut = np.cumsum([w_blk.size, a_blk.size, d_blk.size])
        w_blk, a_blk, d_blk, v_blk = np.split(inv.astype(np.int64), cut)
    else:
        uniq = None
    w_pos, a_pos, d_pos = iw[w_own], ap[a_own], dec[d_own]
    w_key = w_blk * span + w_pos
    d_key = d_blk * span + d_pos
    issued = _Timeline(w_key, seq[iw][w_own], span)
    media = _Timeline(a_blk * span + a_pos, seq[ap][a_own], span)
    is_ack = d_own < ak.size
    acked = _Timeline(d_key[is_ack], seq[dec][d_own][is_ack], span)
    pending = _Timeline(
        np.concatenate([w_key, d_key]),
        np.concatenate([np.ones(w_key.size, np.int64), np.full(d_key.size, -1, np.int64)]),
        span,
    ).running_total()

    def first_sector(bid: np.ndarray) -> np.ndarray:
        return (bid if uniq is None else uniq[bid]) << BLOCK_SHIFT

    with_ctx: list[np.ndarray] = []  # records that logged a ctx, found on first use

    def ctx_of(i: int) -> Ctx:
        if not with_ctx:
            with_ctx.append(np.flatnonzero((code == C_AP) | (code == C_VR)))
        return context(int(np.searchsorted(with_ctx[0], i)))

    found: list[_Found] = []

    # Applies: misplaced (issued for another extent), duplicated (acked before).
    a_seq = seq[ap] + 1
    misplaced = (iw_pos[a_seq] < ap) & ((i_sector[a_seq] != sector[ap]) | (i_nr[a_seq] != nr[ap]))
    duplicated = ak_pos[a_seq] < ap
    for k in np.flatnonzero(misplaced | duplicated).tolist():
        i = int(ap[k])
        s, sec, n = int(seq[i]), int(sector[i]), int(nr[i])
        c = ctx_of(i)
        if misplaced[k]:
            w0, w1 = int(i_sector[s + 1]), int(i_nr[s + 1])
            p = DiskProblem(
                "misplaced-write",
                s,
                sec,
                f"write #{s} issued for sectors {w0}+{w1} reached sectors {sec}+{n}",
                {"intended_sector": w0, "intended_nr_sectors": w1},
            )
            found.append(_Found(c[4], i, _apply_violation(c, p)))
        if duplicated[k]:
            p = DiskProblem(
                "duplicated-write",
                s,
                sec,
                f"write #{s} reached the disk again after the guest saw it complete",
            )
            found.append(_Found(c[4], i, _apply_violation(c, p)))

    # Reads: per block, what the guest got (media when the backend read) against what it
    # must get (the acknowledged write when issued, unless one was pending), unless a
    # write to the block was issued after the read. Rows sorted by block for the lookups.
    row = np.argsort(v_blk * span + checked[v_own])
    v_bid = v_blk[row]
    v_rec = checked[v_own[row]]
    base = v_bid * span
    at_issue = base + c_ir[v_own[row]]
    want = acked.last_before(at_issue)
    want[pending.last_before(at_issue, 0) > 0] = _NONE
    got = media.last_before(base + c_rd[v_own[row]])
    newer = issued.last_before(base + v_rec) > seq[v_rec]
    bad = np.flatnonzero((want != _NONE) & ~newer & (got != want))
    if bad.size:
        # The first bad block of each read, in the read's own block order.
        bad = bad[np.argsort(row[bad])]
        rec_of = v_rec[bad]
        for r in bad[np.r_[True, rec_of[1:] != rec_of[:-1]]].tolist():
            i = int(v_rec[r])
            s = int(seq[i])
            sec = int(first_sector(v_bid[r : r + 1])[0])
            g, w = int(got[r]), int(want[r])
            c = ctx_of(i)
            p = DiskProblem(
                "stale-read",
                s,
                sec,
                f"read #{s} of sector {sec} returned write #{g}, expected write #{w}",
                {"got": g, "expected": w},
            )
            found.append(_Found(c[4], i, _verify_violation(c, p)))

    # The end: every acknowledged block holds its last acknowledged write, or a write
    # issued later for an extent that covers it.
    final: list[DiskProblem] = []
    a_blocks, a_want = acked.last()
    m_blocks, m_seq = media.last()
    if a_blocks.size:
        at = np.searchsorted(m_blocks, a_blocks)
        atc = np.minimum(at, max(m_blocks.size - 1, 0))
        hit = (at < m_blocks.size) & (m_blocks[atc] == a_blocks) if m_blocks.size else at < 0
        a_got = np.where(hit, m_seq[atc] if m_seq.size else -1, -1)
        first = first_sector(a_blocks)
        g1 = a_got + 1
        inside = (a_got > a_want) & (iw_pos[g1] < never)
        inside &= (i_sector[g1] <= first) & (first + BLOCK <= i_sector[g1] + i_nr[g1])
        lost = (a_got != a_want) & ~inside
        if lost.any():
            l_want, l_first, l_got = a_want[lost], first[lost], a_got[lost]
            order = np.lexsort((l_first, l_want))
            l_want, l_first, l_got = l_want[order], l_first[order], l_got[order]
            starts = np.flatnonzero(np.r_[True, l_want[1:] != l_want[:-1]])
            counts = np.diff(np.r_[starts, l_want.size])
            for st, cnt in zip(starts.tolist(), counts.tolist(), strict=True):
                s, fs, g = int(l_want[st]), int(l_first[st]), int(l_got[st])
                n_sec = cnt * BLOCK
                final.append(
                    DiskProblem(
                        "lost-write",
                        s,
                        fs,
                        f"write #{s} was acknowledged but {n_sec} of its sectors "
                        f"(first {fs}) hold other data",
                        {"sectors": n_sec, "media": g},
                    )
                )

    counts = (int(m_blocks.size) * BLOCK, int(ap.size), int(ak.size), int(vr.size))
    return found, final, counts


__all__ = ["C_AK", "C_AP", "C_FL", "C_IR", "C_IW", "C_RD", "C_VR", "Ctx", "DeferredDiskOracle"]
