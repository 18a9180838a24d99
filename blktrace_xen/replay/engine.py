"""Run one logic over a :class:`~blktrace_xen.replay.inputs.ReplayInput`.

The loop feeds the pre-built events to a fresh :class:`~blktrace_xen.model.system.Model`.
Two kinds of step depend on what the logic did before, so they are resolved here:

* a **completion** of traced request *r* becomes ``BackComplete(seq=s)`` where *s* is the
  sequence number the model gave *r* when it was submitted (a logic may have refused a
  submission, which shifts later numbers). If no backend of this logic holds *s* (it never
  consumed it, or threw it away), there was no disk I/O to finish: the step is skipped
  and counted.
* a traced **response that answers no traced request** is skipped when this logic has
  already produced a response at that ring index itself (a backend rejecting a garbage
  slot does so at once); else it completes the backend request in flight with that id
  (a slot the backend read as a request); else it is a response the backend invented
  (``BackRespond``, a misbehaving backend).

An event the logic's state machines reject (``FrontendProtocolError``: e.g. a consume
on a ring this logic already tore down) leaves the model unchanged; it is skipped and
reported, never hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blktrace_xen.errors import FrontendProtocolError
from blktrace_xen.model.backend import Backend
from blktrace_xen.model.events import (
    BackComplete,
    BackRespond,
    Violation,
)
from blktrace_xen.model.frontend import Frontend
from blktrace_xen.model.logic import BackendLogic, FrontendLogic
from blktrace_xen.model.ring import MASK32
from blktrace_xen.model.system import Model, RingSystem, RunResult
from blktrace_xen.replay.inputs import (
    K_COMPLETE,
    K_CONSUME,
    K_FRONT_CONSUME,
    K_RESPONSE,
    K_SUBMIT,
    ReplayInput,
)

MAX_SKIPPED_KEPT = 50
_ILLEGAL = "illegal in this logic's state"
# What a skipped row is called in the report (rows of other kinds: their event's class).
_EVENT_NAMES = {
    K_SUBMIT: "FrontSubmit",
    K_CONSUME: "BackConsume",
    K_FRONT_CONSUME: "FrontConsume",
    K_COMPLETE: "response",
    K_RESPONSE: "response",
}


@dataclass(slots=True, kw_only=True)
class Skipped:
    t_ns: int
    ring: str
    event: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"t_ns": self.t_ns, "ring": self.ring, "event": self.event, "reason": self.reason}


@dataclass(slots=True, kw_only=True)
class EngineResult:
    result: RunResult
    skipped: list[Skipped] = field(default_factory=list)  # the first MAX_SKIPPED_KEPT
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    fed: int = 0
    elapsed_s: float = 0.0
    completed_at_end: int = 0
    end_ns: int = 0


def _id_holder(sys: RingSystem, rid: int) -> bool:
    return any(be.find(rid, None) is not None for be in sys.backends)


def run_logic(
    inp: ReplayInput,
    *,
    backend: str | BackendLogic,
    frontend: str | FrontendLogic,
    verify_data: bool = True,
    complete_at_end: bool = True,
) -> EngineResult:
    """Replay ``inp`` under one backend/frontend logic pair.

    ``complete_at_end``: disk I/O this logic still has in flight when the trace ends is
    completed 1 ns after the last traced event, in issue order (see
    :func:`_complete_at_end`).
    """
    # Verdicts are read at the end, so the disk oracle may judge in bulk (same violations).
    model = Model(
        backend=backend,
        frontend=frontend,
        verify_data=verify_data,
        record_actions=False,
        disk_mode="deferred",
    )
    # Each ring starts at the geometry and index the trace shows for it.
    for key, (nr_ents, start) in inp.ring_params.items():
        model.nr_ents = nr_ents
        model.start_idx = start
        model.ring(key)
    seq_box = model.seq
    seq_of: dict[int, int] = {}
    skipped: list[Skipped] = []
    by_reason: dict[str, int] = {}
    feed = model.feed
    kinds = inp.kinds
    refs = inp.refs
    args = inp.args
    rings = inp.rings
    times = inp.times

    def skip(i: int, event: str, reason: str, detail: str) -> None:
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if len(skipped) < MAX_SKIPPED_KEPT:
            key = rings[i]
            skipped.append(
                Skipped(
                    t_ns=times[i],
                    ring=f"vbd/{key[0]}/{key[1]}/q{key[2]}",
                    event=event,
                    reason=f"{reason}: {detail}" if detail else reason,
                )
            )

    t0 = time.perf_counter()
    fed = 0
    # Model.feed inlined, as model.system.run does, on the input's columns (no event
    # objects): the ring's machines are looked up only when the ring changes (the ring
    # keys are shared objects, so `is` suffices).
    last_key: object = None
    handlers: dict[type, Callable[[Any], None]] = {}
    backends: list[Backend] = []
    fe: Frontend  # set with the first ring
    i = -1
    for kind, t, key, arg in zip(kinds, times, rings, args, strict=True):
        i += 1
        if key is not last_key:
            sys = model.ring(key)
            handlers = sys.handlers
            backends = sys.backends  # the RingSystem appends to this very list
            fe = sys.frontend  # one per ring, for good
            last_key = key
        try:
            # The four frequent inputs go straight to their machine, as RingSystem's
            # handlers would send them (no event object, a call less per event).
            if kind == K_SUBMIT:
                s = seq_box[0]
                fe.submit_io(t, arg[0], arg[1], arg[2], arg[3], arg[4])
                if seq_box[0] != s:
                    seq_of[refs[i]] = s
            elif kind == K_COMPLETE:
                s2 = seq_of.get(refs[i])
                if s2 is None:
                    skip(i, "BackComplete", "request not submitted under this logic", "")
                    continue
                # RingSystem._back_complete for BackComplete(seq=s2), inlined: building
                # the event object and the extra call were a fifth of a replay's time.
                for be in backends:
                    req = be.by_seq.get(s2)
                    if req is not None:
                        break
                else:
                    skip(i, "BackComplete", "no I/O of this logic to complete", f"seq {s2}")
                    continue
                try:
                    be.complete(t, req, arg[1])
                except FrontendProtocolError as exc:
                    if not exc.problem.startswith("no backend has"):
                        raise
                    skip(i, "BackComplete", "no I/O of this logic to complete", f"seq {s2}")
                    continue
            elif kind == K_FRONT_CONSUME:
                fe.consume(t)
            elif kind == K_CONSUME:
                backends[-1].consume(t)
            elif kind == K_RESPONSE:
                op, status, idx, _, rid = arg[:5]
                idx = -1 if idx is None else idx
                sys = model.ring(key)
                ahead = (idx - sys.ring.rsp_prod) & MASK32 if idx >= 0 else 0
                if idx >= 0 and ahead >= 1 << 31:
                    skip(i, "response", "already produced by this logic", f"idx {idx}")
                    continue
                if _id_holder(sys, rid):
                    feed(BackComplete(t_ns=t, ring=key, id=rid, status=status))
                else:
                    feed(BackRespond(t_ns=t, ring=key, id=rid, operation=op, status=status))
            else:
                ev = inp.event(i)
                handlers[type(ev)](ev)
            fed += 1
        except FrontendProtocolError as exc:
            skip(i, _EVENT_NAMES.get(kind) or type(inp.event(i)).__name__, _ILLEGAL, exc.problem)
    model.events += fed
    end_ns = (times[-1] + 1) if times else 0
    at_end = _complete_at_end(model, end_ns) if complete_at_end else 0
    result = model.finish()
    return EngineResult(
        result=result,
        skipped=skipped,
        skipped_by_reason=by_reason,
        fed=fed,
        elapsed_s=time.perf_counter() - t0,
        completed_at_end=at_end,
        end_ns=end_ns,
    )


def _complete_at_end(model: Model, end_ns: int) -> int:
    """Complete every real request still in flight at a backend, 1 ns after the trace.

    A trace often ends while I/O is in flight, and where a logic wrote into an unmapped
    ring (seed 000) or a torn-down source (seed 004) the completion left no trace record
    at all: the host crashed, or the response went nowhere. A disk finishes what it was
    given, and the seeds' failures happen exactly there, so each logic sees those
    completions at the end; the verdict says how many (caveat ``completed-at-end``).
    """
    done = 0
    for key, sys in model.rings.items():
        pending = sorted((seq, be.instance) for be in sys.backends for seq in be.by_seq)
        for seq, instance in pending:
            try:
                model.feed(BackComplete(t_ns=end_ns, ring=key, seq=seq, backend=instance))
            except FrontendProtocolError:
                continue
            done += 1
    return done


def flag_lost(violations: list[Violation], windows: list[tuple[int, int]]) -> list[bool]:
    """For each violation: does it fall in a window where trace records were lost?"""
    return [any(a <= v.t_ns <= b for a, b in windows) for v in violations]


__all__ = ["EngineResult", "Skipped", "flag_lost", "run_logic"]
