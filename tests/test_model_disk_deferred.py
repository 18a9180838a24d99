"""The deferred disk oracle gives exactly the step oracle's verdicts: same violations (all
fields, evidence included), in the same order, and the same disk report."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from blktrace_xen.errors import FrontendProtocolError, ModelUsageError
from blktrace_xen.model.disk_deferred import DeferredDiskOracle
from blktrace_xen.model.events import (
    BackComplete,
    BackConsume,
    BackRespond,
    Bind,
    Disconnect,
    DomainDestroy,
    FrontConsume,
    FrontMutateSlot,
    FrontSubmit,
    Handoff,
    InputEvent,
    Resume,
    Suspend,
    Unbind,
)
from blktrace_xen.model.logic import LOGICS
from blktrace_xen.model.system import Model, RunResult
from tests.test_model_seeds import disconnect_during_io, migrate, save_restore, unbind_rebind

BACKS = sorted(n for n, s in LOGICS.items() if "back" in s.sides)
FRONTS = sorted(n for n, s in LOGICS.items() if "front" in s.sides)


def feed_all(
    events: list[InputEvent], back: str, front: str, mode: str, nr_ents: int = 8
) -> tuple[RunResult, list[str], Model]:
    """Run ``events``; an event a machine rejects is skipped (and noted), as replay does."""
    model = Model(
        backend=back, frontend=front, nr_ents=nr_ents, disk_mode=mode, record_actions=False
    )
    rejected = []
    for ev in events:
        try:
            model.feed(ev)
        except FrontendProtocolError as exc:
            rejected.append(exc.problem)
        except ModelUsageError as exc:
            # A logic moved a machine illegally: the same in both modes.
            rejected.append(repr(exc))
    return model.finish(), rejected, model


def verdict(res: RunResult) -> list[tuple[Any, ...]]:
    return [
        (v.t_ns, v.ring, v.invariant, v.id, v.idx, v.message, list(v.evidence.items()))
        for v in res.violations
    ]


def assert_same(events: list[InputEvent], back: str, front: str, nr_ents: int = 8) -> Model:
    step, rej_step, _ = feed_all(events, back, front, "step", nr_ents)
    deferred, rej_def, model = feed_all(events, back, front, "deferred", nr_ents)
    assert rej_def == rej_step
    assert verdict(deferred) == verdict(step)
    assert deferred.disk == step.disk
    assert deferred.counts == step.counts
    return model


# --------------------------------------------------------------- random workloads

KEY = (1, 51712, 0)


@st.composite
def workloads(draw: st.DrawFn, aligned: bool) -> list[InputEvent]:
    """Random traffic on one ring, with the controls and hostile inputs that make the
    oracle speak: re-binds and resumes (lost writes), slot rewrites (misplaced writes),
    completions in any order (stale reads), invented responses."""
    n = draw(st.integers(1, 60))
    events: list[InputEvent] = []
    for t in range(1, n + 1):
        kind = draw(
            st.sampled_from(
                ["submit"] * 6
                + ["consume"] * 3
                + ["complete"] * 5
                + ["fconsume"] * 3
                + ["mutate"] * 2
                + ["respond", "control"]
            )
        )
        if kind == "submit":
            if aligned:
                sector = 8 * draw(st.integers(0, 3))
                nr = 8 * draw(st.integers(0, 2))
            else:
                sector = draw(st.integers(0, 40))
                nr = draw(st.integers(0, 12))
            op = draw(st.sampled_from([0, 0, 1, 1, 1, 5, 3, 2, 7]))
            events.append(
                FrontSubmit(
                    t_ns=t,
                    ring=KEY,
                    operation=op,
                    sector_number=sector,
                    nr_sectors=nr,
                    id=draw(st.none() | st.integers(0, 7)),
                )
            )
        elif kind == "consume":
            events.append(BackConsume(t_ns=t, ring=KEY))
        elif kind == "complete":
            status = draw(st.sampled_from([0, 0, 0, -1]))
            if draw(st.booleans()):
                events.append(
                    BackComplete(t_ns=t, ring=KEY, seq=draw(st.integers(0, 12)), status=status)
                )
            else:
                events.append(
                    BackComplete(t_ns=t, ring=KEY, id=draw(st.integers(0, 7)), status=status)
                )
        elif kind == "fconsume":
            events.append(FrontConsume(t_ns=t, ring=KEY))
        elif kind == "mutate":
            moved = 8 * draw(st.integers(0, 3)) if aligned else draw(st.integers(0, 30))
            events.append(
                FrontMutateSlot(
                    t_ns=t,
                    ring=KEY,
                    idx=draw(st.integers(0, 12)),
                    sector_number=moved,
                    operation=draw(st.none() | st.sampled_from([0, 1])),
                )
            )
        elif kind == "respond":
            events.append(
                BackRespond(
                    t_ns=t,
                    ring=KEY,
                    id=draw(st.integers(0, 7)),
                    operation=draw(st.sampled_from([0, 1])),
                    status=0,
                )
            )
        else:
            ctl = draw(
                st.sampled_from([Disconnect, Unbind, Bind, Suspend, Resume, DomainDestroy, Handoff])
            )
            if ctl is Disconnect:
                events.append(
                    Disconnect(t_ns=t, ring=KEY, side=draw(st.sampled_from(["back", "front"])))
                )
            else:
                events.append(ctl(t_ns=t, ring=KEY))
    return events


@st.composite
def rounds(draw: st.DrawFn) -> list[InputEvent]:
    """Orderly traffic: batches submitted, some slots rewritten before the backend reads
    them, completions in any order (some missing, some twice), responses consumed, and now
    and then a control event. Overlapping 4 KiB extents on few blocks, so that reads race
    writes."""
    events: list[InputEvent] = []
    t = 0
    seq = 0
    published = 0

    def tick() -> int:
        nonlocal t
        t += 1
        return t

    for _ in range(draw(st.integers(1, 8))):
        k = draw(st.integers(1, 6))
        for _ in range(k):
            events.append(
                FrontSubmit(
                    t_ns=tick(),
                    ring=KEY,
                    operation=draw(st.sampled_from([0, 0, 1, 1, 1, 5])),
                    sector_number=8 * draw(st.integers(0, 3)),
                    nr_sectors=8 * draw(st.integers(1, 2)),
                )
            )
        batch = list(range(seq, seq + k))
        seq += k
        published += k
        if draw(st.integers(0, 3)) == 0:
            events.append(
                FrontMutateSlot(
                    t_ns=tick(),
                    ring=KEY,
                    idx=published - 1 - draw(st.integers(0, k - 1)),
                    sector_number=8 * draw(st.integers(0, 3)),
                    operation=draw(st.none() | st.sampled_from([0, 1])),
                )
            )
        events.append(BackConsume(t_ns=tick(), ring=KEY))
        done = draw(st.permutations(batch))
        done = done[: draw(st.integers(0, len(done)))]
        done += draw(st.lists(st.sampled_from(batch), max_size=1))
        for q in done:
            events.append(
                BackComplete(
                    t_ns=tick(), ring=KEY, seq=q, status=draw(st.sampled_from([0, 0, 0, -1]))
                )
            )
        events.append(FrontConsume(t_ns=tick(), ring=KEY))
        if draw(st.integers(0, 3)) == 0:
            ctl = draw(
                st.sampled_from([Disconnect, Unbind, Bind, Suspend, Resume, DomainDestroy, Handoff])
            )
            events.append(ctl(t_ns=tick(), ring=KEY))
    return events


@settings(derandomize=True, max_examples=300, deadline=None)
@given(events=rounds(), back=st.sampled_from(BACKS), front=st.sampled_from(FRONTS))
def test_deferred_matches_step_on_orderly_rounds(
    events: list[InputEvent], back: str, front: str
) -> None:
    assert_same(events, back, front, 8)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    events=workloads(aligned=True),
    back=st.sampled_from(BACKS),
    front=st.sampled_from(FRONTS),
    nr_ents=st.sampled_from([4, 8]),
)
def test_deferred_matches_step_on_aligned_workloads(
    events: list[InputEvent], back: str, front: str, nr_ents: int
) -> None:
    assert_same(events, back, front, nr_ents)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    events=workloads(aligned=False),
    back=st.sampled_from(BACKS),
    front=st.sampled_from(FRONTS),
)
def test_deferred_matches_step_on_unaligned_workloads(
    events: list[InputEvent], back: str, front: str
) -> None:
    assert_same(events, back, front)


# ------------------------------------------------------------------ seed scenarios


def test_deferred_matches_step_on_the_seed_scenarios() -> None:
    cases = [
        (disconnect_during_io(False), "xbdback-2005-immediate", "linux-default"),
        (disconnect_during_io(True), "xbdback-2005-refcount", "linux-default"),
        (unbind_rebind(2), "blkback-rebind-init", "linux-default"),
        (unbind_rebind(0, complete_after_bind=False), "blkback-rebind-attach", "linux-default"),
        (save_restore(), "linux-default", "xbd-2006-norecovery"),
        (save_restore(), "linux-default", "xbd-2006-recovery-as-posted"),
        (save_restore(), "linux-default", "xbd-2006-recovery-fixed"),
        (migrate(True), "blkback-2008-remove-nowait", "linux-default"),
        (migrate(False), "blkback-2008-remove-wait", "linux-default"),
    ]
    spoke = 0
    for events, back, front in cases:
        assert back in LOGICS and front in LOGICS
        step, _, _ = feed_all(events, back, front, "step", 32)
        spoke += step.disk is not None and bool(step.disk.problems)
        spoke += any(v.invariant in {"stale-read", "duplicated-write"} for v in step.violations)
        assert_same(events, back, front, 32)
    assert spoke  # the seeds make the oracle speak, so the comparison is not vacuous


# ---------------------------------------------------------------- hand-made cases


def w(t: int, sector: int, nr: int = 8) -> FrontSubmit:
    return FrontSubmit(t_ns=t, ring=KEY, operation=1, sector_number=sector, nr_sectors=nr)


def r(t: int, sector: int, nr: int = 8) -> FrontSubmit:
    return FrontSubmit(t_ns=t, ring=KEY, operation=0, sector_number=sector, nr_sectors=nr)


def test_aligned_traffic_is_judged_in_bulk_and_unaligned_by_replaying_the_log() -> None:
    base: list[InputEvent] = [
        w(1, 0),
        BackConsume(t_ns=2, ring=KEY),
        BackComplete(t_ns=3, ring=KEY, seq=0),
        FrontConsume(t_ns=4, ring=KEY),
    ]
    _, _, model = feed_all(base, "linux-default", "linux-default", "deferred")
    assert isinstance(model.disk, DeferredDiskOracle)
    assert model.disk._counts is not None  # the numpy pass answered
    odd = [*base, w(5, 3, 2), BackConsume(t_ns=6, ring=KEY)]
    _, _, model = feed_all(odd, "linux-default", "linux-default", "deferred")
    assert isinstance(model.disk, DeferredDiskOracle)
    assert model.disk._counts is None  # replayed through the step oracle
    assert_same(odd, "linux-default", "linux-default")


def test_stale_read_and_lost_write_in_bulk() -> None:
    # Write 0 is acknowledged; a read issued after it gets the media of before (the disk
    # wrote it to the wrong place): stale read, and at the end a lost write.
    events: list[InputEvent] = [
        w(1, 0),
        BackConsume(t_ns=2, ring=KEY),
        FrontMutateSlot(t_ns=3, ring=KEY, idx=0, sector_number=8),
    ]
    events += [
        BackComplete(t_ns=4, ring=KEY, seq=0),
        FrontConsume(t_ns=5, ring=KEY),
        r(6, 0),
        BackConsume(t_ns=7, ring=KEY),
        BackComplete(t_ns=8, ring=KEY, seq=1),
        FrontConsume(t_ns=9, ring=KEY),
    ]
    # The mutation came after the consume, so the backend wrote where it was asked; redo
    # it before the consume to misplace the write.
    events[1], events[2] = events[2], events[1]
    model = assert_same(events, "linux-default", "linux-default")
    assert isinstance(model.disk, DeferredDiskOracle) and model.disk._counts is not None
    res, _, _ = feed_all(events, "linux-default", "linux-default", "deferred")
    assert [v.invariant for v in res.violations] == [
        "slot-mutated",
        "misplaced-write",
        "stale-read",
        "lost-write",
    ]
