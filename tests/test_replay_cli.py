"""``blktrace-xen replay``: table, JSON, exit 3 when the last-named logic still violates."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blktrace_xen.cli import app
from blktrace_xen.streams.store import write_streams
from tests.test_replay_inputs import disconnect_during_io

runner = CliRunner()
LEGACY, PATCHED = "xbdback-2005-immediate", "xbdback-2005-refcount"


def _folder(tmp_path: Path) -> str:
    out = tmp_path / "streams"
    write_streams(disconnect_during_io(), out)
    return str(out)


def test_patched_last_exits_0_with_side_by_side_table(tmp_path: Path) -> None:
    res = runner.invoke(app, ["replay", _folder(tmp_path), "--logic", LEGACY, "--logic", PATCHED])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "response-after-unmap" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells == ["response-after-unmap", "6", "0"]
    assert "fails" in res.output and "passes" in res.output


def test_legacy_last_exits_3_and_json_has_the_violations(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    res = runner.invoke(app, ["replay", folder, "--logic", PATCHED, "--logic", LEGACY, "--json"])
    assert res.exit_code == 3
    doc = json.loads(res.stdout)
    assert doc["last_fails"] is True
    assert [v["logic"] for v in doc["verdicts"]] == [PATCHED, LEGACY]
    assert doc["verdicts"][1]["by_invariant"] == {"response-after-unmap": 6}
    assert doc["side_by_side"] == [{"invariant": "response-after-unmap", PATCHED: 0, LEGACY: 6}]


def test_bad_user_logic_is_one_line_error(tmp_path: Path) -> None:
    logic = tmp_path / "mine.py"
    logic.write_text(
        "class Half:\n    name = 'half'\n    def attach(self, be, t):\n        return True\n"
    )
    res = runner.invoke(app, ["replay", _folder(tmp_path), "--logic", f"{logic}:Half"])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Half" in lines[0] and "missing" in lines[0]


def test_missing_input_is_one_line_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["replay", str(tmp_path / "nope.xt"), "--logic", LEGACY])
    assert res.exit_code == 1
    assert res.output.strip().startswith("error: ") and "nope.xt" in res.output


def test_event_by_event_gives_the_same_verdicts_and_says_what_ran_in_bulk() -> None:
    trace = str(Path(__file__).resolve().parent.parent / "replays" / "steady" / "trace.xentrace")
    args = ["replay", trace, "--logic", "linux-default", "--logic", "xbd-2006-recovery-fixed"]
    out = []
    for extra in ([], ["--event-by-event"]):
        res = runner.invoke(app, [*args, *extra, "--json"])
        assert res.exit_code == 0, res.output
        out.append(json.loads(res.output)["verdicts"])
    bulk, slow = out
    for fast_v, slow_v in zip(bulk, slow, strict=True):
        # The steady trace is one window for both logics; --event-by-event runs none.
        assert fast_v.pop("events_in_bulk") == fast_v["events"] > 1000
        assert slow_v.pop("events_in_bulk") == 0
        fast_v.pop("elapsed_s")
        slow_v.pop("elapsed_s")
        assert fast_v == slow_v
