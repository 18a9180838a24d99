"""Stream derivation from snapshots: gaps, regressions, mutations, wrap, dirty padding."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from blktrace_xen.decode.ring import derive_ring_streams
from blktrace_xen.decode.ringcap import read_ringcap
from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter


def _capture(path: Path, pages: list[bytes], abi: str = "x86_64-abi", order: int = 0):
    with RingcapWriter(path) as w:
        i = w.add_ring(1, 51712, abi=abi, ring_page_order=order)
        for k, p in enumerate(pages):
            w.write_snapshot(i, 1000 * (k + 1), p)
    return derive_ring_streams(read_ringcap(path))


def test_overrun_is_a_gap_not_invented_data(tmp_path: Path) -> None:
    r = RingPage("x86_64-abi", 0)
    start = 0xFFFFFFF0
    r.req_prod = r.rsp_prod = start
    pages = [r.to_bytes()]
    for k in range(40):  # 40 requests and responses: the ring (32) was lapped unseen
        r.put_request(start + k, operation=1, id=k, segments=[(1, 0, 7)])
    r.req_prod = start + 40
    for k in range(40):
        r.put_response(start + k, id=k, operation=1, status=0)
    r.rsp_prod = start + 40
    pages.append(r.to_bytes())
    st_ = _capture(tmp_path / "c.pcapng", pages)
    gaps = st_.gaps.select("producer", "from_idx", "count").rows()
    assert gaps == [("req", start, 8), ("rsp", start, 8)]
    assert st_.requests["idx"].to_list() == [(start + 8 + k) & 0xFFFFFFFF for k in range(32)]
    assert st_.requests["seen"].unique().to_list() == ["via_response"]
    assert st_.responses.height == 32


def test_backwards_producer_is_an_anomaly(tmp_path: Path) -> None:
    r = RingPage("x86_64-abi", 0)
    r.req_prod = r.rsp_prod = 100
    a = r.to_bytes()
    r.req_prod = r.rsp_prod = 0  # re-initialised under a live frontend
    b = r.to_bytes()
    st_ = _capture(tmp_path / "c.pcapng", [a, b])
    assert sorted(st_.anomalies.select("producer", "old", "new", "kind").rows()) == [
        ("req", 100, 0, "backwards"),
        ("rsp", 100, 0, "backwards"),
    ]
    assert st_.requests.height == 0 and st_.gaps.height == 0


def test_implausible_producer_and_mutation(tmp_path: Path) -> None:
    r = RingPage("x86_64-abi", 0)
    r.put_request(0, operation=1, id=1, sector_number=8, segments=[(1, 0, 7)])
    r.req_prod = 1
    a = r.to_bytes()
    r.put_request(0, operation=1, id=1, sector_number=4096, segments=[(1, 0, 7)])  # rewritten
    b = r.to_bytes()
    r.req_prod = 40  # more outstanding than the ring holds
    c = r.to_bytes()
    st_ = _capture(tmp_path / "c.pcapng", [a, b, c])
    assert st_.mutations.select("idx", "fields").rows() == [(0, "sector_number")]
    kinds = st_.anomalies.select("kind", "old", "new").rows()
    assert ("implausible", 0, 40) in kinds


def test_unknown_op_is_a_warning(tmp_path: Path) -> None:
    r = RingPage("x86_64-abi", 0)
    r.put_request(0, operation=9, id=1)
    r.req_prod = 1
    st_ = _capture(tmp_path / "c.pcapng", [RingPage("x86_64-abi", 0).to_bytes(), r.to_bytes()])
    assert st_.requests.select("operation", "sector_number").rows() == [(9, None)]
    assert len(st_.warnings) == 1 and "unknown operation 9" in st_.warnings[0]


def test_dirty_response_padding_is_data(tmp_path: Path) -> None:
    r = RingPage("x86_64-abi", 0)
    r.put_request(0, operation=1, id=0x1122334455667788, segments=[(1, 0, 7)])
    r.req_prod = 1
    a = r.to_bytes()
    r.put_response(0, id=0x1122334455667788, operation=1, status=-2)
    r.rsp_prod = 1
    st_ = _capture(tmp_path / "c.pcapng", [a, r.to_bytes()])
    assert st_.responses.select("id", "status", "pad_nonzero").rows() == [
        (0x1122334455667788, -2, True)
    ]


@settings(derandomize=True, max_examples=25, deadline=None)
@given(
    start=st.integers(0, 2**32 - 1),
    steps=st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=12),
    order=st.sampled_from([0, 1]),
)
def test_in_order_traffic_every_index_once(start: int, steps, order: int) -> None:
    """Whatever the polling, each published index appears once and no id is invented."""
    import tempfile

    r = RingPage("x86_32-abi", order)
    n = r.geometry.nr_ents
    r.req_prod = r.rsp_prod = start
    pages = [r.to_bytes()]
    prod = cons = start
    for wanted, answer in steps:
        count = min(wanted, n - (prod - cons))
        for k in range(count):
            r.put_request(prod + k, operation=k % 2, id=(prod + k) * 3, segments=[(1, 0, 7)])
        prod += count
        r.req_prod = prod
        if answer:
            for k in range(cons, prod):
                r.put_response(k, id=k * 3, operation=0, status=0)
            cons = prod
            r.rsp_prod = cons
        pages.append(r.to_bytes())
    with tempfile.TemporaryDirectory() as d:
        st_ = _capture(Path(d) / "c.pcapng", pages, abi="x86_32-abi", order=order)
    assert st_.requests["idx"].to_list() == [(start + k) & 0xFFFFFFFF for k in range(prod - start)]
    assert st_.gaps.height == 0 and st_.anomalies.height == 0
    ids = st_.requests["id"].to_list()
    assert ids == [((start + k) * 3) & 0xFFFFFFFFFFFFFFFF for k in range(prod - start)]
