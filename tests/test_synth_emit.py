"""The synth emitters: byte-exact against the construct writer, deterministic, CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from blktrace_xen.cli.app import app
from blktrace_xen.encode.xentrace import TraceRecord, write_xentrace
from blktrace_xen.streams.timebase import cpu_qhz, tsc_ns_expr
from blktrace_xen.synth.emit_xentrace import Rec, XentraceOptions, _Emitter, write_trace
from blktrace_xen.synth.scenarios import synthesize

records = st.lists(
    st.builds(
        Rec,
        cpu=st.integers(0, 3),
        tsc=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        event=st.integers(0, 0x0FFFFFFF),
        extra=st.lists(st.integers(0, 2**32 - 1), max_size=7).map(tuple),
    ),
    max_size=60,
)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(records, st.integers(1, 9))
def test_fast_packing_matches_the_construct_writer(
    tmp_path_factory: pytest.TempPathFactory, recs: list[Rec], window: int
) -> None:
    out = tmp_path_factory.mktemp("pack") / "t.bin"
    write_trace(out, recs, window)
    ref = io.BytesIO()
    write_xentrace(
        ref, [TraceRecord(cpu=r.cpu, tsc=r.tsc, event=r.event, extra=r.extra) for r in recs],
        window_records=window,
    )  # fmt: skip
    assert out.read_bytes() == ref.getvalue()


def test_tsc_mapping_gives_the_nanosecond_back() -> None:
    import polars as pl

    em = _Emitter(XentraceOptions(cpu_mhz=2400.0))
    ns = [0, 1, 2, 999, 123_456_789, 10**12 + 7]
    tscs = [em.tsc(n) for n in ns]
    back = (
        pl.DataFrame({"tsc": tscs})
        .select(tsc_ns_expr(pl.col("tsc"), em.opts.t0_tsc, 2400.0))["tsc"]
        .to_list()
    )
    assert back == ns
    assert cpu_qhz(2400.0) > 1024


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 7), (b, 7), (c, 8)):
        synthesize(
            "unbind-rebind-loop", out, seed=seed, duration_s=0.1, logic="blkback-rebind-attach"
        )
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "trace.xentrace").read_bytes() != (c / "trace.xentrace").read_bytes()


def test_write_trace_frames_like_the_construct_writer(tmp_path: Path) -> None:
    from blktrace_xen.synth.emit_xentrace import trace_records, write_trace
    from blktrace_xen.synth.scenarios import run_scenario

    _, sim, _ = run_scenario("steady", seed=1, duration_s=0.01)
    recs = trace_records(sim, XentraceOptions())
    write_trace(tmp_path / "t.bin", recs, 16)
    ref = io.BytesIO()
    write_xentrace(
        ref, [TraceRecord(cpu=r.cpu, tsc=r.tsc, event=r.event, extra=r.extra) for r in recs],
        window_records=16,
    )  # fmt: skip
    assert (tmp_path / "t.bin").read_bytes() == ref.getvalue()


def test_lost_records_are_dropped_and_announced(tmp_path: Path) -> None:
    out = synthesize("steady", tmp_path, seed=1, duration_s=0.05, lost_records=40)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["lost_records"] == 40
    from blktrace_xen.decode.xentrace import read_xentrace

    res = read_xentrace(tmp_path / "trace.xentrace")
    assert res.lost["count"].sum() == 40
    # every record written was decoded, the lost-records record included
    assert out.records == res.events.height


def test_cli_writes_outputs_and_lists(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--list"])
    assert res.exit_code == 0, res.output
    assert "unbind-rebind-loop" in res.output and "seed 002" in res.output
    res = runner.invoke(
        app, ["synth", "disconnect-during-io", "-o", str(tmp_path), "--duration", "0.2"]
    )
    assert res.exit_code == 0, res.output
    assert "response-after-unmap" in res.output
    assert (tmp_path / "trace.xentrace").stat().st_size > 0
    assert (tmp_path / "ring.pcapng").stat().st_size > 0
    res = runner.invoke(app, ["synth", "steady", "-o", str(tmp_path), "--logic", "nope"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("error: unknown logic")
