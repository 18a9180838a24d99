"""Real Xen 4.17 ring pages (../shared/realxen): converted with our writer, decoded with our reader.

A 333 Hz poll sees most requests only after they were answered, so the stream
must carry them as ``via_response`` without inventing sector or segments.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import polars as pl
import pytest

from blktrace_xen.decode.ring import derive_ring_streams
from blktrace_xen.decode.ringcap import read_ringcap
from tests.rxring import rxring_to_pcapng

CASES = [("steady", "ring-1-51712.bin", 1), ("nopersist", "ring-2-51712.bin", 2)]


def _rx_headers(path: Path) -> list[tuple[int, int, int]]:
    """(tsc, req_prod, rsp_prod) of every RXRING01 record, read independently of our code."""
    data = path.read_bytes()
    out = []
    off = 32
    while off + 40 + 4096 <= len(data):
        _rt, _mono, tsc, _seq, _fl, _rp, _sp = struct.unpack_from("<QQQIIII", data, off)
        rp, _re, sp, _se = struct.unpack_from("<IIII", data, off + 40)
        out.append((tsc, rp, sp))
        off += 40 + 4096
    return out


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def real(request: pytest.FixtureRequest, realxen: Path, tmp_path_factory: pytest.TempPathFactory):
    scenario, name, domid = request.param
    src = realxen / scenario / name
    dst = tmp_path_factory.mktemp(scenario) / "ring.pcapng"
    n = rxring_to_pcapng(src, dst)
    cap = read_ringcap(dst)
    return scenario, src, n, cap, derive_ring_streams(cap), domid


def test_every_snapshot_decoded_with_its_tsc(real) -> None:
    _, src, n, cap, _, domid = real
    heads = _rx_headers(src)
    assert cap.warnings == []
    assert cap.snapshots.height == n == len(heads)
    assert cap.snapshots["tsc"].to_list() == [h[0] for h in heads]
    assert cap.snapshots["req_prod"].to_list() == [h[1] for h in heads]
    assert cap.snapshots["rsp_prod"].to_list() == [h[2] for h in heads]
    assert cap.rings.row(0) == (domid, 51712, 0, "x86_64-abi", 0, 32, 0)


def test_every_published_index_once_and_answered(real) -> None:
    _, _, _, cap, st, _ = real
    snaps = cap.snapshots
    first_out = snaps["rsp_prod"][0]
    last_rp = snaps["req_prod"][-1]
    idx = st.requests["idx"].to_list()
    assert idx == list(range(first_out, last_rp)), "each published index exactly once, in order"
    assert st.gaps.height == 0
    assert st.anomalies.height == 0
    # every response seen, and each pairs with exactly one request by id
    last_sp = snaps["rsp_prod"][-1]
    assert st.responses["idx"].to_list() == list(range(snaps["rsp_prod"][0], last_sp))
    assert st.requests["id"].null_count() == 0
    assert st.responses["status"].to_list() == [0] * st.responses.height


def test_via_response_requests_invent_nothing(real) -> None:
    _, _, _, _, st, _ = real
    rq = st.requests
    via = rq.filter(pl.col("seen") == "via_response")
    full = rq.filter(pl.col("seen") == "full")
    # about three in four requests are only seen through their response
    assert 0.5 < via.height / rq.height < 0.9
    assert via["sector_number"].null_count() == via.height
    assert via["nr_segments"].null_count() == via.height
    assert via["nr_sectors"].null_count() == via.height
    # a fully seen request is a real 4 KiB request of the workload: one 8-sector segment
    rw = full.filter(pl.col("operation") <= 1)
    assert rw.height > 50
    assert rw["nr_sectors"].to_list() == [8] * rw.height
    assert rw["sector_number"].max() < 131072  # the 64 MiB disk


def test_operation_mix_matches_the_workload(real) -> None:
    scenario, _, _, _, st, _ = real
    console = (Path(real[1]).parent / "domU-console.log").read_text()
    m = re.search(r"writes=(\d+) verified_reads=(\d+)", console)
    assert m
    ratio_workload = int(m[1]) / int(m[2])
    ops = st.responses.group_by("operation").len()
    counts = dict(zip(ops["operation"].to_list(), ops["len"].to_list(), strict=True))
    assert set(counts) <= {0, 1, 3}, f"{scenario}: only reads, writes and flushes expected"
    ratio = counts[1] / counts[0]
    assert ratio == pytest.approx(ratio_workload, rel=0.15)
    # rates: 4 threads x 50 ops/s over ~3.5 s of capture
    dur_s = (st.responses["ns"].max() - st.responses["ns"].min()) / 1e9
    assert 150 < st.responses.height / dur_s < 210
