"""Steady windows replayed in bulk leave exactly what the event-by-event replay leaves.

:mod:`blktrace_xen.replay.bulk` writes the outcome of a stretch of plain traffic directly
instead of replaying it event by event. Here both ways run on the replay corpus (with
every idle-to-idle stretch made a window, however short), on the real Xen 4.17 ring
captures, and on random multi-ring traffic with anomalies planted at random places
(error statuses, flushes, lost responses, repeated requests, ids reused too early, a ring
too small, a rebind, a disconnect), under every registered logic, oracle on and off.
Compared: the verdict (``outcome()``) and the whole model state after the run (every
slot, index, id list, in-flight table, oracle record and violation context), so a window
that left anything different behind fails even where the verdict happens to agree.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from blktrace_xen import schema
from blktrace_xen.model.disk_deferred import DeferredDiskOracle
from blktrace_xen.model.ring import Req
from blktrace_xen.model.system import Model
from blktrace_xen.replay import bulk, engine
from blktrace_xen.replay.bulk_plan import build_plan
from blktrace_xen.replay.inputs import K_COMPLETE, K_SUBMIT, ReplayInput, build_input
from blktrace_xen.streams import Streams
from blktrace_xen.streams.assemble import assemble
from blktrace_xen.streams.load import load_streams
from tests.rxring import rxring_to_pcapng
from tests.test_replay_inline import CASES, PAIRS, _damaged, _load


class _Recorded(Model):
    made: list[Model] = []  # noqa: RUF012 - a test's record of the models it ran

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _Recorded.made.append(self)


@pytest.fixture
def windows_applied(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Record the models replay builds, and count the windows applied in bulk."""
    count = [0]
    real = bulk.apply

    def counting(model: Model, tpl: Any) -> bool:
        done = real(model, tpl)
        count[0] += done
        return done

    monkeypatch.setattr(engine, "Model", _Recorded)
    monkeypatch.setattr(engine, "bulk_apply", counting)
    _Recorded.made.clear()
    yield count


def _req(r: object) -> object:
    return tuple(getattr(r, a) for a in Req.__slots__) if isinstance(r, Req) else r


def _deep(value: Any) -> Any:
    if isinstance(value, dict):
        return sorted((k, _deep(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (list, tuple)):
        return [_deep(v) for v in value]
    if isinstance(value, Req):
        return _req(value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return (type(value).__name__, _deep(vars(value)))
    return value


def model_state(model: Model) -> list[Any]:
    """Everything a replay leaves in the model, as plain values."""
    out: list[Any] = [model.seq[0], model.events, [repr(v) for v in model.violations]]
    for key, sys in model.rings.items():
        ring, fe = sys.ring, sys.frontend
        logic = _deep(fe.logic)
        out.append(
            [
                key,
                sys.producer_bad,
                [ring.req_prod, ring.rsp_prod, ring.req_event, ring.rsp_event],
                [_req(r) for r in ring.slot_req],
                list(ring.slot_rsp),
                [fe.state, fe.req_prod_pvt, fe.rsp_cons, _deep(fe.outstanding), _deep(fe.answered)],
                logic,
                [
                    [
                        be.instance,
                        be.state,
                        be.mapped,
                        be.req_cons,
                        be.rsp_prod_pvt,
                        _deep(be.inflight),
                        _deep(be.by_seq),
                        _deep(be.overflow),
                        be.refcnt,
                        be.goal,
                        be.after_handoff,
                    ]
                    for be in sys.backends
                ],
            ]
        )
    disk = model.disk
    if isinstance(disk, DeferredDiskOracle):
        out.append(disk.records())
        out.append([disk.context(k) for k in range(len(disk.ctx))])
    return out


def compare(
    inp: ReplayInput, pairs: list[tuple[str, str]] = PAIRS, at_end: tuple[bool, ...] = (True,)
) -> None:
    for (back, front), verify, end in itertools.product(pairs, (True, False), at_end):
        runs = []
        for use_bulk in (True, False):
            _Recorded.made.clear()
            res = engine.run_logic(
                inp,
                backend=back,
                frontend=front,
                verify_data=verify,
                bulk=use_bulk,
                complete_at_end=end,
            )
            (model,) = _Recorded.made
            runs.append((res.outcome(), model_state(model)))
        assert runs[0][0] == runs[1][0], (back, front, verify, end, "verdict")
        assert runs[0][1] == runs[1][1], (back, front, verify, end, "model state")


def _every_stretch(inp: ReplayInput) -> ReplayInput:
    inp._plan = build_plan(inp, min_rows=1)
    return inp


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_cases_bulk_equals_event_by_event(case: Any, windows_applied: list[int]) -> None:
    streams = _load(case)
    compare(_every_stretch(build_input(streams)))
    compare(_every_stretch(build_input(_damaged(streams))))


def test_the_corpus_comparison_runs_windows(windows_applied: list[int]) -> None:
    compare(_every_stretch(build_input(_load(CASES[0]))))
    assert windows_applied[0] > 0


# ------------------------------------------------------------------ random traffic

RINGS = [(1, 51712, 0), (2, 51712, 0), (1, 51728, 0)]


def traffic(seed: int) -> Streams:
    """Bursts on 1-3 rings (on a common 120 µs grid, so that all rings go idle together
    now and then), with anomalies planted at random places."""
    rng = np.random.default_rng(seed)
    n_rings = int(rng.integers(1, 4))
    rare = float(rng.choice([0.0, 0.005, 0.02]))
    reqs: list[dict[str, Any]] = []
    rsps: list[dict[str, Any]] = []
    control: list[dict[str, Any]] = []
    for r in range(n_rings):
        domid, vdev, queue = RINGS[r]
        key = {"domid": domid, "vdev": vdev, "queue": queue}
        idx = 0
        n_bursts = int(rng.integers(20, 60))
        for burst in range(n_bursts):
            if rng.random() < 0.3:
                continue  # this ring is quiet in this slot of the grid
            t = burst * 120_000 + int(rng.integers(0, 5_000))
            # Now and then deeper than the ring's 32 entries: the frontend must refuse.
            size = int(rng.integers(1, 12) if rng.random() > 0.03 else rng.integers(33, 41))
            free = list(range(64))
            rng.shuffle(free)
            for j in range(size):
                op = int(rng.integers(0, 2))
                nseg = 1
                odd = rng.random() < rare
                if odd:  # a pure flush, a flush or barrier with data, a discard, bad nseg
                    op, nseg = [(3, 0), (3, 1), (2, 1), (5, 1), (op, 0), (op, 12)][
                        int(rng.integers(0, 6))
                    ]
                rid = free[j] if rng.random() >= rare else free[0]  # reused too early
                t_req = t + j * 300
                sector = int(rng.integers(0, 256)) * 8
                reqs.append(
                    {
                        **key,
                        "ns": t_req,
                        "consumed_ns": t_req + 2_000,
                        "idx": idx,
                        "id": rid,
                        "operation": op,
                        "nr_segments": nseg,
                        "sector_number": sector,
                        "nr_sectors": 8 * nseg,
                    }
                )
                if rng.random() < rare / 3:  # seen twice
                    reqs.append({**reqs[-1], "ns": t_req + 100})
                idx += 1
                if rng.random() < rare / 3:
                    continue  # never answered
                # Now and then a slow one, still in flight when the next burst starts.
                slow = 100_000 if rng.random() < 0.01 else 0
                t_rsp = t_req + 10_000 + slow + int(rng.integers(0, 40_000))
                if rng.random() < rare:  # traced as consumed only after its response
                    reqs[-1]["consumed_ns"] = t_rsp + 500
                rsps.append(
                    {
                        **key,
                        "ns": t_rsp,
                        "consumed_ns": t_rsp + 1_000,
                        "id": rid,
                        "operation": op,
                        "status": 0 if rng.random() >= rare else -1,
                    }
                )
        end = n_bursts * 120_000
        if rng.random() < 0.3:
            t_c = int(rng.integers(0, end))
            control += [
                {**key, "ns": t_c, "kind": "unbind", "side": "back"},
                {**key, "ns": t_c + 200_000, "kind": "bind", "side": "back"},
            ]
        if rng.random() < 0.1:
            control.append({**key, "ns": int(rng.integers(0, end)), "kind": "disconnect_request"})
    requests = pl.DataFrame(reqs).with_columns(
        pl.lit("full").alias("seen"), pl.lit("synth").alias("source")
    )
    responses = pl.DataFrame(rsps).with_columns(pl.lit("synth").alias("source"))
    # Responses take ring slots in completion order.
    responses = responses.sort("ns").with_columns(
        pl.int_range(pl.len()).over("domid", "vdev").alias("idx")
    )
    ctl = (
        schema.conform(
            pl.DataFrame(control).with_columns(pl.lit("synth").alias("source")), "control"
        )
        if control
        else schema.empty("control")
    )
    return assemble(
        requests=schema.conform(requests.sort("ns", maintain_order=True), "requests"),
        responses=schema.conform(responses, "responses"),
        control=ctl.sort("ns"),
        meta={},
    )


# A few logics of each kind: Linux's, the 2005 xbdback ones, the rebind and recovery ones.
SOME_BACKS = ("linux-default", "xbdback-2005-refcount", "blkback-rebind-attach")
SOME_PAIRS = [p for p in PAIRS if p[0] in SOME_BACKS] or PAIRS


@pytest.mark.parametrize("seed", range(24))
def test_random_traffic_bulk_equals_event_by_event(seed: int, windows_applied: list[int]) -> None:
    inp = build_input(traffic(seed))
    plan = build_plan(inp, min_rows=8)
    inp._plan = plan
    compare(inp, SOME_PAIRS)


def test_random_traffic_runs_windows_and_leaves_anomalies_out(windows_applied: list[int]) -> None:
    covered = total = 0
    for seed in range(24):
        inp = build_input(traffic(seed))
        plan = build_plan(inp, min_rows=8)
        total += len(inp.kinds)
        for start, end, _ in plan.windows:
            covered += end - start
            kinds = set(inp.kinds[start:end])
            assert kinds <= {0, 1, 2, 3, 5} - {0}, kinds
            for i in range(start, end):
                if inp.kinds[i] == K_SUBMIT:
                    assert inp.cols[0][i] in (0, 1)
                elif inp.kinds[i] == K_COMPLETE:
                    assert inp.cols[1][i] == 0
        inp._plan = plan
        compare(inp, [("linux-default", "linux-default")])
    assert windows_applied[0] > 20
    assert 0.2 < covered / total < 0.98  # windows exist, and the anomalies stay out


# ------------------------------------------------------- one anomaly in plain traffic


def _streams(reqs: list[dict[str, Any]], rsps: list[dict[str, Any]]) -> Streams:
    requests = pl.DataFrame(reqs).with_columns(
        pl.lit("full").alias("seen"), pl.lit("synth").alias("source")
    )
    responses = (
        pl.DataFrame(rsps)
        .with_columns(pl.lit("synth").alias("source"))
        .sort("ns")
        .with_columns(pl.int_range(pl.len()).alias("idx"))
    )
    return assemble(
        requests=schema.conform(requests.sort("ns", maintain_order=True), "requests"),
        responses=schema.conform(responses, "responses"),
        control=schema.empty("control"),
        meta={},
    )


def plain(bursts: int = 12, size: int = 6) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One ring, bursts of reads and writes, each answered before the next burst."""
    key = {"domid": 1, "vdev": 51712, "queue": 0}
    reqs, rsps = [], []
    for burst in range(bursts):
        for j in range(size):
            t = burst * 100_000 + j * 300
            op = (burst + j) % 2
            reqs.append(
                {
                    **key,
                    "ns": t,
                    "consumed_ns": t + 2_000,
                    "idx": burst * size + j,
                    "id": j,
                    "operation": op,
                    "nr_segments": 1,
                    "sector_number": 8 * ((burst * 7 + j * 3) % 16),
                    "nr_sectors": 8,
                }
            )
            t_rsp = t + 20_000 + 1_000 * ((j * 5) % size)
            rsps.append(
                {
                    **key,
                    "ns": t_rsp,
                    "consumed_ns": t_rsp + 1_000,
                    "id": j,
                    "operation": op,
                    "status": 0,
                }
            )
    return reqs, rsps


def _no_segments(r: dict[str, Any]) -> None:
    r["nr_segments"] = 0


def _too_many_segments(r: dict[str, Any]) -> None:
    r["nr_segments"] = 12


def _flush_with_data(r: dict[str, Any]) -> None:
    r["operation"] = 3


def _discard(r: dict[str, Any]) -> None:
    r["operation"] = 5


def _consumed_after_its_response(r: dict[str, Any]) -> None:
    # (the burst's other requests are consumed after it too: a consume takes them all)
    r["consumed_ns"] = r["ns"] + 60_000


PLANTED = [
    _no_segments,
    _too_many_segments,
    _flush_with_data,
    _discard,
    _consumed_after_its_response,
]


@pytest.mark.parametrize("plant", PLANTED, ids=[p.__name__.strip("_") for p in PLANTED])
def test_a_planted_anomaly_stays_out_of_the_windows(plant: Any, windows_applied: list[int]) -> None:
    reqs, rsps = plain()
    clean = build_input(_streams(reqs, rsps))
    assert build_plan(clean, min_rows=8).windows[0][:2] == (0, len(clean.kinds))
    at = 5 * 6 + 2  # burst 5, third request
    plant(reqs[at])
    if plant is _consumed_after_its_response:
        for r in reqs[5 * 6 : 6 * 6]:
            r["consumed_ns"] = reqs[at]["consumed_ns"]
    rsps[at]["operation"] = reqs[at]["operation"]
    inp = build_input(_streams(reqs, rsps))
    plan = build_plan(inp, min_rows=8)
    row = next(
        i
        for i in range(len(inp.kinds))
        if inp.kinds[i] == K_SUBMIT and inp.times[i] == reqs[at]["ns"]
    )
    assert plan.windows, "the bursts around the planted one are still windows"
    assert all(not start <= row < end for start, end, _ in plan.windows)
    inp._plan = plan
    before = windows_applied[0]
    compare(inp, SOME_PAIRS)
    assert windows_applied[0] > before


@pytest.mark.parametrize("pair", PAIRS, ids=["/".join(p) for p in PAIRS])
def test_every_registered_logic_takes_the_windows(
    pair: tuple[str, str], windows_applied: list[int]
) -> None:
    # Plain traffic on a fresh ring: every logic the project ships is ready for it (Linux
    # bookkeeping, xbd's own ids, xbdback's reference per I/O), so none is left at the
    # event-by-event speed; and the result is the event-by-event one.
    inp = build_input(_streams(*plain(bursts=20)))
    inp._plan = build_plan(inp, min_rows=8)
    assert inp._plan.windows[0][:2] == (0, len(inp.kinds))
    compare(inp, [pair])
    assert windows_applied[0] == 2  # oracle on and off, one window each


def test_the_plan_from_the_lists_is_the_plan_from_build_input(
    windows_applied: list[int],
) -> None:
    inp = build_input(traffic(12))
    fast = build_plan(inp, min_rows=8)
    inp._arrays = None
    slow = build_plan(inp, min_rows=8)
    assert fast.windows and fast.windows == slow.windows
    assert [sorted(k) for k in fast.window_rings] == [sorted(k) for k in slow.window_rings]
    # And it replays the same.
    compare(inp, [("linux-default", "linux-default")])


def _twice_in_the_recovery_ring(logic: Any) -> None:
    logic.rec_id[1] = 0  # free list 0 -> 1 -> 0 -> ...: the logic itself stops at the 3rd


def _twice_in_the_pool(logic: Any) -> None:
    logic.pool.free = [0xC0FFEE00, 0xC0FFEE00]  # a pointer put back twice: handed out twice


@pytest.mark.parametrize(
    ("front", "corrupt"),
    [
        ("xbd-2006-recovery-as-posted", _twice_in_the_recovery_ring),
        ("xbd-2006-norecovery", _twice_in_the_pool),
    ],
)
def test_a_window_a_frontend_logic_refuses_changes_nothing(front: str, corrupt: Any) -> None:
    # NetBSD xbd's 2006 bookkeeping trusts response ids: a bogus one puts a slot or a
    # pointer on a free list twice (made here by hand), and it then refuses a request or
    # hands out an id still in use. apply() must decline and leave the model, logic state
    # included, as it found it: the event path then replays the window.
    inp = build_input(_streams(*plain(bursts=20)))
    plan = build_plan(inp, min_rows=8)
    start, end, _ = plan.windows[0]

    def fresh() -> Model:
        model = Model(
            backend="linux-default", frontend=front, disk_mode="deferred", record_actions=False
        )
        for key in inp.ring_params:
            model.ring(key)
        return model

    model = fresh()
    corrupt(model.rings[plan.window_rings[0][0]].frontend.logic)
    assert bulk.ready(model, plan.window_rings[0])
    before = model_state(model)
    assert not bulk.apply(model, plan.template(start, end))
    assert model_state(model) == before
    # Without the corruption the same window is taken.
    model = fresh()
    before = model_state(model)
    assert bulk.apply(model, plan.template(start, end))
    assert model_state(model) != before


@pytest.mark.parametrize(
    ("scenario", "name"), [("steady", "ring-1-51712.bin"), ("nopersist", "ring-2-51712.bin")]
)
def test_real_xen_ring_captures_take_windows_and_agree(
    scenario: str, name: str, realxen: Path, tmp_path: Path, windows_applied: list[int]
) -> None:
    # Linux 6.1 blkfront/blkback on Xen 4.17.7, polled at 333 Hz: a snapshot often shows
    # a response and the next request with its id at once, so in the trace's order the id
    # is reused before its answer is consumed. The whole capture is plain traffic all
    # the same; the window runs Linux's own id bookkeeping, and changes nothing.
    pcap = tmp_path / "ring.pcapng"
    rxring_to_pcapng(realxen / scenario / name, pcap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inp = build_input(load_streams([pcap]))
    plan = build_plan(inp, min_rows=8)
    assert [w[:2] for w in plan.windows] == [(0, len(inp.kinds))]
    assert plan.template(0, len(inp.kinds)).reuses_ids
    inp._plan = plan
    compare(inp, SOME_PAIRS)
    assert windows_applied[0] > 0


@pytest.mark.parametrize("lost_id", [2, 0])
def test_a_request_never_answered_stays_in_flight_and_the_windows_go_on(
    lost_id: int, windows_applied: list[int]
) -> None:
    # A response lost in burst 3 leaves its request outstanding for good (until the end of
    # the trace). The bursts after it are still windows, replayed around it: it stays in
    # flight, its id stays taken (id 0 is reused by every later burst: Linux's free list
    # then picks another, so those windows run its own bookkeeping), its ring slot count
    # stays used; and the results are the event path's, under every registered logic.
    reqs, rsps = plain(bursts=20)
    lost = 3 * 6 + lost_id
    del rsps[lost]
    inp = build_input(_streams(reqs, rsps))
    plan = build_plan(inp, min_rows=8)
    after = next(i for i, t in enumerate(inp.times) if t >= 4 * 100_000)
    assert any(start <= after and end == len(inp.kinds) for start, end, _ in plan.windows)
    inp._plan = plan
    # (Also without completing it at the end: that response would overwrite its slot.)
    compare(inp, PAIRS, at_end=(True, False))
    for back, front in PAIRS:
        res = engine.run_logic(inp, backend=back, frontend=front)
        assert res.bulk_events >= len(inp.kinds) - after, (back, front)
        assert res.result.rings[inp.rings[0]].outstanding == 1
