"""Every scenario round-trips: synth -> load_streams gives back the simulated requests/responses."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import polars as pl
import pytest

from blktrace_xen.streams.load import load_streams
from blktrace_xen.synth.scenarios import SCENARIOS, synthesize
from blktrace_xen.synth.truth import REQUEST_COLUMNS, RESPONSE_COLUMNS

# A capture shows the page, not the truth: a bogus req_prod exposes slots that hold no
# request, and responses pushed beyond req_prod are outside the response window.
CAPTURE_INEXACT = {"hostile-frontend", "misbehaving-backend"}
DURATION = 0.15


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def synthesized(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(request.param)
    synthesize(request.param, out, seed=5, duration_s=DURATION)
    return out


def _load(paths: list[Path]) -> tuple[pl.DataFrame, pl.DataFrame]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = load_streams(paths)
    return s.requests, s.responses


def test_xentrace_recovers_requests_and_responses_exactly(synthesized: Path) -> None:
    req, rsp = _load([synthesized / "trace.xentrace"])
    truth_req = pl.read_parquet(synthesized / "truth_requests.parquet")
    truth_rsp = pl.read_parquet(synthesized / "truth_responses.parquet")
    assert truth_req.height > 0
    assert req.select(REQUEST_COLUMNS).equals(truth_req.select(REQUEST_COLUMNS))
    assert rsp.select(RESPONSE_COLUMNS).equals(truth_rsp.select(RESPONSE_COLUMNS))


def test_capture_recovers_every_request_and_response(synthesized: Path) -> None:
    caps = sorted(synthesized.glob("ring*.pcapng"))
    truth_req = pl.read_parquet(synthesized / "truth_requests.parquet")
    truth_rsp = pl.read_parquet(synthesized / "truth_responses.parquet")
    qcols = [c for c in REQUEST_COLUMNS if c != "ns"]
    scols = [c for c in RESPONSE_COLUMNS if c != "ns"]
    loaded = [_load([c]) for c in caps]
    req = pl.concat([r for r, _ in loaded])
    rsp = pl.concat([s for _, s in loaded])
    if synthesized.name.rstrip("0123456789") in CAPTURE_INEXACT:
        # Until the misbehaviour starts (30 % into the run) the capture is still exact.
        before = truth_req.filter(pl.col("ns") < 0.25 * DURATION * 1e9).select(qcols)
        assert before.height > 0
        assert before.join(req.select(qcols), on=qcols, how="anti").height == 0
        return
    assert (req["seen"] == "full").all()
    assert req.select(qcols).sort(qcols).equals(truth_req.select(qcols).sort(qcols))
    # A response written into an already unmapped ring (seed 000, legacy) never
    # reaches the page the capture polls; the xentrace dump has it.
    violations = json.loads((synthesized / "truth.json").read_text())["violations"]
    late = {v["t_ns"] for v in violations if v["invariant"] == "response-after-unmap"}
    truth_rsp = truth_rsp.filter(~pl.col("ns").is_in(sorted(late)))
    assert rsp.select(scols).sort(scols).equals(truth_rsp.select(scols).sort(scols))
    # A snapshot is taken at or after the push it shows, never before.
    if len(caps) == 1:
        assert (req["ns"] >= truth_req["ns"]).all()
