"""Drive frontends and backends from a time-ordered list of input events.

:class:`RingSystem` is one ring: one frontend, the backend instances that have served it,
the current shared page, and the checks that need both sides (``implausible-producer``).
:class:`Model` holds one RingSystem per ring key and is what the synthesizer feeds event by
event; :func:`run` feeds a whole iterable and returns a :class:`RunResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from blktrace_xen.errors import ModelUsageError
from blktrace_xen.model.backend import Backend
from blktrace_xen.model.disk import DiskOracle, DiskReport
from blktrace_xen.model.disk_deferred import Ctx, DeferredDiskOracle
from blktrace_xen.model.events import (
    BackComplete,
    BackConsume,
    BackRespond,
    Bind,
    Disconnect,
    DomainDestroy,
    FrontConsume,
    FrontMutateSlot,
    FrontSetReqProd,
    FrontSubmit,
    Handoff,
    InputEvent,
    Resume,
    RingKey,
    Suspend,
    TargetStarted,
    Unbind,
    Violation,
)
from blktrace_xen.model.frontend import Frontend
from blktrace_xen.model.logic import (
    BackendLogic,
    FrontendLogic,
    resolve_backend,
    resolve_frontend_factory,
)
from blktrace_xen.model.ring import MASK32, SharedRing
from blktrace_xen.model.state import BackState, FrontState


def ring_name(key: RingKey) -> str:
    return f"vbd/{key[0]}/{key[1]}/q{key[2]}"


class RingSystem:
    """One ring: the frontend, its backend instances (``backends[-1]`` is current)."""

    def __init__(
        self,
        key: RingKey,
        *,
        backend: BackendLogic,
        frontend: FrontendLogic,
        nr_ents: int = 32,
        start_idx: int = 0,
        disk: DiskOracle | None,
        actions: list[Any] | None,
        violations: list[Violation],
        seq: list[int],
    ) -> None:
        self.key = key
        self.ring_name = ring_name(key)
        self.nr_ents = nr_ents
        self.ring = SharedRing(nr_ents, start_idx)
        self.disk = disk
        # Deferred oracle: the hot paths append to its log themselves (a method call per
        # input would cost as much as the logging).
        self.deferred = disk if isinstance(disk, DeferredDiskOracle) else None
        self.disk_log: list[int] | None = self.deferred.log if self.deferred is not None else None
        self.disk_ctx: list[Ctx | None] = self.deferred.ctx if self.deferred is not None else []
        self.actions = actions
        self.violations = violations
        self.seq = seq  # shared submission counter: [next seq]
        self.backend_logic = backend
        self.producer_bad = False
        self.backends: list[Backend] = []
        self.frontend = Frontend(self, frontend, start_idx)
        # Input type -> bound handler: one call per event on the hot path.
        self.handlers: dict[type, Callable[[Any], None]] = {
            cls: getattr(self, name) for cls, name in _HANDLERS.items()
        }
        self.handlers[FrontSubmit] = self.frontend.submit
        first = self._new_backend()
        first.map_at(0, start_idx)

    def _new_backend(self) -> Backend:
        be = Backend(self, self.backend_logic, len(self.backends))
        self.backends.append(be)
        return be

    @property
    def backend(self) -> Backend:
        return self.backends[-1]

    def violate(  # noqa: PLR0917
        self,
        t_ns: int,
        invariant: str,
        req_id: int | None,
        idx: int | None,
        message: str,
        evidence: dict[str, Any],
    ) -> None:
        self.violations.append(
            Violation(
                t_ns=t_ns,
                ring=self.key,
                invariant=invariant,
                id=req_id,
                idx=idx,
                message=message,
                evidence=evidence,
            )
        )

    def producer_violation(self, t_ns: int) -> None:
        """req_prod - rsp_prod > nr_ents on the current page: reported when it starts."""
        ring = self.ring
        bad = ((ring.req_prod - ring.rsp_prod) & MASK32) > ring.nr_ents
        if bad and not self.producer_bad:
            self.violate(
                t_ns,
                "implausible-producer",
                None,
                ring.req_prod,
                f"req_prod {ring.req_prod} - rsp_prod {ring.rsp_prod} > {ring.nr_ents}",
                {"req_prod": ring.req_prod, "rsp_prod": ring.rsp_prod},
            )
        self.producer_bad = bad

    def start_target(self, t_ns: int) -> None:
        """Migration: a fresh ring and backend on the target; the frontend resumes there."""
        self._fresh_ring_and_backend(t_ns)
        if self.actions is not None:
            self.actions.append(
                TargetStarted(t_ns=t_ns, ring=self.key, backend=self.backend.instance)
            )
        if self.frontend.state is FrontState.SUSPENDED:
            self.frontend.resume(t_ns, "Handoff")

    def _fresh_ring_and_backend(self, t_ns: int) -> None:
        self.ring = SharedRing(self.nr_ents, 0)
        self.producer_bad = False
        be = self._new_backend()
        be.ring = self.ring
        be.map_at(t_ns, 0)

    # ---------------------------------------------------------------- dispatch

    def feed(self, ev: InputEvent) -> None:
        handler = self.handlers.get(type(ev))
        if handler is None:
            raise ModelUsageError(f"not a model input event: {ev!r}")
        handler(ev)

    def _front_submit(self, ev: FrontSubmit) -> None:
        self.frontend.submit(ev)

    def _back_consume(self, ev: BackConsume) -> None:
        self.backend.consume(ev.t_ns)

    def _front_consume(self, ev: FrontConsume) -> None:
        self.frontend.consume(ev.t_ns)

    def _back_complete(self, ev: BackComplete) -> None:
        seq = ev.seq
        if seq is not None and ev.backend is None:
            for be in self.backends:
                req = be.by_seq.get(seq)
                if req is not None:
                    be.complete(ev.t_ns, req, ev.status)
                    return
            raise self.backend.illegal("BackComplete", f"no backend has seq {seq} in flight")
        if ev.backend is not None:
            if not 0 <= ev.backend < len(self.backends):
                raise self.backend.illegal("BackComplete", f"no backend #{ev.backend}")
            candidates = [self.backends[ev.backend]]
        else:
            candidates = self.backends
        for be in candidates:
            req = be.find(ev.id, ev.seq)
            if req is not None:
                be.complete(ev.t_ns, req, ev.status)
                return
        what = f"seq {ev.seq}" if ev.seq is not None else f"id {ev.id}"
        raise self.backend.illegal("BackComplete", f"no backend has {what} in flight")

    def _back_respond(self, ev: BackRespond) -> None:
        self.backend.respond_raw(ev.t_ns, ev.id, ev.operation, ev.status)

    def _disconnect(self, ev: Disconnect) -> None:
        if ev.side == "front":
            self.frontend.close(ev.t_ns, "Disconnect")
        self.backend.control(ev.t_ns, "Disconnect")

    def _unbind(self, ev: Unbind) -> None:
        self.backend.control(ev.t_ns, "Unbind")

    def _bind(self, ev: Bind) -> None:
        be = self.backend
        if be.state is BackState.DISCONNECTED:
            be.control(ev.t_ns, "Bind")
        elif be.state in (BackState.DRAINING, BackState.GONE):
            # A new instance while the old one may still drain onto the same page.
            new = self._new_backend()
            new.control(ev.t_ns, "Bind")
        else:
            be.check_legal("Bind")

    def _suspend(self, ev: Suspend) -> None:
        self.frontend.suspend(ev.t_ns)

    def _resume(self, ev: Resume) -> None:
        fe = self.frontend
        fe.check_legal("Resume")
        # Save/restore: the old domain was destroyed, so was its backend instance.
        for be in self.backends:
            if be.state is not BackState.GONE:
                be.control(ev.t_ns, "DomainDestroy")
        self._fresh_ring_and_backend(ev.t_ns)
        fe.resume(ev.t_ns, "Resume")

    def _domain_destroy(self, ev: DomainDestroy) -> None:
        fe = self.frontend
        if fe.state is not FrontState.CLOSED:
            fe.close(ev.t_ns, "DomainDestroy")
        for be in self.backends:
            if be.state is not BackState.GONE:
                be.control(ev.t_ns, "DomainDestroy")

    def _handoff(self, ev: Handoff) -> None:
        self.frontend.check_legal("Handoff")
        self.backend.control(ev.t_ns, "Handoff")

    def _set_req_prod(self, ev: FrontSetReqProd) -> None:
        self.frontend.set_req_prod(ev.t_ns, ev.req_prod)

    def _mutate_slot(self, ev: FrontMutateSlot) -> None:
        self.frontend.mutate_slot(ev)

    def final_state(self) -> RingFinal:
        fe = self.frontend
        ring = self.ring
        return RingFinal(
            front_state=fe.state.value,
            back_states=[be.state.value for be in self.backends],
            req_prod=ring.req_prod,
            req_event=ring.req_event,
            rsp_prod=ring.rsp_prod,
            rsp_event=ring.rsp_event,
            req_prod_pvt=fe.req_prod_pvt,
            rsp_cons=fe.rsp_cons,
            req_cons=self.backend.req_cons,
            rsp_prod_pvt=self.backend.rsp_prod_pvt,
            outstanding=len(fe.outstanding),
            inflight=sum(be.inflight_count for be in self.backends),
        )


_HANDLERS: dict[type, str] = {
    FrontSubmit: "_front_submit",
    BackConsume: "_back_consume",
    BackComplete: "_back_complete",
    FrontConsume: "_front_consume",
    Disconnect: "_disconnect",
    Unbind: "_unbind",
    Bind: "_bind",
    Suspend: "_suspend",
    Resume: "_resume",
    DomainDestroy: "_domain_destroy",
    Handoff: "_handoff",
    FrontSetReqProd: "_set_req_prod",
    FrontMutateSlot: "_mutate_slot",
    BackRespond: "_back_respond",
}


@dataclass(slots=True)
class RingFinal:
    """A ring's state when the run ended."""

    front_state: str
    back_states: list[str]
    req_prod: int
    req_event: int
    rsp_prod: int
    rsp_event: int
    req_prod_pvt: int
    rsp_cons: int
    req_cons: int
    rsp_prod_pvt: int
    outstanding: int
    inflight: int


@dataclass(slots=True)
class RunResult:
    violations: list[Violation]
    actions: list[Any]
    rings: dict[RingKey, RingFinal]
    disk: DiskReport | None
    counts: dict[str, int] = field(default_factory=dict)

    def invariants(self) -> set[str]:
        """The ids of the invariants broken in this run."""
        return {v.invariant for v in self.violations}


DISK_MODES = ("step", "deferred")


class Model:
    """Every ring of a run. Feed events one by one (:meth:`feed`), then :meth:`finish`.

    Actions and violations accumulate in :attr:`actions` / :attr:`violations`; a caller
    driving the model step by step (the synthesizer) reads what a step added from the
    length before the step. All rings share one disk oracle (pass one model per disk).

    ``disk_mode="deferred"`` judges the disk oracle's inputs in bulk at :meth:`finish`
    (:mod:`blktrace_xen.model.disk_deferred`): the same violations, in the same places of
    :attr:`violations`, but the disk ones appear only at ``finish()``. Replay uses it; a
    step-by-step caller keeps the default ``"step"``.
    """

    def __init__(
        self,
        *,
        backend: str | BackendLogic = "linux-default",
        frontend: str | FrontendLogic = "linux-default",
        nr_ents: int = 32,
        start_idx: int = 0,
        disk: DiskOracle | None = None,
        verify_data: bool = True,
        record_actions: bool = True,
        disk_mode: str = "step",
    ) -> None:
        self.backend_logic = resolve_backend(backend)
        self.frontend_factory = resolve_frontend_factory(frontend)
        self.nr_ents = nr_ents
        self.start_idx = start_idx
        if disk_mode not in DISK_MODES:
            raise ModelUsageError(
                f"disk_mode must be one of {', '.join(DISK_MODES)}: {disk_mode!r}"
            )
        if disk is None and verify_data:
            disk = DeferredDiskOracle() if disk_mode == "deferred" else DiskOracle()
        self.disk = disk
        self.actions: list[Any] | None = [] if record_actions else None
        self.violations: list[Violation] = []
        self.rings: dict[RingKey, RingSystem] = {}
        self.seq = [0]
        self.events = 0
        self._last_key: RingKey | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {}

    def ring(self, key: RingKey) -> RingSystem:
        sys = self.rings.get(key)
        if sys is None:
            sys = RingSystem(
                key,
                backend=self.backend_logic,
                frontend=self.frontend_factory(),
                nr_ents=self.nr_ents,
                start_idx=self.start_idx,
                disk=self.disk,
                actions=self.actions,
                violations=self.violations,
                seq=self.seq,
            )
            self.rings[key] = sys
        return sys

    def feed(self, ev: InputEvent) -> None:
        key = ev.ring
        if key != self._last_key:
            self._handlers = self.ring(key).handlers
            self._last_key = key
        self.events += 1
        handler = self._handlers.get(type(ev))
        if handler is None:
            raise ModelUsageError(f"not a model input event: {ev!r}")
        handler(ev)

    def finish(self) -> RunResult:
        report = None
        if self.disk is not None:
            if isinstance(self.disk, DeferredDiskOracle):
                problems = self.disk.finish(self.violations)
            else:
                problems = self.disk.final_check()
            key = next(iter(self.rings), None)
            for p in problems:
                self.violations.append(
                    Violation(
                        t_ns=max((v.t_ns for v in self.violations), default=0),
                        ring=key or (0, 0, 0),
                        invariant=p.invariant,
                        id=None,
                        idx=None,
                        message=p.message,
                        evidence={"seq": p.seq, **p.evidence},
                    )
                )
            report = self.disk.report(problems)
        counts: dict[str, int] = {"events": self.events, "submitted": self.seq[0]}
        for v in self.violations:
            counts[f"violation:{v.invariant}"] = counts.get(f"violation:{v.invariant}", 0) + 1
        return RunResult(
            violations=self.violations,
            actions=self.actions if self.actions is not None else [],
            rings={k: s.final_state() for k, s in self.rings.items()},
            disk=report,
            counts=counts,
        )


def run(
    events: Iterable[InputEvent],
    *,
    backend: str | BackendLogic = "linux-default",
    frontend: str | FrontendLogic = "linux-default",
    nr_ents: int = 32,
    start_idx: int = 0,
    disk: DiskOracle | None = None,
    verify_data: bool = True,
    record_actions: bool = True,
    disk_mode: str = "step",
) -> RunResult:
    """Feed ``events`` (time-ordered) to a fresh :class:`Model` and return the result.

    ``backend``/``frontend``: a registry name (:data:`~blktrace_xen.model.logic.LOGICS`),
    ``path.py:ClassName``, or a logic object. ``start_idx``: the ring's indices at the
    start (a trace that begins mid-life). ``verify_data=False`` skips the disk oracle and
    ``record_actions=False`` the actions, for speed (replay verdicts need only violations).
    ``disk_mode="deferred"``: judge the disk oracle in bulk at the end (see :class:`Model`).
    """
    model = Model(
        backend=backend,
        frontend=frontend,
        nr_ents=nr_ents,
        start_idx=start_idx,
        disk=disk,
        verify_data=verify_data,
        record_actions=record_actions,
        disk_mode=disk_mode,
    )
    # Model.feed, inlined: the per-event call is a tenth of a replay's time.
    last_key: RingKey | None = None
    handlers: dict[type, Callable[[Any], None]] = {}
    n = 0
    try:
        for ev in events:
            key = ev.ring
            if key != last_key:
                handlers = model.ring(key).handlers
                last_key = key
            n += 1
            handler = handlers.get(type(ev))
            if handler is None:
                raise ModelUsageError(f"not a model input event: {ev!r}")
            handler(ev)
    finally:
        model.events += n
    return model.finish()
