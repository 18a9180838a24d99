"""The scenario registry and :func:`synthesize`: a named incident -> trace, capture and truth.

A :class:`Scenario` says which rings carry which fio job, which logic pair it exercises
(the seed's legacy and patched logics) and which control actions happen when. Times of
controls are fractions of the run's duration, so ``--duration`` scales a scenario
without changing its story. Everything random comes from the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blktrace_xen.errors import ModelUsageError
from blktrace_xen.model.events import (
    BackConsume,
    BackRespond,
    Bind,
    Disconnect,
    DomainDestroy,
    FrontMutateSlot,
    FrontSetReqProd,
    FrontSubmit,
    Handoff,
    InputEvent,
    Resume,
    RingKey,
    Suspend,
    Unbind,
)
from blktrace_xen.model.logic import LOGICS
from blktrace_xen.model.ring import BLKIF_OP_READ, BLKIF_OP_WRITE, MASK32
from blktrace_xen.synth.emit_ringcap import write_ringcap
from blktrace_xen.synth.emit_xentrace import (
    LoseRecords,
    XentraceOptions,
    _Emitter,
    trace_records,
    write_trace,
)
from blktrace_xen.synth.sim import Control, SimConfig, SimResult, Simulator
from blktrace_xen.synth.truth import write_truth
from blktrace_xen.synth.workload import ServiceTime, Workload

XVDA = 51712
RING0: RingKey = (1, XVDA, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A named synthetic incident.

    ``logic``: the logic used when none is given (the seed's legacy one, so the default
    output shows the incident); ``patched``: the logic that survives it. ``build`` returns
    the simulation config for a duration (ns), an issue rate and the logic names.
    """

    name: str
    seed: str | None
    doc: str
    logic: str
    patched: str
    expect_legacy: frozenset[str]
    build: Callable[[int, int, str, str], SimConfig]
    ring_page_order: int = 0
    hosts: int = 1
    guestless_ok: bool = True
    tags: tuple[str, ...] = field(default=())


def _one(w: Workload, duration: int, back: str, front: str, **kw: Any) -> SimConfig:
    return SimConfig(rings={RING0: w}, duration_ns=duration, backend=back, frontend=front, **kw)


def _at(t: int, *events: Callable[[int], InputEvent]) -> tuple[int, Control]:
    def ctl(_sim: Simulator, now: int) -> Sequence[InputEvent]:
        return [make(now) for make in events]

    return t, ctl


# ----------------------------------------------------------------- scenario builders


def _steady(d: int, iops: int, back: str, front: str) -> SimConfig:
    return _one(Workload(rw="randrw", iops=iops, verify=True), d, back, front)


def _disconnect(d: int, iops: int, back: str, front: str) -> SimConfig:
    w = Workload(rw="randwrite", iops=iops, iodepth=16)
    # A slow disk keeps a queue of writes in flight when the disconnect arrives.
    svc = ServiceTime(mean_ns=1_000_000, write_mean_ns=3_000_000)
    ctl = [_at(d // 2, lambda t: Disconnect(t_ns=t, ring=RING0, side="back"))]
    return _one(w, d, back, front, controls=ctl, service=svc)


def _destroy(d: int, iops: int, back: str, front: str) -> SimConfig:
    # Swapping: sequential 4 KiB writes, deep queue, slow disk.
    w = Workload(rw="write", iops=iops * 2, iodepth=32, size_sectors=1 << 20)
    svc = ServiceTime(mean_ns=400_000, write_mean_ns=900_000)
    ctl = [_at(d // 2, lambda t: DomainDestroy(t_ns=t, ring=RING0))]
    return _one(w, d, back, front, controls=ctl, service=svc)


def _unbind_rebind(d: int, iops: int, back: str, front: str) -> SimConfig:
    # The seed's reproducer: fio randwrite iodepth 16 bs 4k verify, unbind every few
    # seconds (here: five times per run), bind again shortly after.
    w = Workload(rw="randwrite", bs=4096, iodepth=16, iops=iops, verify=True)
    ctl = []
    for k in range(1, 6):
        t = d * k // 6
        ctl.append(_at(t, lambda t: Unbind(t_ns=t, ring=RING0)))
        ctl.append(_at(t + d // 60, lambda t: Bind(t_ns=t, ring=RING0)))
    return _one(w, d, back, front, controls=ctl)


def _save_restore(d: int, iops: int, back: str, front: str) -> SimConfig:
    w = Workload(rw="randwrite", iodepth=16, iops=iops, verify=True, size_sectors=1 << 14)

    # The guest issues two writes just before the save; the backend thread has not run
    # yet, so they are published but unconsumed when the domain is suspended (outside
    # the job's region, so no other I/O overlaps them).
    def write(sector: int) -> Callable[[int], InputEvent]:
        return lambda t: FrontSubmit(
            t_ns=t, ring=RING0, operation=BLKIF_OP_WRITE, sector_number=sector, nr_sectors=8
        )

    ctl = [
        _at(d // 2, write(1 << 15), write((1 << 15) + 64), lambda t: Suspend(t_ns=t, ring=RING0)),
        _at(d // 2 + d // 20, lambda t: Resume(t_ns=t, ring=RING0)),
    ]
    return _one(w, d, back, front, controls=ctl, wake_ns=400_000)


def _migrate(d: int, iops: int, back: str, front: str) -> SimConfig:
    w = Workload(rw="randwrite", iodepth=16, iops=iops, verify=True, size_sectors=1 << 12)
    svc = ServiceTime(mean_ns=300_000, write_mean_ns=2_000_000)
    ctl = [
        _at(d // 2, lambda t: Suspend(t_ns=t, ring=RING0)),
        _at(d // 2 + 1000, lambda t: Handoff(t_ns=t, ring=RING0)),
    ]
    return _one(w, d, back, front, controls=ctl, service=svc)


def _mutate(sim: Simulator, now: int) -> Sequence[InputEvent]:
    ring = sim.ring(RING0).ring
    be = sim.ring(RING0).backend
    # A published request the backend has not consumed yet, else the latest one.
    idx = be.req_cons if be.req_cons != ring.req_prod else (ring.req_prod - 1) & MASK32
    if ring.req_prod == 0:
        return []
    return [FrontMutateSlot(t_ns=now, ring=RING0, idx=idx, sector_number=1 << 30)]


def _bogus(sim: Simulator, now: int) -> Sequence[InputEvent]:
    ring = sim.ring(RING0).ring
    # The frontend notifies after the write, so the backend thread reads the bogus value
    # before the next honest push would overwrite it.
    return [
        FrontSetReqProd(t_ns=now, ring=RING0, req_prod=(ring.rsp_prod + 10 * ring.nr_ents)),
        BackConsume(t_ns=now, ring=RING0),
    ]


def _hostile(d: int, iops: int, back: str, front: str) -> SimConfig:
    w = Workload(rw="randrw", iodepth=8, iops=iops)
    return _one(w, d, back, front, controls=[(d * 3 // 10, _mutate), (d * 6 // 10, _bogus)])


def _bad_responses(sim: Simulator, now: int) -> Sequence[InputEvent]:
    fe = sim.ring(RING0).frontend
    out: list[InputEvent] = [
        BackRespond(t_ns=now, ring=RING0, id=0xDEADBEEF, operation=BLKIF_OP_READ)
    ]
    answered = sorted(fe.answered) if hasattr(fe, "answered") else []
    if answered:
        out.append(BackRespond(t_ns=now, ring=RING0, id=answered[0], operation=BLKIF_OP_WRITE))
    pending = sorted(fe.outstanding.items())
    if pending:
        rid, req = pending[0]
        wrong = BLKIF_OP_READ if req.operation == BLKIF_OP_WRITE else BLKIF_OP_WRITE
        out.append(BackRespond(t_ns=now, ring=RING0, id=rid, operation=wrong))
    return out


def _misbehaving(d: int, iops: int, back: str, front: str) -> SimConfig:
    w = Workload(rw="randrw", iodepth=8, iops=iops)
    return _one(w, d, back, front, controls=[(d // 2, _bad_responses)])


def _multi_page(d: int, iops: int, back: str, front: str) -> SimConfig:
    w = Workload(rw="randrw", iodepth=96, iops=iops * 2, bs=16384, verify=True)
    svc = ServiceTime(mean_ns=3_000_000, write_mean_ns=4_000_000)
    return SimConfig(
        rings={RING0: w}, duration_ns=d, backend=back, frontend=front, nr_ents=128, service=svc
    )


def _multi_queue(d: int, iops: int, back: str, front: str) -> SimConfig:
    rings = {
        (1, XVDA, q): Workload(
            rw="randrw",
            iodepth=8,
            iops=max(1, iops // 4),
            verify=True,
            offset_sectors=q << 22,
            size_sectors=1 << 20,
        )
        for q in range(4)
    }
    return SimConfig(rings=rings, duration_ns=d, backend=back, frontend=front)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="steady",
            seed=None,
            doc="fio randrw with verify on one ring; nothing goes wrong",
            logic="linux-default",
            patched="linux-default",
            expect_legacy=frozenset(),
            build=_steady,
        ),
        Scenario(
            name="disconnect-during-io",
            seed="000",
            doc="the toolstack disconnects the backend while 16 writes are in flight",
            logic="xbdback-2005-immediate",
            patched="xbdback-2005-refcount",
            expect_legacy=frozenset({"response-after-unmap"}),
            build=_disconnect,
        ),
        Scenario(
            name="destroy-during-swap",
            seed="000",
            doc="the guest is destroyed while swapping (deep queue of sequential writes)",
            logic="xbdback-2005-immediate",
            patched="xbdback-2005-refcount",
            expect_legacy=frozenset({"response-after-unmap"}),
            build=_destroy,
        ),
        Scenario(
            name="unbind-rebind-loop",
            seed="002",
            doc="fio randwrite iodepth 16 bs 4k verify; blkback unbound and bound 5 times",
            logic="blkback-rebind-init",
            patched="blkback-rebind-attach",
            expect_legacy=frozenset({"backend-halted"}),
            build=_unbind_rebind,
        ),
        Scenario(
            name="save-restore-during-io",
            seed="003",
            doc="save and restore with requests outstanding; the frontend must re-issue them",
            logic="xbd-2006-recovery-as-posted",
            patched="xbd-2006-recovery-fixed",
            expect_legacy=frozenset({"reissue-mismatch", "misplaced-write"}),
            build=_save_restore,
        ),
        Scenario(
            name="migrate-during-io",
            seed="004",
            doc="live migration with writes in flight on a slow source disk",
            logic="blkback-2008-remove-nowait",
            patched="blkback-2008-remove-wait",
            expect_legacy=frozenset({"write-after-handoff"}),
            build=_migrate,
            hosts=2,
        ),
        Scenario(
            name="hostile-frontend",
            seed=None,
            doc="the frontend rewrites a published slot, then sets a bogus req_prod",
            logic="linux-default",
            patched="linux-default",
            expect_legacy=frozenset({"slot-mutated", "backend-halted", "implausible-producer"}),
            build=_hostile,
        ),
        Scenario(
            name="misbehaving-backend",
            seed=None,
            doc="the backend answers an unknown id, an id twice and with the wrong op",
            logic="linux-default",
            patched="linux-default",
            expect_legacy=frozenset({"response-not-in-flight"}),
            build=_misbehaving,
        ),
        Scenario(
            name="multi-page-ring",
            seed=None,
            doc="ring-page-order 2 (128 entries), iodepth 96, 16 KiB I/O",
            logic="linux-default",
            patched="linux-default",
            expect_legacy=frozenset(),
            build=_multi_page,
            ring_page_order=2,
        ),
        Scenario(
            name="multi-queue",
            seed=None,
            doc="four queues (multi-queue-num-queues=4), one fio job per queue",
            logic="linux-default",
            patched="linux-default",
            expect_legacy=frozenset(),
            build=_multi_queue,
        ),
    )
}


def logic_sides(logic: str, scenario: Scenario) -> tuple[str, str]:
    """(backend, frontend) logic names for ``logic`` (the other side: linux-default)."""
    spec = LOGICS.get(logic)
    if spec is None:
        if ":" in logic:  # path.py:Class: the side follows the scenario's own logic
            own = LOGICS[scenario.logic].side
            return (logic, "linux-default") if own != "front" else ("linux-default", logic)
        known = ", ".join(sorted(LOGICS))
        raise ModelUsageError(f"unknown logic {logic!r}; known: {known}")
    side = spec.side
    if side == "both":
        return logic, logic
    return (logic, "linux-default") if side == "back" else ("linux-default", logic)


@dataclass(slots=True)
class SynthOutput:
    scenario: str
    logic: str
    seed: int
    files: list[Path]
    sim: SimResult
    records: int
    snapshots: int


def run_scenario(
    name: str, *, seed: int = 0, duration_s: float = 1.0, iops: int = 5000, logic: str | None = None
) -> tuple[Scenario, SimResult, str]:
    """Simulate scenario ``name`` (no files written)."""
    scen = SCENARIOS.get(name)
    if scen is None:
        raise ModelUsageError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if not duration_s > 0:
        raise ModelUsageError("duration must be positive")
    if iops <= 0:
        raise ModelUsageError("iops must be positive")
    chosen = logic or scen.logic
    back, front = logic_sides(chosen, scen)
    config = scen.build(int(duration_s * 1e9), iops, back, front)
    return scen, Simulator(config, seed).run(), chosen


def synthesize(
    name: str,
    out: Path,
    *,
    seed: int = 0,
    duration_s: float = 1.0,
    iops: int = 5000,
    logic: str | None = None,
    guest_events: bool = True,
    persistent_grants: bool = False,
    lost_records: int = 0,
    cpu_mhz: float = 2400.0,
) -> SynthOutput:
    """Simulate scenario ``name`` and write ``trace.xentrace``, ``ring.pcapng`` (and for a
    migration ``ring-target.pcapng``) and the truth files into ``out``."""
    scen, sim, chosen = run_scenario(name, seed=seed, duration_s=duration_s, iops=iops, logic=logic)
    out.mkdir(parents=True, exist_ok=True)
    lose = [LoseRecords(t_ns=sim.end_ns // 3, cpu=0, count=lost_records)] if lost_records else []
    opts = XentraceOptions(
        guest_events=guest_events,
        persistent_grants=persistent_grants,
        cpu_mhz=cpu_mhz,
        lose=lose,
    )
    recs = trace_records(sim, opts, scen.ring_page_order)
    trace = out / "trace.xentrace"
    xstats = write_trace(trace, recs, opts.window_records)
    ring = out / "ring.pcapng"
    target = out / "ring-target.pcapng" if scen.hosts > 1 else None
    rstats = write_ringcap(
        sim,
        ring,
        ring_page_order=scen.ring_page_order,
        tsc=_Emitter(opts).tsc,
        target_out=target,
        persistent_grants=persistent_grants,
    )
    params = {
        "scenario": name,
        "scenario_seed": scen.seed,
        "logic": chosen,
        "patched_logic": scen.patched,
        "seed": seed,
        "duration_s": duration_s,
        "iops": iops,
        "guest_events": guest_events,
        "persistent_grants": persistent_grants,
        "lost_records": lost_records,
        "cpu_mhz": cpu_mhz,
        "t0_tsc": opts.t0_tsc,
        "ring_page_order": scen.ring_page_order,
        "trace_records": xstats.records,
        "snapshots": rstats.snapshots,
    }
    files = [trace, *rstats.files, *write_truth(out, sim, params)]
    return SynthOutput(name, chosen, seed, files, sim, xstats.records, rstats.snapshots)


__all__ = ["SCENARIOS", "Scenario", "SynthOutput", "logic_sides", "run_scenario", "synthesize"]
