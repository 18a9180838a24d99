"""fio-like workloads for the synthesizer: what the guest asks of its disk, how long it takes.

A :class:`Workload` is the guest side of one job (``rw`` mix, block size, queue depth,
issue rate, optional verify); a :class:`ServiceTime` is the disk side (a distribution
of per-I/O service times). Both draw only from the ``numpy.random.Generator`` they are
given, so a run is fully determined by its seed. Times are integer nanoseconds of
virtual time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from blktrace_xen.errors import ModelUsageError
from blktrace_xen.model.ring import BLKIF_OP_READ, BLKIF_OP_WRITE

RwMode = Literal["read", "write", "randread", "randwrite", "randrw", "rw"]
Distribution = Literal["constant", "exponential", "lognormal"]

SECTOR = 512
SECTORS_PER_SEGMENT = 8  # one 4 KiB granted page per segment
MAX_SEGMENTS = 11  # BLKIF_MAX_SEGMENTS_PER_REQUEST


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceTime:
    """Disk service time per I/O: ``mean_ns`` for reads, ``write_mean_ns`` for writes.

    ``lognormal`` uses ``sigma`` as the shape (fio latency histograms of real disks are
    close to lognormal); ``exponential`` is memoryless; ``constant`` is exact.
    """

    dist: Distribution = "lognormal"
    mean_ns: int = 120_000
    write_mean_ns: int = 180_000
    sigma: float = 0.6

    def sample(self, rng: np.random.Generator, operation: int) -> int:
        mean = self.write_mean_ns if operation == BLKIF_OP_WRITE else self.mean_ns
        if self.dist == "constant":
            return max(1, mean)
        if self.dist == "exponential":
            return max(1, int(rng.exponential(mean)))
        # mean of lognormal(mu, sigma) is exp(mu + sigma^2/2)
        mu = math.log(mean) - self.sigma * self.sigma / 2
        return max(1, int(rng.lognormal(mu, self.sigma)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """One fio job on one ring.

    ``iops`` is the issue rate (fio ``rate_iops``; 0 = as fast as the queue allows);
    ``iodepth`` bounds the requests outstanding; ``bs`` is in bytes (a multiple of 512,
    at most 11 segments = 44 KiB, so every request fits one blkif slot);
    ``size_sectors`` is the region the job addresses. With ``verify`` every completed
    write is read back later (fio ``verify_backlog``), so the disk oracle checks what the
    guest reads.
    """

    rw: RwMode = "randwrite"
    rwmixread: int = 30
    bs: int = 4096
    iodepth: int = 16
    iops: int = 5000
    verify: bool = False
    size_sectors: int = 1 << 21  # 1 GiB
    offset_sectors: int = 0

    def __post_init__(self) -> None:
        if self.bs % SECTOR or not 0 < self.bs <= MAX_SEGMENTS * SECTORS_PER_SEGMENT * SECTOR:
            raise ModelUsageError(f"bs {self.bs} must be a multiple of 512 in 512..45056")
        if self.iodepth < 1:
            raise ModelUsageError("iodepth must be at least 1")
        if self.iops < 0:
            raise ModelUsageError("iops must not be negative")
        if not 0 <= self.rwmixread <= 100:
            raise ModelUsageError("rwmixread must be in 0..100")

    @property
    def nr_sectors(self) -> int:
        return self.bs // SECTOR

    @property
    def nr_segments(self) -> int:
        return -(-self.nr_sectors // SECTORS_PER_SEGMENT)


@dataclass(slots=True)
class JobState:
    """The running state of one job: the next block and the verify backlog."""

    workload: Workload
    next_block: int = 0
    backlog: list[int] = field(default_factory=list)  # sectors written, to read back

    def next_io(self, rng: np.random.Generator, busy: set[int]) -> tuple[int, int] | None:
        """(operation, sector_number) of the next I/O, or None when every try hits a block
        with an I/O in flight (fio never overlaps its own in-flight I/O)."""
        w = self.workload
        nsec = w.nr_sectors
        blocks = max(1, w.size_sectors // nsec)
        if w.verify and self.backlog and rng.random() < 0.5:
            sector = self.backlog.pop(0)
            if sector not in busy:
                return BLKIF_OP_READ, sector
        for _ in range(8):
            if w.rw in ("read", "write", "rw"):
                block = self.next_block % blocks
                self.next_block += 1
            else:
                block = int(rng.integers(0, blocks))
            sector = w.offset_sectors + block * nsec
            if sector in busy:
                continue
            if w.rw in ("read", "randread"):
                op = BLKIF_OP_READ
            elif w.rw in ("write", "randwrite"):
                op = BLKIF_OP_WRITE
            else:
                op = BLKIF_OP_READ if rng.integers(0, 100) < w.rwmixread else BLKIF_OP_WRITE
            return op, sector
        return None

    def written(self, sector: int) -> None:
        if self.workload.verify:
            self.backlog.append(sector)

    def gap_ns(self, rng: np.random.Generator) -> int:
        """Time to the next issue: Poisson arrivals at ``iops`` (0: back to back)."""
        if self.workload.iops <= 0:
            return 1
        return max(1, int(rng.exponential(1e9 / self.workload.iops)))


__all__ = ["JobState", "ServiceTime", "Workload"]
