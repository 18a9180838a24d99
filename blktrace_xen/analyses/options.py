"""Tunable thresholds of the rule catalogue, in one frozen value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisOptions:
    """Thresholds the rules use; the defaults suit a healthy production trace.

    ``default_nr_ents`` is the ring size assumed where neither ``rings`` nor
    ``snapshots`` tell it (a single-page ring: 32 entries for both ABIs).
    ``stall_ns`` is how long requests may wait with no backend progress before
    ``stall`` fires (Linux blkfront has no timeout; 5 s is far beyond any
    healthy disk, even the emulated ones of ../shared/realxen).
    ``lost_confidence`` multiplies a finding's confidence once per kind of
    blind spot (lost trace records, unseen ring entries) overlapping it.
    """

    default_nr_ents: int = 32
    stall_ns: int = 5_000_000_000
    ring_full_min_ns: int = 0
    lost_confidence: float = 0.5
