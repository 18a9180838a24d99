"""Disk-content oracle: sector -> version of the last write that reached the media.

Like ``fio --verify`` it knows what the guest wrote and what it was told completed, and
checks every read and, at the end, the media. Each write is identified by its submission
``seq`` (unique per guest request, kept across re-issues), so a write executed at the wrong
sector, executed twice, or overwritten by an older one is caught.

Checks (ids in :mod:`.invariants`): ``misplaced-write`` and ``duplicated-write`` when a write
reaches the media; ``stale-read`` when the guest gets a read back; ``lost-write`` in
:meth:`DiskOracle.final_check` and for writes dropped at resume.

Storage: the answers are per sector, but the oracle stores them per 4 KiB block (8 sectors)
while every I/O that touched a block covered all of it, so a block holds one value per map
and a 4 KiB I/O costs one dict operation per map instead of eight. The first I/O that covers
a block only partly *splits* it: from then on that block is kept per sector (``split``), in
every map at once. Real guests do 4 KiB-aligned I/O almost always; a 512-byte-sector guest
still gets exact answers, only slower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

BLOCK_SHIFT: Final = 3  # 8 sectors of 512 bytes: the 4 KiB page a guest usually writes
BLOCK: Final = 1 << BLOCK_SHIFT
_LOW: Final = BLOCK - 1

Data = tuple[int, ...] | list[int]
"""What a read returned: a tuple of one write seq per block when the read was
block-aligned over unsplit blocks, else a list of one per sector (the type says which:
:meth:`DiskOracle.per_sector`)."""
Expect = tuple[int | None, ...] | list[int | None]


@dataclass(slots=True)
class DiskProblem:
    invariant: str
    seq: int
    sector: int
    message: str
    evidence: dict[str, int | None] = field(default_factory=dict)


@dataclass(slots=True)
class DiskReport:
    """Summary at the end of a run."""

    sectors_written: int
    writes_applied: int
    writes_acked: int
    reads_verified: int
    problems: list[DiskProblem]


class DiskOracle:
    """Media content plus what the guest was told.

    Per sector *s* (stored per block, see the module doc): ``media``: seq of the write on
    *s*; ``acked``: seq of the last write to *s* the guest saw complete OK; ``pending``:
    writes to *s* issued and not yet answered; ``last``: seq of the last write issued to
    *s*. ``intent[seq]``: (sector, nr_sectors) write ``seq`` was issued for. The ``*_b``
    dicts are keyed by block number (unsplit blocks), the ``*_s`` ones by sector (sectors
    of split blocks).
    """

    __slots__ = (
        "acked_b",
        "acked_s",
        "acked_seqs",
        "applied",
        "expect",
        "intent",
        "last_b",
        "last_s",
        "media_b",
        "media_s",
        "pending_b",
        "pending_s",
        "reads",
        "split",
    )

    def __init__(self) -> None:
        self.media_b: dict[int, int] = {}
        self.media_s: dict[int, int] = {}
        self.acked_b: dict[int, int] = {}
        self.acked_s: dict[int, int] = {}
        self.pending_b: dict[int, int] = {}
        self.pending_s: dict[int, int] = {}
        self.last_b: dict[int, int] = {}
        self.last_s: dict[int, int] = {}
        self.split: set[int] = set()
        self.acked_seqs: set[int] = set()
        self.intent: dict[int, tuple[int, int]] = {}
        self.expect: dict[int, Expect] = {}  # read seq -> expected, same shape as Data
        self.applied = 0
        self.reads = 0

    # ------------------------------------------------------------- block plumbing

    def _blocks(self, sector: int, nr: int) -> range | None:
        """The blocks of an aligned extent none of which is split, else None (slow path)."""
        if (sector | nr) & _LOW:
            return None
        blocks = range(sector >> BLOCK_SHIFT, (sector + nr) >> BLOCK_SHIFT)
        split = self.split
        if split and not split.isdisjoint(blocks):
            return None
        return blocks

    def _split_range(self, sector: int, nr: int) -> None:
        """Keep every block the extent touches per sector from now on."""
        split = self.split
        pairs = (
            (self.media_b, self.media_s),
            (self.acked_b, self.acked_s),
            (self.pending_b, self.pending_s),
            (self.last_b, self.last_s),
        )
        for b in range(sector >> BLOCK_SHIFT, (sector + nr + _LOW) >> BLOCK_SHIFT):
            if b in split:
                continue
            split.add(b)
            first = b << BLOCK_SHIFT
            for by_block, by_sector in pairs:
                value = by_block.pop(b, None)
                if value is not None:
                    for s in range(first, first + BLOCK):
                        by_sector[s] = value

    # ------------------------------------------------------------------- inputs

    # Each input method starts with the one-block case inlined (a 4 KiB I/O on a block
    # that is not split): that is nearly every I/O of a real trace.

    def issue_write(self, seq: int, sector: int, nr_sectors: int) -> None:
        self.intent[seq] = (sector, nr_sectors)
        if nr_sectors == BLOCK and not sector & _LOW:
            b = sector >> BLOCK_SHIFT
            if b not in self.split:
                pending_b = self.pending_b
                pending_b[b] = pending_b.get(b, 0) + 1
                self.last_b[b] = seq
                return
        blocks = self._blocks(sector, nr_sectors)
        if blocks is not None:
            pending = self.pending_b
            last = self.last_b
        else:
            self._split_range(sector, nr_sectors)
            blocks = range(sector, sector + nr_sectors)
            pending = self.pending_s
            last = self.last_s
        for k in blocks:
            pending[k] = pending.get(k, 0) + 1
            last[k] = seq

    def issue_read(self, seq: int, sector: int, nr_sectors: int) -> None:
        """Remember what a read issued now must return: the acknowledged write per sector,
        or None where a write is still pending (either version is then correct)."""
        if nr_sectors == BLOCK and not sector & _LOW:
            b = sector >> BLOCK_SHIFT
            if b not in self.split:
                self.expect[seq] = (None if b in self.pending_b else self.acked_b.get(b, -1),)
                return
        blocks = self._blocks(sector, nr_sectors)
        if blocks is None:
            split = self.split
            acked = _SectorLookup(self.acked_b, self.acked_s, split)
            pending = _SectorLookup(self.pending_b, self.pending_s, split)
            self.expect[seq] = [
                None if s in pending else acked.get(s, -1)
                for s in range(sector, sector + nr_sectors)
            ]
            return
        acked_b = self.acked_b
        pending_b = self.pending_b
        if len(blocks) == 1:
            k = blocks[0]
            self.expect[seq] = (None if k in pending_b else acked_b.get(k, -1),)
            return
        self.expect[seq] = tuple(None if k in pending_b else acked_b.get(k, -1) for k in blocks)

    def _unpend(self, seq: int) -> None:
        sector, nr = self.intent[seq]
        blocks = self._blocks(sector, nr)
        if blocks is not None:
            pending = self.pending_b
        else:
            self._split_range(sector, nr)
            blocks = range(sector, sector + nr)
            pending = self.pending_s
        for k in blocks:
            left = pending.get(k, 0) - 1
            if left > 0:
                pending[k] = left
            else:
                pending.pop(k, None)

    def apply_write(self, seq: int, sector: int, nr_sectors: int) -> list[DiskProblem]:
        """A write reached the media at (sector, nr_sectors), as the backend executed it."""
        self.applied += 1
        want = self.intent.get(seq)
        if (want is not None and (sector, nr_sectors) != want) or seq in self.acked_seqs:
            problems = self._write_problems(seq, sector, nr_sectors, want)
        else:
            problems = []
        if nr_sectors == BLOCK and not sector & _LOW:
            b = sector >> BLOCK_SHIFT
            if b not in self.split:
                self.media_b[b] = seq
                return problems
        blocks = self._blocks(sector, nr_sectors)
        if blocks is not None:
            media = self.media_b
        else:
            self._split_range(sector, nr_sectors)
            blocks = range(sector, sector + nr_sectors)
            media = self.media_s
        if len(blocks) == 1:
            media[blocks[0]] = seq
        else:
            media.update(dict.fromkeys(blocks, seq))
        return problems

    def _write_problems(
        self, seq: int, sector: int, nr_sectors: int, want: tuple[int, int] | None
    ) -> list[DiskProblem]:
        problems: list[DiskProblem] = []
        if want is not None and (sector, nr_sectors) != want:
            problems.append(
                DiskProblem(
                    "misplaced-write",
                    seq,
                    sector,
                    f"write #{seq} issued for sectors {want[0]}+{want[1]} "
                    f"reached sectors {sector}+{nr_sectors}",
                    {"intended_sector": want[0], "intended_nr_sectors": want[1]},
                )
            )
        if seq in self.acked_seqs:
            problems.append(
                DiskProblem(
                    "duplicated-write",
                    seq,
                    sector,
                    f"write #{seq} reached the disk again after the guest saw it complete",
                )
            )
        return problems

    def read(self, sector: int, nr_sectors: int) -> Data:
        """What a read of the extent returns now (shape: see :data:`Data`)."""
        if nr_sectors == BLOCK and not sector & _LOW:
            b = sector >> BLOCK_SHIFT
            if b not in self.split:
                return (self.media_b.get(b, -1),)
        blocks = self._blocks(sector, nr_sectors)
        if blocks is not None:
            media = self.media_b
            if len(blocks) == 1:
                return (media.get(blocks[0], -1),)
            return tuple(media.get(b, -1) for b in blocks)
        return self.read_sectors(sector, nr_sectors)

    def read_sectors(self, sector: int, nr_sectors: int) -> list[int]:
        """The write seq on every sector of the extent (-1: never written)."""
        look = _SectorLookup(self.media_b, self.media_s, self.split)
        return [look.get(s, -1) for s in range(sector, sector + nr_sectors)]

    def holds(self, seq: int, sector: int, nr_sectors: int) -> bool:
        """Does every sector of the extent hold write ``seq``?"""
        return self.read_sectors(sector, nr_sectors) == [seq] * nr_sectors

    def ack_write(self, seq: int) -> None:
        """The guest saw write ``seq`` complete OK."""
        self.acked_seqs.add(seq)
        sector, nr = self.intent[seq]
        if nr == BLOCK and not sector & _LOW:
            b = sector >> BLOCK_SHIFT
            if b not in self.split:
                self.acked_b[b] = seq
                pending_b = self.pending_b
                left = pending_b.get(b, 0) - 1
                if left > 0:
                    pending_b[b] = left
                else:
                    pending_b.pop(b, None)
                return
        blocks = self._blocks(sector, nr)
        if blocks is not None:
            acked = self.acked_b
            pending = self.pending_b
        else:
            self._split_range(sector, nr)
            blocks = range(sector, sector + nr)
            acked = self.acked_s
            pending = self.pending_s
        for k in blocks:
            acked[k] = seq
            left = pending.get(k, 0) - 1
            if left > 0:
                pending[k] = left
            else:
                pending.pop(k, None)

    def fail_write(self, seq: int) -> None:
        """The guest saw write ``seq`` fail, or the write was dropped: no longer pending."""
        if seq in self.intent:
            self._unpend(seq)

    @staticmethod
    def per_sector(values: Data | Expect) -> list[int | None]:
        """``values`` (a :data:`Data` or an expectation) as one entry per sector."""
        if isinstance(values, list):
            return list(values)
        return [v for v in values for _ in range(BLOCK)]

    def verify_read(
        self, seq: int, sector: int, nr_sectors: int, data: Data | None
    ) -> list[DiskProblem]:
        """The guest got read ``seq`` back: every sector that had no write pending when the
        read was issued, and none issued since, must hold the write acknowledged then."""
        self.reads += 1
        expect = self.expect.pop(seq, None)
        if data is None or expect is None or data == expect:
            return []
        return self._stale(seq, sector, nr_sectors, data, expect)

    def _stale(
        self, seq: int, sector: int, nr_sectors: int, data: Data, expect: Expect
    ) -> list[DiskProblem]:
        want_all = self.per_sector(expect)
        got_all = self.per_sector(data)
        last = _SectorLookup(self.last_b, self.last_s, self.split)
        for i, s in enumerate(range(sector, sector + nr_sectors)):
            want = want_all[i]
            if want is None or last.get(s, -1) > seq:
                continue
            got = got_all[i] if i < len(got_all) else -1
            if got != want:
                return [
                    DiskProblem(
                        "stale-read",
                        seq,
                        s,
                        f"read #{seq} of sector {s} returned write #{got}, expected write #{want}",
                        {"got": got, "expected": want},
                    )
                ]
        return []

    # ------------------------------------------------------------------ results

    def sectors(self, by_block: dict[int, int], by_sector: dict[int, int]) -> dict[int, int]:
        """One map as ``sector -> value``, in sector order."""
        out = dict(by_sector)
        for b, value in by_block.items():
            first = b << BLOCK_SHIFT
            for s in range(first, first + BLOCK):
                out[s] = value
        return dict(sorted(out.items()))

    @property
    def media(self) -> dict[int, int]:
        """``sector -> seq`` of the write on it (built on demand: for checks and tests)."""
        return self.sectors(self.media_b, self.media_s)

    @property
    def acked(self) -> dict[int, int]:
        """``sector -> seq`` of the last write acknowledged on it (built on demand)."""
        return self.sectors(self.acked_b, self.acked_s)

    def final_check(self) -> list[DiskProblem]:
        """Every acknowledged sector must hold its last acknowledged write, or a write to
        it issued later (still in flight when the run ended)."""
        problems: list[DiskProblem] = []
        lost: dict[int, list[int]] = {}
        media_b = self.media_b
        for b, want in self.acked_b.items():
            got = media_b.get(b, -1)
            if got == want:
                continue
            first = b << BLOCK_SHIFT
            inside = self.intent_range(got) if got > want else range(0)
            for s in range(first, first + BLOCK):
                if s not in inside:
                    lost.setdefault(want, []).append(s)
        look = _SectorLookup(media_b, self.media_s, self.split)
        for s, want in self.acked_s.items():
            got = look.get(s, -1)
            if got == want or (got > want and s in self.intent_range(got)):
                continue
            lost.setdefault(want, []).append(s)
        media = look
        for seq, sectors in sorted(lost.items()):
            first_s = min(sectors)
            problems.append(
                DiskProblem(
                    "lost-write",
                    seq,
                    first_s,
                    f"write #{seq} was acknowledged but {len(sectors)} of its sectors "
                    f"(first {first_s}) hold other data",
                    {"sectors": len(sectors), "media": media.get(first_s, -1)},
                )
            )
        return problems

    def intent_range(self, seq: int) -> range:
        sector, nr = self.intent.get(seq, (0, 0))
        return range(sector, sector + nr)

    def report(self, problems: list[DiskProblem]) -> DiskReport:
        return DiskReport(
            sectors_written=len(self.media_b) * BLOCK + len(self.media_s),
            writes_applied=self.applied,
            writes_acked=len(self.acked_seqs),
            reads_verified=self.reads,
            problems=problems,
        )


class _SectorLookup:
    """Per-sector reads of one map, whichever way each block is stored (slow paths only)."""

    __slots__ = ("by_block", "by_sector", "split")

    def __init__(self, by_block: dict[int, int], by_sector: dict[int, int], split: set[int]):
        self.by_block = by_block
        self.by_sector = by_sector
        self.split = split

    def get(self, sector: int, default: int) -> int:
        b = sector >> BLOCK_SHIFT
        if b in self.split:
            return self.by_sector.get(sector, default)
        return self.by_block.get(b, default)

    def __contains__(self, sector: int) -> bool:
        b = sector >> BLOCK_SHIFT
        if b in self.split:
            return sector in self.by_sector
        return b in self.by_block
