"""Discrete-event simulation: fio-like jobs drive the blkif model under virtual time.

Theory of operation
-------------------
One heap of timed happenings (an issue tick of a job, the backend thread waking, a disk
I/O finishing, the frontend interrupt, a scenario's control action) is drained in time
order. Each happening becomes one model input event at a *distinct* nanosecond (a
happening due at or before the previous step runs 1 ns after it), so every step of the
run has its own timestamp and the traces written from it have one unambiguous order.
The model decides what the drivers do (its actions); the simulation only reacts to them
the way the world would: a pushed request wakes the backend thread, a consumed request
starts a disk I/O with a sampled service time, a pushed response raises the frontend's
interrupt, a consumed response frees a slot of the job's queue. An event the model
refuses (illegal in the machine's state, e.g. the backend thread waking on a
disconnected ring) is dropped: the model leaves its state unchanged in that case.

Nothing here does I/O; randomness comes from one seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from blktrace_xen.errors import FrontendProtocolError, ModelUsageError
from blktrace_xen.model.events import (
    BackComplete,
    BackConsume,
    FrontConsume,
    FrontSubmit,
    InputEvent,
    RequestConsumed,
    RequestPushed,
    ResponseConsumed,
    ResponsePushed,
    RingKey,
    TargetStarted,
    Violation,
)
from blktrace_xen.model.ring import BLKIF_OP_WRITE, MASK32
from blktrace_xen.model.state import FrontState
from blktrace_xen.model.system import Model, RingSystem, RunResult
from blktrace_xen.synth.workload import JobState, ServiceTime, Workload

# A scenario's control: called at its time with the simulator, returns the model input
# events to feed (their t_ns is replaced by the step's time).
Control = Callable[["Simulator", int], Sequence[InputEvent]]

_ISSUE, _BACK, _DONE, _FRONT, _CONTROL = range(5)


@dataclass(frozen=True, slots=True)
class Step:
    """One model step: the input fed, the actions and violations it produced."""

    t_ns: int
    event: InputEvent | None  # None: the rings were set up (created and mapped)
    actions: tuple[Any, ...]
    violations: tuple[Violation, ...]


@dataclass(slots=True, kw_only=True)
class SimConfig:
    """Everything a run depends on (together with the seed)."""

    rings: dict[RingKey, Workload]
    duration_ns: int
    service: ServiceTime = field(default_factory=ServiceTime)
    backend: str = "linux-default"
    frontend: str = "linux-default"
    nr_ents: int = 32
    wake_ns: int = 20_000  # backend thread wake-up after a notification (mean)
    irq_ns: int = 10_000  # frontend interrupt latency (mean)
    controls: list[tuple[int, Control]] = field(default_factory=list)
    max_steps: int = 2_000_000


@dataclass(slots=True)
class SimResult:
    steps: list[Step]
    result: RunResult
    config: SimConfig
    dropped: int  # events the model refused (illegal in the state at the time)
    end_ns: int


class Simulator:
    """Runs one :class:`SimConfig` with ``numpy.random.default_rng(seed)``."""

    def __init__(self, config: SimConfig, seed: int) -> None:
        if not config.rings:
            raise ModelUsageError("a simulation needs at least one ring")
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.model = Model(backend=config.backend, frontend=config.frontend, nr_ents=config.nr_ents)
        self.steps: list[Step] = []
        self.jobs = {key: JobState(w) for key, w in config.rings.items()}
        self._heap: list[tuple[int, int, int, Any]] = []
        self._n = 0
        self._last_t = -1
        self._back_pending: set[RingKey] = set()
        self._front_pending: set[RingKey] = set()
        self._issue_pending: set[RingKey] = set()
        self._busy: set[int] = set()  # sectors with an I/O in flight (one disk)
        self._seq_io: dict[int, tuple[int, int]] = {}  # seq -> (operation, sector)
        self._id_seq: dict[tuple[RingKey, int], int] = {}
        self.dropped = 0

    # ----------------------------------------------------------------- helpers

    def ring(self, key: RingKey) -> RingSystem:
        return self.model.ring(key)

    def _push(self, t: int, kind: int, payload: Any) -> None:
        self._n += 1
        heapq.heappush(self._heap, (t, self._n, kind, payload))

    def _jitter(self, mean: int) -> int:
        return max(1, int(self.rng.exponential(mean)))

    def _arm_issue(self, key: RingKey, t: int) -> None:
        if key not in self._issue_pending and t < self.config.duration_ns:
            self._issue_pending.add(key)
            self._push(t, _ISSUE, key)

    def _arm_back(self, key: RingKey, t: int) -> None:
        if key not in self._back_pending:
            self._back_pending.add(key)
            self._push(t + self._jitter(self.config.wake_ns), _BACK, key)

    def _arm_front(self, key: RingKey, t: int) -> None:
        if key not in self._front_pending:
            self._front_pending.add(key)
            self._push(t + self._jitter(self.config.irq_ns), _FRONT, key)

    # -------------------------------------------------------------------- feed

    def feed(self, ev: InputEvent) -> Step | None:
        """Feed one event at its own time, bumped to 1 ns after the previous step."""
        t = max(ev.t_ns, self._last_t + 1)
        if t != ev.t_ns:
            ev = replace(ev, t_ns=t)
        model = self.model
        acts = model.actions
        assert acts is not None  # the simulator always records actions
        na, nv = len(acts), len(model.violations)
        try:
            model.feed(ev)
        except FrontendProtocolError:
            self.dropped += 1
            return None
        self._last_t = t
        step = Step(t, ev, tuple(acts[na:]), tuple(model.violations[nv:]))
        self.steps.append(step)
        self._react(step)
        return step

    def _react(self, step: Step) -> None:
        t = step.t_ns
        for a in step.actions:
            if isinstance(a, RequestPushed):
                self._id_seq[(a.ring, a.id)] = a.seq
                if not a.reissue and a.seq not in self._seq_io:
                    self._seq_io[a.seq] = (a.operation, a.sector_number)
                    self._busy.add(a.sector_number)
                self._arm_back(a.ring, t)
            elif isinstance(a, RequestConsumed):
                self._start_io(a, t)
            elif isinstance(a, ResponsePushed):
                self._arm_front(a.ring, t)
            elif isinstance(a, ResponseConsumed):
                self._retire(a, t)

    def _start_io(self, a: RequestConsumed, t: int) -> None:
        be = self.ring(a.ring).backends[a.backend]
        held = be.find(None, a.seq) if a.seq >= 0 else be.find(a.id, None)
        if held is None:  # rejected at once (invalid request): already answered
            return
        done = t + self.config.service.sample(self.rng, a.operation)
        self._push(done, _DONE, (a.ring, a.backend, a.seq, a.id))

    def _retire(self, a: ResponseConsumed, t: int) -> None:
        seq = self._id_seq.pop((a.ring, a.id), None)
        if seq is not None:
            io = self._seq_io.pop(seq, None)
            if io is not None:
                op, sector = io
                self._busy.discard(sector)
                if op == BLKIF_OP_WRITE and a.status == 0:
                    self.jobs[a.ring].written(sector)
        self._arm_issue(a.ring, t + 1)

    # --------------------------------------------------------------- happenings

    def _issue(self, key: RingKey, t: int) -> None:
        self._issue_pending.discard(key)
        sys = self.ring(key)
        fe = sys.frontend
        job = self.jobs[key]
        w = job.workload
        if fe.state is not FrontState.CONNECTED:
            return  # re-armed by the next control step
        outstanding = len(fe.outstanding)
        room = ((fe.req_prod_pvt - fe.rsp_cons) & MASK32) < sys.ring.nr_ents
        if outstanding >= w.iodepth or not room:
            return  # re-armed when a response is consumed
        nxt = job.next_io(self.rng, self._busy)
        if nxt is not None:
            op, sector = nxt
            self.feed(
                FrontSubmit(
                    t_ns=t,
                    ring=key,
                    operation=op,
                    sector_number=sector,
                    nr_sectors=w.nr_sectors,
                    nr_segments=w.nr_segments,
                    data_version=self.model.seq[0],
                )
            )
        self._arm_issue(key, max(t, self._last_t) + job.gap_ns(self.rng))

    def run(self) -> SimResult:
        cfg = self.config
        acts = self.model.actions
        assert acts is not None
        for key in cfg.rings:
            self.ring(key)  # create (and map) every ring at t=0, in a fixed order
            self._arm_issue(key, 1)
        self.steps.append(Step(0, None, tuple(acts), ()))
        self._last_t = 0
        for when, ctl in cfg.controls:
            self._push(when, _CONTROL, ctl)
        heap = self._heap
        while heap and len(self.steps) < cfg.max_steps:
            t, _, kind, payload = heapq.heappop(heap)
            t = max(t, self._last_t + 1)
            if kind == _ISSUE:
                self._issue(payload, t)
            elif kind == _BACK:
                self._back_pending.discard(payload)
                self.feed(BackConsume(t_ns=t, ring=payload))
            elif kind == _FRONT:
                self._front_pending.discard(payload)
                self.feed(FrontConsume(t_ns=t, ring=payload))
            elif kind == _DONE:
                key, backend, seq, rid = payload
                self.feed(
                    BackComplete(
                        t_ns=t,
                        ring=key,
                        backend=backend,
                        seq=seq if seq >= 0 else None,
                        id=None if seq >= 0 else rid,
                    )
                )
            else:
                for ev in payload(self, t):
                    self.feed(replace(ev, t_ns=max(ev.t_ns, t)))
                # The world moves on after a control: threads and jobs run again.
                for key in cfg.rings:
                    self._arm_back(key, self._last_t)
                    self._arm_front(key, self._last_t)
                    self._arm_issue(key, self._last_t + 1)
        result = self.model.finish()
        return SimResult(self.steps, result, cfg, self.dropped, self._last_t)


def timed_actions(step: Step) -> list[tuple[int, Any]]:
    """The step's actions with the nanosecond each is traced at.

    A migration's target host starts within the step that released it (the source's
    last response, its unmap, then TargetStarted and the target's first actions): the
    target's records are dated 1 ns later, so the source's last ones stay before it.
    """
    t = step.t_ns
    out = []
    for a in step.actions:
        if isinstance(a, TargetStarted):
            t += 1
        out.append((t, a))
    return out


def simulate(config: SimConfig, seed: int) -> SimResult:
    """Run ``config`` deterministically for ``seed``."""
    return Simulator(config, seed).run()


__all__ = ["Control", "SimConfig", "SimResult", "Simulator", "Step", "simulate", "timed_actions"]
