"""The real Xen 4.17.7 captures: paired streams, grant accounting, one time base.

Facts checked come from ../shared/realxen/README.md: req_prod ranges of the
ring dumps, the snapshot span relative to the first trace record, persistent
grants off in ``nopersist`` and on in ``steady``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from blktrace_xen.streams import Streams
from blktrace_xen.streams.grants import grant_summary
from blktrace_xen.streams.load import load_streams
from tests.rxring import rxring_to_pcapng

CPU_MHZ = 2596.125
# scenario: (domid, ring dump, requests = last - first req_prod, snapshot span in s)
SCENARIOS = {
    "steady": (1, "ring-1-51712.bin", 1365 - 672, (-0.156, 3.339)),
    "nopersist": (2, "ring-2-51712.bin", 1385 - 695, (-0.154, 3.342)),
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def loaded(
    request: pytest.FixtureRequest, realxen: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Streams]:
    name = request.param
    folder = realxen / name
    cap = tmp_path_factory.mktemp(name) / "ring.pcapng"
    rxring_to_pcapng(folder / SCENARIOS[name][1], cap)
    return name, load_streams([folder / "trace-all.bin", cap], cpu_mhz=CPU_MHZ)


def test_ring_snapshots_pair_without_unexplained_orphans(loaded: tuple[str, Streams]) -> None:
    name, s = loaded
    domid, _, n_requests, _ = SCENARIOS[name]
    assert s.pairing.height == 0, s.pairing
    ring = s.io.filter(pl.col("domid") == domid)
    assert ring.height == n_requests
    # every request answered inside the capture, or explained by its end
    assert set(ring["outcome"].unique()) <= {"completed", "trace_end"}
    assert (ring["outcome"] == "completed").sum() >= n_requests - 32
    assert ring.filter(pl.col("latency_ns").is_not_null())["latency_ns"].min() >= 0
    # the workload: 4 KiB writes and reads (op 0/1) plus block-layer flushes (op 3)
    assert set(ring["operation"].unique()) <= {0, 1, 3}
    assert s.meta["inputs"][0]["sha256"] and s.meta["cpu_mhz"] == CPU_MHZ


def test_trace_and_capture_share_one_time_base(loaded: tuple[str, Streams]) -> None:
    name, s = loaded
    first, last = SCENARIOS[name][3]
    snaps = s.snapshots["ns"]
    # the README's span, measured by the poller against the first trace record
    assert abs(snaps.min() / 1e9 - first) < 0.002
    assert abs(snaps.max() / 1e9 - last) < 0.002
    assert s.meta["t0_tsc"] is not None


def test_grant_accounting(loaded: tuple[str, Streams]) -> None:
    name, s = loaded
    domid = SCENARIOS[name][0]
    summary = {r["granting_domid"]: r for r in grant_summary(s.grants, s.control).to_dicts()}
    if name == "nopersist":
        g = summary[domid]
        # blkback maps and unmaps the guest's data grants per request, in balance
        assert g["maps"] >= 0.5 * s.io.height
        assert g["maps"] == g["unmaps"]
        assert g["final_balance"] == 0
        assert g["min_balance"] >= 0 and g["max_balance"] <= 32 * 11
    else:
        # persistent grants: mapped once at connect, before the trace
        total = sum(r["maps"] + r["unmaps"] for r in summary.values())
        assert total <= 0.01 * s.io.height
