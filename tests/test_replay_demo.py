"""``blktrace-xen demo`` end to end, and ``report --replay`` through the replay API."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from blktrace_xen.cli import app

runner = CliRunner()


def test_demo_writes_everything_and_the_verdicts_split(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    res = runner.invoke(app, ["demo", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for path in doc["files"].values():
        assert Path(path).exists(), path
    assert doc["replay"]["xbdback-2005-immediate"].keys() == {"response-after-unmap"}
    assert doc["replay"]["xbdback-2005-refcount"] == {}
    assert doc["last_fails"] is False
    # The verdicts in the report are the replay's, and the truth agrees with the legacy run.
    truth = json.loads(Path(doc["files"]["truth"]).read_text())
    n_truth = sum(v["invariant"] == "response-after-unmap" for v in truth["violations"])
    assert doc["replay"]["xbdback-2005-immediate"]["response-after-unmap"] == n_truth
    html = Path(doc["files"]["report_html"]).read_text()
    assert 'id="replay"' in html and "xbdback-2005-refcount" in html
    md = Path(doc["files"]["report_md"]).read_text()
    assert "## Replay verdicts" in md
    replay_doc = json.loads(Path(doc["files"]["replay"]).read_text())
    assert [v["verdict"] for v in replay_doc["verdicts"]] == ["fails", "passes"]


def test_demo_prints_where_everything_is(tmp_path: Path) -> None:
    out = tmp_path / "d"
    res = runner.invoke(app, ["demo", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out / "report.html") in res.output
    assert "xbdback-2005-immediate" in res.output and "FAILS" in res.output


def test_report_replay_option_uses_the_replay_api(tmp_path: Path) -> None:
    from blktrace_xen.streams.store import write_streams
    from tests.test_replay_inputs import disconnect_during_io

    folder = tmp_path / "streams"
    write_streams(disconnect_during_io(), folder)
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    res = runner.invoke(
        app,
        [
            "report",
            str(folder),
            "-o",
            str(html),
            "--md",
            str(md),
            "--replay",
            "xbdback-2005-immediate,xbdback-2005-refcount",
        ],
    )
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "xbdback-2005-immediate" in text and "response-after-unmap" in text
