"""Extra event catalogs as the stream builder sees them: remaps by name, ids taken away, errors.

The trace words are laid out by hand from formats/blkif-events.md, not by the
package's own packer, so a wrong field layout in the code cannot agree with them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from blktrace_xen.cli import app
from blktrace_xen.encode.xentrace import TraceRecord, write_xentrace
from blktrace_xen.streams import Streams
from blktrace_xen.streams.load import load_streams

runner = CliRunner()

TRC_GUEST = 0x0800F000
TRC_HW_IRQ_HANDLED = 0x00802008
REQ_PUSH, RSP_PUSH = TRC_GUEST | 0xB01, TRC_GUEST | 0xB04  # the shipped minors
OTHER_RSP_PUSH = TRC_GUEST | 0xC04  # a minor no shipped catalog uses
DOMID, VDEV = 3, 51712
KEY = (DOMID, VDEV)  # word 0 = domid | queue << 16 (queue 0), word 1 = vdev
OP_WRITE = 1


def _req_push(idx: int, rid: int) -> tuple[int, tuple[int, ...]]:
    # idx, id (two words), op | indirect_op << 8 | nr_segments << 16, nr_sectors
    return REQ_PUSH, (*KEY, idx, rid, 0, OP_WRITE | 1 << 16, 8)


def _rsp_push(event: int, idx: int, rid: int) -> tuple[int, tuple[int, ...]]:
    # idx, id (two words), op | status << 16 (status 0)
    return event, (*KEY, idx, rid, 0, OP_WRITE)


def _trace(path: Path, records: list[tuple[int, tuple[int, ...]]]) -> Path:
    # Guest records carry no TSC: a TSC-bearing irq record dates each one, as on a live host.
    recs = []
    for i, (event, words) in enumerate(records):
        recs.append(TraceRecord(0, 1_000 + 100 * i, TRC_HW_IRQ_HANDLED, (1, 0, 0)))
        recs.append(TraceRecord(0, None, event, words))
    write_xentrace(path, recs)
    return path


def _rsp_push_catalog(path: Path, event: int) -> Path:
    """A catalog that defines ``blkif_rsp_push`` at ``event``, with the shipped layout."""
    fields = [
        ("domid", 0, (0, 15), "u16"),
        ("queue", 0, (16, 31), "u16"),
        ("vdev", 1, None, "u32"),
        ("idx", 2, None, "u32"),
        ("id", 3, None, "u64"),
        ("operation", 5, (0, 7), "u8"),
        ("status", 5, (16, 31), "i16"),
    ]
    text = f'[catalog]\nname = "{path.stem}"\n[[event]]\nid = {event:#x}\nname = "blkif_rsp_push"\n'
    for name, word, bits, type_ in fields:
        text += f'  [[event.field]]\n  name = "{name}"\n  word = {word}\n  type = "{type_}"\n'
        if bits is not None:
            text += f"  bits = [{bits[0]}, {bits[1]}]\n"
    path.write_text(text)
    return path


@pytest.fixture()
def trace(tmp_path: Path) -> Path:
    """One request (id 7) answered twice: id 7 at the shipped minor, id 9 at another one."""
    return _trace(
        tmp_path / "trace.bin",
        [_req_push(0, 7), _rsp_push(OTHER_RSP_PUSH, 0, 9), _rsp_push(RSP_PUSH, 0, 7)],
    )


def _load(trace: Path, catalogs: list[Path]) -> Streams:
    return load_streams([trace], cpu_mhz=1000.0, catalogs=catalogs)


def test_shipped_catalog_reads_the_shipped_minor_only(trace: Path) -> None:
    s = _load(trace, [])
    assert s.requests["id"].to_list() == [7]
    assert s.responses["id"].to_list() == [7]


def test_a_later_catalog_remaps_an_event_by_name(trace: Path, tmp_path: Path) -> None:
    mine = _rsp_push_catalog(tmp_path / "mine.toml", OTHER_RSP_PUSH)
    s = _load(trace, [mine])
    assert s.requests["id"].to_list() == [7]
    assert s.responses["id"].to_list() == [9]


def test_the_last_definition_of_a_name_wins(trace: Path, tmp_path: Path) -> None:
    # Remapped away, then back to the shipped id by a later catalog.
    away = _rsp_push_catalog(tmp_path / "away.toml", OTHER_RSP_PUSH)
    back = _rsp_push_catalog(tmp_path / "back.toml", RSP_PUSH)
    assert _load(trace, [away, back]).responses["id"].to_list() == [7]
    assert _load(trace, [back, away]).responses["id"].to_list() == [9]


def test_an_id_taken_by_another_name_leaves_the_event_undefined(
    trace: Path, tmp_path: Path
) -> None:
    probe = tmp_path / "probe.toml"
    probe.write_text(
        f'[catalog]\nname = "probe"\n[[event]]\nid = {RSP_PUSH:#x}\nname = "my_probe"\n'
    )
    s = _load(trace, [probe])
    assert s.requests["id"].to_list() == [7]
    assert s.responses.height == 0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (None, "cannot read"),
        ("not toml ===", "not valid TOML"),
        ('[catalog]\nname = "c"\n[[event]]\nid = 1\nname = "x"\n'
         '  [[event.field]]\n  name = "f"\n  word = 9\n', "word 9 outside 0..6"),
    ],
)  # fmt: skip
def test_a_bad_extra_catalog_is_one_error_line(
    trace: Path, tmp_path: Path, body: str | None, problem: str
) -> None:
    bad = tmp_path / "bad.toml"
    if body is not None:
        bad.write_text(body)
    result = runner.invoke(
        app, ["streams", str(trace), "-o", str(tmp_path / "out"), "--catalog", str(bad)]
    )
    assert result.exit_code == 1
    assert result.output.count("error:") == 1
    assert f"{bad}: " in result.output and problem in result.output
