"""reissue-mismatch: a request outstanding at suspend must be re-issued unchanged after resume."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from blktrace_xen.analyses import RULES, AnalysisOptions
from blktrace_xen.streams import Streams
from tests import frames

OPTS = AnalysisOptions()
MS = 1_000_000
SUSPEND = [
    {"ns": 105 * MS, "kind": "suspend", "side": "front"},
    {"ns": 108 * MS, "kind": "resume", "side": "front"},
]


def found(rule: str, s: Streams) -> pl.DataFrame:
    return RULES[rule].fn(s, OPTS).lazy().collect()


def save_restore(reissue: dict[str, Any] | None, **orig: Any) -> Streams:
    """Id 3 answered before the suspend; id 4 (``orig``) outstanding at it; ``reissue`` after."""
    first = {"ns": 100 * MS, "idx": 1, "id": 4, "sector_number": 32768, **orig}
    reqs = [{"ns": 99 * MS, "idx": 0, "id": 3, "sector_number": 64}, first]
    rsps = [{"ns": 99 * MS + MS // 2, "idx": 0, "id": 3}]
    if reissue is not None:
        again = {k: v for k, v in first.items() if k != "ns"}
        reqs.append({**again, "ns": 110 * MS, "idx": 2, "session": 1, **reissue})
        rsps.append({"ns": 111 * MS, "idx": 1, "id": 4, "session": 1})
    return frames.streams(requests=reqs, responses=rsps, control=SUSPEND)


def test_reissued_write_with_another_sector_fires_critical() -> None:
    f = found("reissue-mismatch", save_restore({"sector_number": 0}))
    assert f.height == 1
    row = f.row(0, named=True)
    assert row["severity"] == "critical"
    assert row["id"] == 4 and row["ns"] == 110 * MS and row["idx"] == 2
    ev = json.loads(row["evidence"])
    assert ev["changed"] == "sector_number"
    assert (ev["orig_sector"], ev["re_sector_number"]) == (32768, 0)
    assert (ev["orig_ns"], ev["suspend_ns"], ev["resume_ns"]) == (100 * MS, 105 * MS, 108 * MS)
    assert "sector 0+8" in row["message"] and "sector 32768+8" in row["message"]
    assert "the write lands on other sectors" in row["message"]


def test_reissued_read_with_other_fields_fires_high_and_names_them() -> None:
    s = save_restore({"sector_number": 0, "nr_sectors": 16, "nr_segments": 2}, operation=0)
    f = found("reissue-mismatch", s)
    assert f["severity"].to_list() == ["high"]
    assert json.loads(f["evidence"][0])["changed"] == "sector_number,nr_sectors,nr_segments"
    assert "the read returns other data" in f["message"][0]


def test_reissued_with_another_operation_fires() -> None:
    f = found("reissue-mismatch", save_restore({"operation": 0}))
    assert json.loads(f["evidence"][0])["changed"] == "operation"


def test_identical_reissue_is_silent() -> None:
    s = save_restore({})
    assert found("reissue-mismatch", s).is_empty()
    # ... and the re-issue counts as the original's answer.
    assert found("incomplete-at-disconnect", s).is_empty()


def test_never_reissued_is_not_this_rule() -> None:
    s = save_restore(None)
    assert found("reissue-mismatch", s).is_empty()
    lost = found("incomplete-at-disconnect", s)
    assert lost["id"].to_list() == [4]
    assert json.loads(lost["evidence"][0])["why"] == "suspend"


def test_request_answered_before_the_suspend_is_not_outstanding() -> None:
    # Id 3 was answered at 99.5 ms; a new id-3 request after the resume is unrelated.
    reqs = [
        {"ns": 99 * MS, "idx": 0, "id": 3, "sector_number": 64},
        {"ns": 110 * MS, "idx": 1, "id": 3, "sector_number": 999, "session": 1},
    ]
    rsps = [
        {"ns": 99 * MS + MS // 2, "idx": 0, "id": 3},
        {"ns": 111 * MS, "idx": 0, "id": 3, "session": 1},
    ]
    s = frames.streams(requests=reqs, responses=rsps, control=SUSPEND)
    assert found("reissue-mismatch", s).is_empty()


def test_reissue_without_a_resume_is_not_judged() -> None:
    # Same id, other sector, but the ring was never suspended: ordinary id reuse.
    s = save_restore({"sector_number": 0})
    plain = frames.streams(
        requests=s.requests.drop("session").to_dicts(),
        responses=s.responses.drop("session").to_dicts(),
    )
    assert found("reissue-mismatch", plain).is_empty()


def test_original_known_only_from_its_response_is_not_judged() -> None:
    s = save_restore({"sector_number": 0}, seen="via_response")
    assert found("reissue-mismatch", s).is_empty()


def test_capture_request_dated_by_the_snapshot_before() -> None:
    # A capture first shows the original in the snapshot at 106 ms, after the suspend;
    # the snapshot before (104 ms) says it may have been published before it.
    s = save_restore({"sector_number": 0}, ns=106 * MS, source="ringcap")
    snaps = frames.make_snapshots(
        [
            {"ns": 104 * MS, "req_prod": 1, "rsp_prod": 1},
            {"ns": 106 * MS, "req_prod": 2, "rsp_prod": 1},
        ]
    )
    dated = Streams(
        requests=s.requests,
        responses=s.responses,
        io=s.io,
        pairing=s.pairing,
        control=s.control,
        snapshots=snaps,
    )
    assert found("reissue-mismatch", dated)["id"].to_list() == [4]
    # Without the snapshot before, 106 ms is after the suspend: not outstanding at it.
    assert found("reissue-mismatch", s).is_empty()
