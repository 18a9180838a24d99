"""Sessions, unanswered-request reasons, anomalies, xenstore control, load_streams and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from blktrace_xen import schema
from blktrace_xen.cli import app
from blktrace_xen.errors import InputFileError
from blktrace_xen.streams import sessions
from blktrace_xen.streams.assemble import assemble
from blktrace_xen.streams.from_ring import control_from_xenstore
from blktrace_xen.streams.load import load_streams

KEY = dict(domid=3, vdev=51712, queue=0)


def req(ns: int, idx: int, id: int, op: int = 1, **kw: object) -> dict[str, object]:
    return dict(KEY, ns=ns, idx=idx, id=id, operation=op, seen="full", source="synth", **kw)


def rsp(ns: int, idx: int, id: int, op: int = 1, status: int = 0) -> dict[str, object]:
    return dict(KEY, ns=ns, idx=idx, id=id, operation=op, status=status, source="synth")


def ctl(ns: int, kind: str, **kw: object) -> dict[str, object]:
    return dict(
        dict(KEY, **{k: v for k, v in kw.items() if k in KEY}),
        ns=ns,
        kind=kind,
        side=kw.get("side", "back"),
        value=kw.get("value"),
        source="synth",
    )


def build(
    reqs: list[dict[str, object]], rsps: list[dict[str, object]], ctls: list[dict[str, object]] = ()
):  # type: ignore[no-untyped-def,assignment]
    def frame(rows, table):  # type: ignore[no-untyped-def]
        return schema.conform(pl.DataFrame(rows), table) if rows else schema.empty(table)

    return assemble(
        requests=frame(reqs, "requests"),
        responses=frame(rsps, "responses"),
        control=frame(list(ctls), "control"),
        meta={},
    )


@pytest.mark.parametrize(
    ("kind", "value", "outcome"),
    [
        ("disconnect_request", None, "disconnect"),
        ("unbind", None, "unbind"),
        ("suspend", None, "suspend"),
        ("xenbus_state", 5, "disconnect"),
    ],
)
def test_unanswered_request_says_why(kind: str, value: int | None, outcome: str) -> None:
    s = build([req(10, 0, 1), req(11, 1, 2)], [rsp(12, 0, 2)], [ctl(20, kind, value=value)])
    by_id = {r["id"]: r for r in s.io.to_dicts()}
    assert by_id[2]["outcome"] == "completed"
    assert by_id[1]["outcome"] == outcome
    assert by_id[1]["rsp_ns"] is None


def test_destroy_is_domain_wide_and_trace_end_otherwise() -> None:
    s = build(
        [req(10, 0, 1)],
        [],
        [dict(domid=3, ns=30, kind="domain_destroy", side="hypervisor", source="synth")],
    )
    assert s.io["outcome"].to_list() == ["destroy"]
    assert build([req(10, 0, 1)], []).io["outcome"].to_list() == ["trace_end"]


def test_reconnect_starts_a_session_and_a_late_response_still_pairs() -> None:
    # a disconnect request does not split: the refcounted backend answers after it
    s = build(
        [req(10, 0, 7), req(50, 0, 7)],
        [rsp(25, 0, 7), rsp(60, 0, 7)],
        [ctl(20, "disconnect_request"), ctl(40, "xenbus_state", value=4, side="front")],
    )
    assert s.requests["session"].to_list() == [0, 1]
    assert s.responses["session"].to_list() == [0, 1]
    assert s.io["outcome"].to_list() == ["completed", "completed"]
    assert s.pairing.height == 0


def test_index_regression_splits_sessions() -> None:
    s = build([req(10, 100, 1), req(20, 0, 1)], [rsp(30, 0, 1)])
    assert "index_discontinuity" in s.control["kind"].cast(pl.String).to_list()
    assert s.io.sort("req_ns")["session"].to_list() == [0, 1]
    assert s.io.sort("req_ns")["outcome"].to_list() == ["reset", "completed"]


def test_pairing_facts() -> None:
    s = build(
        [req(1, 0, 1, op=6, indirect_op=0), req(2, 1, 2, op=1), req(3, 2, 3), req(4, 3, 3)],
        [rsp(5, 0, 1, op=0), rsp(6, 1, 2, op=0), rsp(7, 2, 2, op=1), rsp(8, 3, 9)],
    )
    kinds = sorted(s.pairing["kind"].cast(pl.String).to_list())
    # indirect answered with its indirect_op is fine; op 1 answered as 0 is not
    assert kinds == ["duplicate_response", "id_reused", "op_mismatch", "orphan_response"]
    mismatch = s.pairing.filter(pl.col("kind") == "op_mismatch").row(0, named=True)
    assert (mismatch["id"], mismatch["operation"], mismatch["expected_operation"]) == (2, 0, 1)
    assert s.io.filter(pl.col("id") == 1)["operation"].to_list() == [0]


def test_xenstore_lines_become_control() -> None:
    xs = pl.DataFrame(
        {
            "ns": [1, 2, 3, 4],
            "tsc": [None, None, None, None],
            "path": [
                "/local/domain/3/device/vbd/51712/state",
                "/local/domain/0/backend/vbd/3/51712/state",
                "/local/domain/3/device/vbd/51712/queue-1/ring-ref",
                "/local/domain/3/memory/target",
            ],
            "value": ["4", "5", "8", "1"],
        },
        schema_overrides={"tsc": pl.UInt64},
    )
    c = control_from_xenstore(xs)
    assert c["kind"].cast(pl.String).to_list() == ["xenbus_state", "xenbus_state", "xenstore"]
    assert c["side"].cast(pl.String).to_list() == ["front", "back", "front"]
    assert c["value"].to_list() == [4, 5, None]
    assert c["queue"].to_list() == [None, None, 1]


def test_load_streams_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        load_streams([tmp_path / "missing.bin"])
    with pytest.raises(InputFileError, match="not a streams folder"):
        load_streams([tmp_path])
    # a file of another tool's format (the realxen poller's header) is refused by
    # detection, not decoded as a xentrace dump with a misleading record error
    other = tmp_path / "ring-1-51712.bin"
    other.write_bytes(b"RXRING01" + bytes(24))
    with pytest.raises(InputFileError, match=r"not a recognised input.*5258") as err:
        load_streams([other])
    assert str(other) in str(err.value)


def test_cli_streams_roundtrip(realxen: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "streams",
            str(realxen / "nopersist" / "trace-all.bin"),
            "-o",
            str(out),
            "--cpu-mhz",
            "2596.125",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["grants"][0]["maps"] == summary["grants"][0]["unmaps"] > 0
    again = load_streams([out])
    assert again.grants.height == summary["tables"]["grants"]
    bad = runner.invoke(app, ["streams", str(tmp_path / "nope"), "-o", str(out)])
    assert bad.exit_code == 1
    assert "error:" in bad.output and "no such file" in bad.output


def connect_run(ns: int) -> list[dict[str, object]]:
    """What one connect logs: domain create, the backend's map, Connected of each end."""
    return [
        dict(domid=3, ns=ns, kind="domain_create", side="hypervisor", source="synth"),
        ctl(ns + 1, "ring_map"),
        ctl(ns + 2, "xenbus_state", value=4, side="back"),
        ctl(ns + 3, "xenbus_state", value=4, side="front"),
    ]


def test_one_connect_is_one_session_numbered_from_its_first_start() -> None:
    s = build([req(10, 0, 1)], [rsp(12, 0, 1)], connect_run(0))
    assert s.requests["session"].to_list() == s.responses["session"].to_list() == [1]
    starts = sessions.session_starts(
        s.control, sessions.ring_keys(s.requests), (s.requests, s.responses)
    )
    assert starts.select("session", "start_ns", "start_kind", "last_start_ns").rows() == [
        (1, 0, "domain_create", 3)
    ]
    # Without traffic to separate them, the raw starts are sessions of their own.
    assert sessions.session_starts(s.control, sessions.ring_keys(s.requests)).height == 4


def test_traffic_between_connects_separates_sessions() -> None:
    # Traffic at a start's own instant belongs to the session that start begins.
    s = build(
        [req(5, 0, 1), req(10, 0, 1), req(30, 0, 1)],
        [rsp(6, 0, 1), rsp(12, 0, 1), rsp(31, 0, 1)],
        [*connect_run(0), ctl(10, "connect"), *connect_run(20)],
    )
    assert s.requests["session"].to_list() == [1, 2, 3]
    assert s.responses["session"].to_list() == [1, 2, 3]
    # A request live at trace start, then two reconnects with nothing between them.
    s = build([req(5, 0, 1)], [], [*connect_run(10), *connect_run(20)])
    assert s.requests["session"].to_list() == [0]
    assert s.io["outcome"].to_list() == ["destroy"]  # the next session began with a domain_create


def test_gap_is_traffic_that_separates_sessions() -> None:
    gap = schema.conform(
        pl.DataFrame(
            [dict(KEY, ns=5, prev_ns=4, producer="req", from_idx=0, count=3)],
        ),
        "gaps",
    )
    ctls = [ctl(0, "connect"), ctl(10, "connect")]
    reqs = [req(12, 0, 1)]
    without = build(reqs, [], ctls)
    frame = schema.conform(pl.DataFrame(reqs), "requests")
    with_gap = assemble(
        requests=frame,
        responses=schema.empty("responses"),
        control=schema.conform(pl.DataFrame(ctls), "control"),
        meta={},
        gaps=gap,
    )
    assert without.requests["session"].to_list() == [1]
    assert with_gap.requests["session"].to_list() == [2]


def test_unanswered_reason_comes_from_the_first_start_of_the_next_session() -> None:
    # Pending at 10; the next session is begun by a bind (-> unbind), then a connect follows.
    s = build(
        [req(10, 0, 1), req(40, 0, 2)],
        [rsp(41, 0, 2)],
        [ctl(0, "connect"), ctl(20, "bind"), ctl(21, "connect")],
    )
    assert s.io.sort("req_ns")["session"].to_list() == [1, 2]
    assert s.io.sort("req_ns")["outcome"].to_list() == ["unbind", "completed"]
