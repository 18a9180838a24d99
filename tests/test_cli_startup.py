"""CLI start-up stays lean, and ``info``'s direct path behaves exactly as Typer's."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blktrace_xen.cli import INFO_PARAMS, app, plain_info_args, run_plain_info
from blktrace_xen.cli.commands.info import info
from blktrace_xen.encode.xentrace import encode_cpu_change, encode_record, lost_records_record

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "formats" / "samples" / "small.xentrace"
HEAVY = ("polars", "numpy", "plotly", "construct", "pydantic")


def test_import_cli_loads_no_heavy_library() -> None:
    code = (
        "import sys, blktrace_xen.cli\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_direct_info_knows_every_parameter_of_the_command() -> None:
    assert tuple(inspect.signature(info).parameters) == INFO_PARAMS


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["dump", "x"],
        ["info"],
        ["info", "--help"],
        ["info", "-h", "x"],
        ["info", "x", "y"],
        ["info", "x", "--cpu-mhz"],
        ["info", "x", "--cpu-mhz", "-5"],
        ["info", "x", "--cpu-mhz", "1e3"],
        ["info", "x", "--cpu-mhz", "nan"],
        ["info", "x", "--cpu-mhz=1", "--cpu-mhz=2"],
        ["info", "x", "--json", "--json"],
        ["info", "x", "--verbose"],
        ["info", "--", "x"],
        ["info", ""],
    ],
)
def test_unusual_calls_go_to_typer(argv: list[str]) -> None:
    assert plain_info_args(argv) is None


def test_plain_calls_are_parsed() -> None:
    assert plain_info_args(["info", "f.bin"]) == (Path("f.bin"), None, False, False)
    assert plain_info_args(["info", "--json", "--cpu-mhz", "2596.125", "f", "--traceback"]) == (
        Path("f"),
        2596.125,
        True,
        True,
    )
    assert plain_info_args(["info", "--cpu-mhz=.5", "f"]) == (Path("f"), 0.5, False, False)


def _lost_dump(tmp_path: Path) -> Path:
    body = encode_record(lost_records_record(0, 500, 7, 1, 2, 400))
    path = tmp_path / "lost.bin"
    path.write_bytes(encode_cpu_change(0, len(body)) + body)
    return path


@pytest.mark.parametrize(
    "extra",
    [
        ["--cpu-mhz", "2596.125"],
        ["--json"],
        [],
        ["--cpu-mhz=0"],
    ],
)
@pytest.mark.parametrize("which", ["sample", "lost", "missing", "garbage"])
def test_direct_info_equals_typer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, extra: list[str]
) -> None:
    paths = {
        "sample": SAMPLE,
        "lost": _lost_dump(tmp_path),
        "missing": tmp_path / "nope.bin",
        "garbage": tmp_path / "garbage.bin",
    }
    paths["garbage"].write_bytes(b"\x01" * 64)
    argv = ["info", str(paths[which]), *extra]
    args = plain_info_args(argv)
    assert args is not None
    code = run_plain_info(args)
    direct = capsys.readouterr()
    typed = CliRunner().invoke(app, argv)
    assert code == typed.exit_code
    assert direct.out == typed.stdout
    assert direct.err == typed.stderr
    assert (code == 0) == (which in ("sample", "lost") and extra != ["--cpu-mhz=0"])


def test_malloc_tuning_runs_where_the_cli_runs() -> None:
    # glibc accepts both thresholds; elsewhere the call is a no-op, never an error.
    code = "from blktrace_xen.cli import recycle_freed_memory; recycle_freed_memory(); print('ok')"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "ok"
