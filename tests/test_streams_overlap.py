"""Two backend instances on one ring key: the older one's late answers stay in its session."""

from __future__ import annotations

from typing import Any

import polars as pl

from blktrace_xen import schema
from blktrace_xen.streams import Streams
from blktrace_xen.streams.assemble import assemble

KEY = {"domid": 3, "vdev": 51712, "queue": 0}


def req(ns: int, idx: int, id: int) -> dict[str, Any]:
    return {**KEY, "ns": ns, "idx": idx, "id": id, "operation": 1, "seen": "full"} | {
        "source": "synth"
    }


def rsp(ns: int, idx: int, id: int) -> dict[str, Any]:
    return {**KEY, "ns": ns, "idx": idx, "id": id, "operation": 1, "status": 0, "source": "synth"}


def ctl(ns: int, kind: str, detail: str | None = None) -> dict[str, Any]:
    return {**KEY, "ns": ns, "kind": kind, "side": "back", "detail": detail, "source": "synth"}


def ring_map(ns: int) -> dict[str, Any]:
    return ctl(ns, "ring_map", "ring_page_order=0 protocol=2 req_prod=0 rsp_prod=0 backend_domid=0")


def build(
    reqs: list[dict[str, Any]], rsps: list[dict[str, Any]], ctls: list[dict[str, Any]]
) -> Streams:
    return assemble(
        requests=schema.conform(pl.DataFrame(reqs), "requests"),
        responses=schema.conform(pl.DataFrame(rsps), "responses"),
        control=schema.conform(pl.DataFrame(ctls), "control"),
        meta={},
    )


# The source publishes idx 0..3 and answers 0, 1 before the target maps the ring at 100.
SOURCE_REQS = [req(10 + i, i, i) for i in range(4)]
SOURCE_EARLY = [rsp(20, 0, 0), rsp(21, 1, 1)]
# The target's ring starts at index 0 with ids 0, 1.
TARGET_REQS = [req(110, 0, 0), req(111, 1, 1)]
TARGET_RSPS = [rsp(115, 0, 0), rsp(116, 1, 1)]


def sessions_of(s: Streams, frame: str) -> list[tuple[int, int]]:
    rows = getattr(s, frame).sort("ns").select("idx", "session").rows()
    return [(int(i), int(k)) for i, k in rows]


def test_older_instance_answers_inside_the_overlap_stay_in_its_session() -> None:
    # Second map at 100 while the first is mapped; the source unmaps at 200.
    late = [rsp(112, 2, 2), rsp(150, 3, 3)]
    s = build(
        SOURCE_REQS + TARGET_REQS,
        SOURCE_EARLY + late + TARGET_RSPS,
        [ring_map(0), ring_map(100), ctl(200, "ring_unmap")],
    )
    src = s.requests.filter(pl.col("ns") < 100)["session"].unique().to_list()
    tgt = s.requests.filter(pl.col("ns") > 100)["session"].unique().to_list()
    assert len(src) == len(tgt) == 1 and src != tgt
    rsps = sessions_of(s, "responses")
    assert rsps == [(0, src[0]), (1, src[0]), (2, src[0]), (0, tgt[0]), (1, tgt[0]), (3, src[0])]
    # Every request answered once, no pairing anomaly.
    assert s.io["rsp_ns"].is_not_null().all()
    assert s.pairing.filter(pl.col("kind").cast(pl.String) != "reused_id").is_empty()


def test_an_answer_at_the_instant_of_the_handover_stays_with_the_older_instance() -> None:
    # The source unmaps and the target maps at one ns; the source's last answer is then too.
    s = build(
        SOURCE_REQS[:3] + TARGET_REQS,
        [*SOURCE_EARLY, rsp(100, 2, 2), *TARGET_RSPS],
        [ring_map(0), ctl(100, "ring_unmap"), ring_map(100)],
    )
    src = int(s.requests.filter(pl.col("ns") < 100)["session"][0])
    assert (2, src) in sessions_of(s, "responses")
    assert s.io["rsp_ns"].is_not_null().all()


def test_after_the_older_instance_unmapped_nothing_is_moved() -> None:
    # An ordinary reconnect: unmap at 90, map at 100; a response at 112 belongs to the new ring.
    s = build(
        SOURCE_REQS[:2] + TARGET_REQS,
        [rsp(20, 0, 0), rsp(112, 2, 1)],
        [ring_map(0), ctl(90, "ring_unmap"), ring_map(100)],
    )
    new = int(s.requests.filter(pl.col("ns") > 100)["session"][0])
    assert (2, new) in sessions_of(s, "responses")


def test_answers_not_continuing_the_older_sequence_stay_in_the_new_session() -> None:
    # Inside the overlap, but index 40 is more than a ring (32) past the source's last (1).
    s = build(
        SOURCE_REQS + TARGET_REQS,
        [*SOURCE_EARLY, rsp(112, 40, 2), *TARGET_RSPS],
        [ring_map(0), ring_map(100), ctl(200, "ring_unmap")],
    )
    new = int(s.requests.filter(pl.col("ns") > 100)["session"][0])
    assert (40, new) in sessions_of(s, "responses")


def test_a_target_map_inside_its_run_of_starts_still_drains_to_the_source() -> None:
    # The target's bind at 95 and map at 100 are one session's starts (nothing between):
    # the source's session is the one before that run, not the bind's.
    late = [rsp(112, 2, 2), rsp(150, 3, 3)]
    s = build(
        SOURCE_REQS + TARGET_REQS,
        SOURCE_EARLY + late + TARGET_RSPS,
        [ring_map(0), ctl(95, "bind"), ring_map(100), ctl(200, "ring_unmap")],
    )
    src = int(s.requests.filter(pl.col("ns") < 100)["session"][0])
    tgt = int(s.requests.filter(pl.col("ns") > 100)["session"][0])
    assert (src, tgt) == (1, 2)
    rsps = sessions_of(s, "responses")
    assert rsps == [(0, src), (1, src), (2, src), (0, tgt), (1, tgt), (3, src)]
    assert s.io["rsp_ns"].is_not_null().all()
