"""Disk-content oracle: sector -> version of the last write that reached the media.

Like ``fio --verify`` it knows what the guest wrote and what it was told completed, and
checks every read and, at the end, the media. Each write is identified by its submission
``seq`` (unique per guest request, kept across re-issues), so a write executed at the wrong
sector, executed twice, or overwritten by an older one is caught.

Checks (ids in :mod:`.invariants`): ``misplaced-write`` and ``duplicated-write`` when a write
reaches the media; ``stale-read`` when the guest gets a read back; ``lost-write`` in
:meth:`DiskOracle.final_check` and for writes dropped at resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    ``media[s]``: seq of the write on sector *s*. ``acked[s]``: seq of the last write to *s*
    the guest saw complete OK. ``intent[seq]``: (sector, nr_sectors) the write was issued
    for. ``pending[s]``: writes to *s* issued and not yet answered.
    """

    __slots__ = (
        "acked",
        "acked_seqs",
        "applied",
        "expect",
        "intent",
        "last_issue",
        "media",
        "pending",
        "reads",
    )

    def __init__(self) -> None:
        self.media: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        self.acked_seqs: set[int] = set()
        self.intent: dict[int, tuple[int, int]] = {}
        self.pending: dict[int, int] = {}
        self.last_issue: dict[int, int] = {}  # sector -> seq of the last write issued to it
        self.expect: dict[int, tuple[int | None, ...]] = {}  # read seq -> expected per sector
        self.applied = 0
        self.reads = 0

    def issue_write(self, seq: int, sector: int, nr_sectors: int) -> None:
        self.intent[seq] = (sector, nr_sectors)
        pending = self.pending
        last = self.last_issue
        for s in range(sector, sector + nr_sectors):
            pending[s] = pending.get(s, 0) + 1
            last[s] = seq

    def issue_read(self, seq: int, sector: int, nr_sectors: int) -> None:
        """Remember what a read issued now must return: the acknowledged write per sector,
        or None where a write is still pending (either version is then correct)."""
        acked = self.acked
        pending = self.pending
        self.expect[seq] = tuple(
            None if s in pending else acked.get(s, -1) for s in range(sector, sector + nr_sectors)
        )

    def _unpend(self, seq: int) -> None:
        sector, nr = self.intent[seq]
        pending = self.pending
        for s in range(sector, sector + nr):
            left = pending.get(s, 0) - 1
            if left > 0:
                pending[s] = left
            else:
                pending.pop(s, None)

    def apply_write(self, seq: int, sector: int, nr_sectors: int) -> list[DiskProblem]:
        """A write reached the media at (sector, nr_sectors), as the backend executed it."""
        self.applied += 1
        problems: list[DiskProblem] = []
        want = self.intent.get(seq)
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
        media = self.media
        for s in range(sector, sector + nr_sectors):
            media[s] = seq
        return problems

    def read(self, sector: int, nr_sectors: int) -> tuple[int, ...]:
        media = self.media
        return tuple(media.get(s, -1) for s in range(sector, sector + nr_sectors))

    def ack_write(self, seq: int) -> None:
        """The guest saw write ``seq`` complete OK."""
        self.acked_seqs.add(seq)
        sector, nr = self.intent[seq]
        acked = self.acked
        for s in range(sector, sector + nr):
            acked[s] = seq
        self._unpend(seq)

    def fail_write(self, seq: int) -> None:
        """The guest saw write ``seq`` fail, or the write was dropped: no longer pending."""
        if seq in self.intent:
            self._unpend(seq)

    def verify_read(
        self, seq: int, sector: int, nr_sectors: int, data: tuple[int, ...] | None
    ) -> list[DiskProblem]:
        """The guest got read ``seq`` back: every sector that had no write pending when the
        read was issued, and none issued since, must hold the write acknowledged then."""
        self.reads += 1
        expect = self.expect.pop(seq, None)
        if data is None or expect is None:
            return []
        last = self.last_issue
        for i, s in enumerate(range(sector, sector + nr_sectors)):
            want = expect[i]
            if want is None or last.get(s, -1) > seq:
                continue
            got = data[i] if i < len(data) else -1
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

    def final_check(self) -> list[DiskProblem]:
        """Every acknowledged sector must hold its last acknowledged write, or a write to
        it issued later (still in flight when the run ended)."""
        problems: list[DiskProblem] = []
        media = self.media
        lost: dict[int, list[int]] = {}
        for s, want in self.acked.items():
            got = media.get(s, -1)
            if got == want or (got > want and s in self.intent_range(got)):
                continue
            lost.setdefault(want, []).append(s)
        for seq, sectors in sorted(lost.items()):
            problems.append(
                DiskProblem(
                    "lost-write",
                    seq,
                    sectors[0],
                    f"write #{seq} was acknowledged but {len(sectors)} of its sectors "
                    f"(first {sectors[0]}) hold other data",
                    {"sectors": len(sectors), "media": media.get(sectors[0], -1)},
                )
            )
        return problems

    def intent_range(self, seq: int) -> range:
        sector, nr = self.intent.get(seq, (0, 0))
        return range(sector, sector + nr)

    def report(self, problems: list[DiskProblem]) -> DiskReport:
        return DiskReport(
            sectors_written=len(self.media),
            writes_applied=self.applied,
            writes_acked=len(self.acked_seqs),
            reads_verified=self.reads,
            problems=problems,
        )
