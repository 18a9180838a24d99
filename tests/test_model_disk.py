"""The block-keyed disk oracle answers exactly like a plain per-sector one."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from blktrace_xen.model.disk import DiskOracle, DiskProblem


@dataclass
class SectorOracle:
    """The reference: every map per sector, no cleverness (the oracle's first version)."""

    media: dict[int, int] = field(default_factory=dict)
    acked: dict[int, int] = field(default_factory=dict)
    acked_seqs: set[int] = field(default_factory=set)
    intent: dict[int, tuple[int, int]] = field(default_factory=dict)
    pending: dict[int, int] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)
    expect: dict[int, list[int | None]] = field(default_factory=dict)

    def issue_write(self, seq: int, sector: int, nr: int) -> None:
        self.intent[seq] = (sector, nr)
        for s in range(sector, sector + nr):
            self.pending[s] = self.pending.get(s, 0) + 1
            self.last[s] = seq

    def issue_read(self, seq: int, sector: int, nr: int) -> None:
        self.expect[seq] = [
            None if s in self.pending else self.acked.get(s, -1) for s in range(sector, sector + nr)
        ]

    def unpend(self, seq: int) -> None:
        sector, nr = self.intent[seq]
        for s in range(sector, sector + nr):
            left = self.pending.get(s, 0) - 1
            if left > 0:
                self.pending[s] = left
            else:
                self.pending.pop(s, None)

    def apply_write(self, seq: int, sector: int, nr: int) -> list[str]:
        out = []
        if self.intent.get(seq, (sector, nr)) != (sector, nr):
            out.append("misplaced-write")
        if seq in self.acked_seqs:
            out.append("duplicated-write")
        for s in range(sector, sector + nr):
            self.media[s] = seq
        return out

    def read(self, sector: int, nr: int) -> list[int]:
        return [self.media.get(s, -1) for s in range(sector, sector + nr)]

    def ack_write(self, seq: int) -> None:
        self.acked_seqs.add(seq)
        sector, nr = self.intent[seq]
        for s in range(sector, sector + nr):
            self.acked[s] = seq
        self.unpend(seq)

    def verify_read(self, seq: int, sector: int, nr: int, data: list[int]) -> list[tuple[int, int]]:
        expect = self.expect.pop(seq)
        for i, s in enumerate(range(sector, sector + nr)):
            if expect[i] is None or self.last.get(s, -1) > seq:
                continue
            got = data[i] if i < len(data) else -1
            if got != expect[i]:
                return [(s, got)]
        return []

    def lost(self) -> list[tuple[int, int, int]]:
        lost: dict[int, list[int]] = {}
        for s, want in self.acked.items():
            got = self.media.get(s, -1)
            sector, nr = self.intent.get(got, (0, 0))
            if got == want or (got > want and sector <= s < sector + nr):
                continue
            lost.setdefault(want, []).append(s)
        return [(seq, min(ss), len(ss)) for seq, ss in sorted(lost.items())]


def extents() -> st.SearchStrategy[tuple[int, int]]:
    aligned = st.tuples(st.integers(0, 5).map(lambda b: 8 * b), st.sampled_from([8, 16, 24]))
    unaligned = st.tuples(st.integers(0, 44), st.integers(1, 12))
    return st.one_of(aligned, aligned, unaligned)


# One step: (kind, extent, misplace, ok). kind 0 = write, 1 = read.
STEPS = st.lists(st.tuples(st.integers(0, 1), extents(), extents(), st.integers(0, 9)), max_size=30)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(steps=STEPS, order=st.randoms(use_true_random=False))
def test_block_oracle_matches_sector_oracle(steps: list, order) -> None:  # type: ignore[no-untyped-def,type-arg]
    fast, ref = DiskOracle(), SectorOracle()
    live: list[tuple[int, int, tuple[int, int], tuple[int, int], int]] = []
    for seq, (kind, ext, where, roll) in enumerate(steps):
        if kind == 0:
            fast.issue_write(seq, *ext)
            ref.issue_write(seq, *ext)
        else:
            fast.issue_read(seq, *ext)
            ref.issue_read(seq, *ext)
        live.append((seq, kind, ext, where, roll))
        # Finish some I/O in a random order: completion then the guest's answer.
        while live and order.random() < 0.5:
            seq2, kind2, ext2, where2, roll2 = live.pop(order.randrange(len(live)))
            target = where2 if roll2 == 0 else ext2  # a misplaced write now and then
            if kind2 == 0:
                got = [p.invariant for p in fast.apply_write(seq2, *target)]
                assert got == ref.apply_write(seq2, *target)
                if roll2 == 1 and seq2 in ref.acked_seqs:
                    continue
                if roll2 == 2:
                    fast.fail_write(seq2)
                    ref.unpend(seq2)
                else:
                    fast.ack_write(seq2)
                    ref.ack_write(seq2)
                if roll2 == 3:  # executed again after the ack
                    assert [p.invariant for p in fast.apply_write(seq2, *target)] == (
                        ref.apply_write(seq2, *target)
                    )
            else:
                data = fast.read(*target)
                assert DiskOracle.per_sector(data) == ref.read(*target)
                stale = fast.verify_read(seq2, *ext2, data)
                want = ref.verify_read(seq2, *ext2, ref.read(*target))
                assert [(p.sector, p.evidence["got"]) for p in stale] == want
        assert fast.media == ref.media
        assert fast.acked == dict(sorted(ref.acked.items()))
    lost = fast.final_check()
    assert [(p.seq, p.sector, p.evidence["sectors"]) for p in lost] == ref.lost()
    assert fast.report(lost).sectors_written == len(ref.media)


def test_aligned_io_stays_per_block_and_unaligned_splits_only_its_blocks() -> None:
    disk = DiskOracle()
    disk.issue_write(0, 0, 64)
    disk.apply_write(0, 0, 64)
    disk.ack_write(0)
    assert (disk.split, len(disk.media_b), disk.media_s) == (set(), 8, {})
    disk.issue_write(1, 20, 2)  # inside block 2
    disk.apply_write(1, 20, 2)
    assert disk.split == {2}
    assert disk.read(0, 8) == (0,)  # untouched blocks still answer per block
    assert disk.read(16, 8) == [0, 0, 0, 0, 1, 1, 0, 0]
    assert disk.holds(1, 20, 2) and not disk.holds(1, 19, 2)


def test_stale_read_is_caught_per_sector_after_a_split() -> None:
    disk = DiskOracle()
    disk.issue_write(0, 0, 8)
    disk.apply_write(0, 0, 8)
    disk.ack_write(0)
    disk.issue_read(1, 0, 8)  # expects write 0 on the block
    disk.media_b[0] = 7  # the media changes behind the oracle's back: a corrupt disk
    problems = disk.verify_read(1, 0, 8, disk.read(0, 8))
    assert problems == [
        DiskProblem(
            "stale-read",
            1,
            0,
            "read #1 of sector 0 returned write #7, expected write #0",
            {"got": 7, "expected": 0},
        )
    ]
