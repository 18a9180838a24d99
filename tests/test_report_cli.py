"""``blktrace-xen report``: files written, one-line errors, numbers equal ``analyze --json``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blktrace_xen.cli import app
from blktrace_xen.report.sample import sample_streams
from blktrace_xen.streams.store import write_streams

runner = CliRunner()


@pytest.fixture(scope="module")
def streams_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("streams")
    streams, _ = sample_streams(6000, n_rings=2, seed=5)
    write_streams(streams, out)
    return out


def _embedded(page: str) -> dict[str, object]:
    blob = re.search(r'<script type="application/json" id="bx-summary">(.*?)</script>', page)
    assert blob is not None
    loaded: dict[str, object] = json.loads(blob.group(1))
    return loaded


def test_report_numbers_equal_analyze_json(streams_dir: Path, tmp_path: Path) -> None:
    html_path, md_path = tmp_path / "r.html", tmp_path / "r.md"
    result = runner.invoke(
        app, ["report", str(streams_dir), "-o", str(html_path), "--md", str(md_path)]
    )
    assert result.exit_code == 0, result.output
    analyzed = runner.invoke(app, ["analyze", str(streams_dir), "--json"])
    assert analyzed.exit_code == 0, analyzed.output
    truth = json.loads(analyzed.stdout)

    page = html_path.read_text(encoding="utf-8")
    shown = _embedded(page)
    summary = shown["summary"]
    assert isinstance(summary, dict)
    assert summary["findings_total"] == truth["summary"]["total"] == len(truth["findings"])
    assert summary["findings_by_severity"] == truth["summary"]["by_severity"]
    assert summary["findings_by_rule"] == truth["summary"]["by_rule"]
    assert json.loads(json.dumps(shown["btt"], default=str)) == truth["btt"]
    # What people see says the same: one row per rule with its exact count.
    for rule, n in truth["summary"]["by_rule"].items():
        assert re.search(
            rf'<tr id="rule-{re.escape(rule)}"><td>{re.escape(rule)}</td><td>'
            rf'<span[^>]*>[a-z]+</span></td><td class="num">{n}</td>',
            page,
        )
    md = md_path.read_text(encoding="utf-8")
    for rule, n in truth["summary"]["by_rule"].items():
        assert re.search(rf"\| {re.escape(rule)} +\| [a-z]+ +\| +{n} \|", md)
    assert f"{truth['summary']['total']} finding" in result.stdout


def test_missing_input_is_one_error_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["report", str(tmp_path / "absent.bin"), "-o", str(tmp_path / "r.html")]
    )
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "absent.bin" in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_verdicts_from_a_json_file_are_shown(streams_dir: Path, tmp_path: Path) -> None:
    verdicts = tmp_path / "v.json"
    verdicts.write_text(
        json.dumps(
            [
                {"logic": "patched", "verdict": "passes", "violations": [], "caveats": []},
                {
                    "logic": "legacy",
                    "verdict": "fails",
                    "caveats": [],
                    "violations": [
                        {
                            "invariant": "x",
                            "t_ns": 1,
                            "domid": 1,
                            "vdev": 51712,
                            "queue": 0,
                            "id": 1,
                            "message": "m",
                        }
                    ],
                },
            ]
        )
    )
    out = tmp_path / "r.html"
    result = runner.invoke(
        app, ["report", str(streams_dir), "-o", str(out), "--verdicts", str(verdicts)]
    )
    assert result.exit_code == 0, result.output
    assert "Replay: legacy fails (1 violation), patched passes (0 violations)." in result.stdout
    assert '<section id="replay">' in out.read_text(encoding="utf-8")


def test_bad_verdict_file_is_one_error_line(streams_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "v.json"
    bad.write_text("{not json")
    result = runner.invoke(
        app, ["report", str(streams_dir), "-o", str(tmp_path / "r.html"), "--verdicts", str(bad)]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "v.json" in result.stderr
