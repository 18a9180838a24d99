"""Unit tests of the machines: illegal events, ring indices, logic loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from blktrace_xen.errors import FrontendProtocolError, LogicLoadError
from blktrace_xen.model.events import (
    BackComplete,
    BackConsume,
    BackRespond,
    Bind,
    FrontConsume,
    FrontMutateSlot,
    FrontSetReqProd,
    FrontSubmit,
    Resume,
)
from blktrace_xen.model.logic import LOGICS, load_logic
from blktrace_xen.model.ring import BLKIF_OP_READ, BLKIF_OP_WRITE, MASK32, Req, Rsp, SharedRing
from blktrace_xen.model.system import Model, run


def snapshot(model: Model) -> tuple[object, ...]:
    sys = next(iter(model.rings.values()))
    ring = sys.ring
    fe = sys.frontend
    return (
        fe.state,
        [be.state for be in sys.backends],
        ring.req_prod,
        ring.rsp_prod,
        ring.req_event,
        ring.rsp_event,
        fe.req_prod_pvt,
        fe.rsp_cons,
        sys.backend.req_cons,
        sys.backend.rsp_prod_pvt,
        dict(fe.outstanding),
        dict(sys.backend.inflight),
        len(model.violations),
    )


@pytest.mark.parametrize(
    ("events", "bad", "state"),
    [
        ([], Bind(t_ns=1), "backend#0 CONNECTED"),
        ([], Resume(t_ns=1), "frontend CONNECTED"),
        ([], BackComplete(t_ns=1, id=3), "backend#0 CONNECTED"),
        (
            [FrontSubmit(t_ns=0, operation=1, sector_number=0, nr_sectors=8)] * 4,
            FrontSubmit(t_ns=1, operation=1, sector_number=0, nr_sectors=8),
            "frontend CONNECTED",
        ),
        ([], FrontMutateSlot(t_ns=1, idx=0, sector_number=9), "frontend CONNECTED"),
    ],
)
def test_illegal_event_names_ring_state_event_and_changes_nothing(
    events: list[FrontSubmit], bad: object, state: str
) -> None:
    model = Model(nr_ents=4)
    for ev in events:
        model.feed(ev)
    model.ring((1, 51712, 0))
    before = snapshot(model)
    with pytest.raises(FrontendProtocolError) as info:
        model.feed(bad)  # type: ignore[arg-type]
    err = info.value
    assert err.ring == "vbd/1/51712/q0"
    assert err.state == state
    assert err.event == type(bad).__name__
    assert "vbd/1/51712/q0" in str(err) and type(bad).__name__ in str(err)
    assert snapshot(model) == before


def test_indices_wrap_u32_and_notify_follows_event_indices() -> None:
    start = MASK32 - 1
    evs = []
    for i in range(3):
        evs += [
            FrontSubmit(t_ns=4 * i, operation=BLKIF_OP_WRITE, sector_number=8 * i, nr_sectors=8),
            BackConsume(t_ns=4 * i + 1),
            BackComplete(t_ns=4 * i + 2, seq=i),
            FrontConsume(t_ns=4 * i + 3),
        ]
    res = run(evs, start_idx=start)
    assert res.violations == []
    final = res.rings[(1, 51712, 0)]
    assert final.req_prod == final.rsp_prod == 1  # 0xfffffffe + 3 wraps to 1
    assert final.req_event == final.rsp_event == 2
    pushed = [a.idx for a in res.actions if type(a).__name__ == "RequestPushed"]
    assert pushed == [MASK32 - 1, MASK32, 0]
    notifies = [a.side for a in res.actions if type(a).__name__ == "Notify"]
    assert notifies == ["front", "back"] * 3


def test_backend_stops_at_ring_size_of_unanswered_requests() -> None:
    model = Model(nr_ents=4)
    for i in range(4):
        model.feed(FrontSubmit(t_ns=i, operation=BLKIF_OP_READ, sector_number=0, nr_sectors=8))
    model.feed(BackConsume(t_ns=5))
    assert model.rings[(1, 51712, 0)].backend.inflight_count == 4


def test_union_slot_decoding_mixes_response_and_stale_request() -> None:
    ring = SharedRing(4)
    ring.write_request(0, Req(7, BLKIF_OP_WRITE, 1234, 8, 1, 0, 0))
    ring.write_response(0, Rsp(0x0201, BLKIF_OP_WRITE, -1))
    garbage = ring.read_request(0)
    assert garbage.garbage
    assert (garbage.operation, garbage.nr_segments) == (0x01, 0x02)  # low bytes of rsp id
    assert garbage.id == BLKIF_OP_WRITE | (0xFFFF << 16)  # op byte, status bytes
    assert garbage.sector_number == 1234  # behind the 16 response bytes
    ring.write_request(1, Req(0x00FF0001, 3, 0, 0, 2, 0, 0))
    rsp = ring.read_response(1)
    assert (rsp.id, rsp.operation, rsp.status) == (3 | 2 << 8, 0x01, 0xFF)


def test_hostile_frontend_and_misbehaving_backend_are_reported() -> None:
    evs = [
        FrontSubmit(t_ns=1, operation=BLKIF_OP_WRITE, sector_number=64, nr_sectors=8),
        FrontMutateSlot(t_ns=2, idx=0, sector_number=0),
        BackConsume(t_ns=3),
        BackComplete(t_ns=4, seq=0),
        FrontConsume(t_ns=5),
        FrontSetReqProd(t_ns=6, req_prod=100),
        BackConsume(t_ns=7),
    ]
    res = run(evs)
    assert {
        "slot-mutated",
        "misplaced-write",
        "implausible-producer",
        "backend-halted",
    } <= res.invariants()
    bad_back = [BackRespond(t_ns=1, id=9, operation=0), FrontConsume(t_ns=2)]
    # rsp_prod ahead of req_prod is also an implausible producer pair on the page.
    assert run(bad_back).invariants() == {"response-not-in-flight", "implausible-producer"}
    assert run(bad_back).rings[(1, 51712, 0)].front_state == "ERROR"
    legacy = run(bad_back, frontend="xbd-2006-norecovery")
    assert legacy.rings[(1, 51712, 0)].front_state == "CONNECTED"


def test_registry_names_pairs_and_seeds() -> None:
    expected = {
        "xbdback-2005-immediate",
        "xbdback-2005-refcount",
        "blkback-rebind-init",
        "blkback-rebind-attach",
        "xbd-2006-norecovery",
        "xbd-2006-recovery-as-posted",
        "xbd-2006-recovery-fixed",
        "blkback-2008-remove-nowait",
        "blkback-2008-remove-wait",
        "linux-default",
    }
    assert expected <= set(LOGICS)
    for spec in LOGICS.values():
        if spec.paired is not None:
            assert LOGICS[spec.paired].seed == spec.seed
            assert LOGICS[spec.paired].kind != spec.kind or spec.kind == "patched"
        for side in spec.sides:
            assert load_logic(spec.name, side).name == spec.name


def test_load_user_logic(tmp_path: Path) -> None:
    good = tmp_path / "mine.py"
    good.write_text(
        "from blktrace_xen.model.logics.linux import LinuxBlkback\n"
        "class Mine(LinuxBlkback):\n"
        "    name = 'mine'\n"
        "    def disconnect(self, be, t_ns, goal):\n"
        "        be.stop(t_ns, goal, wait=False)\n"
        "class NotALogic:\n"
        "    name = 'x'\n"
    )
    mine = load_logic(f"{good}:Mine", "back")
    assert mine.name == "mine"
    with pytest.raises(LogicLoadError, match="missing checks_request_overflow"):
        load_logic(f"{good}:NotALogic", "back")
    with pytest.raises(LogicLoadError, match="no class 'Nope'"):
        load_logic(f"{good}:Nope", "back")
    with pytest.raises(LogicLoadError, match="no such logic file"):
        load_logic(f"{tmp_path}/absent.py:Mine", "back")
    with pytest.raises(LogicLoadError, match="unknown backend logic 'nope'"):
        load_logic("nope", "back")
    with pytest.raises(LogicLoadError, match="is a frontend logic"):
        load_logic("xbd-2006-norecovery", "back")
