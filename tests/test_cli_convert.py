"""``blktrace-xen convert``: raw page dumps to a ring capture."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from blktrace_xen.cli import app
from blktrace_xen.decode.ring import derive_ring_streams
from blktrace_xen.decode.ringcap import read_ringcap
from blktrace_xen.encode.blkif import RingPage

runner = CliRunner()


def _pages(tmp_path: Path, abi: str, order: int) -> tuple[Path, list[bytes]]:
    r = RingPage(abi, order)
    out = [r.to_bytes()]
    r.put_request(0, operation=1, id=5, sector_number=8, segments=[(1, 0, 7)])
    r.req_prod = 1
    out.append(r.to_bytes())
    r.put_response(0, id=5, operation=1, status=0)
    r.rsp_prod = 1
    out.append(r.to_bytes())
    p = tmp_path / "pages.bin"
    p.write_bytes(b"".join(out))
    return p, out


def test_convert_with_timestamps(tmp_path: Path) -> None:
    raw, pages = _pages(tmp_path, "x86_32-abi", 1)
    ts = tmp_path / "ts.txt"
    ts.write_text("100 7000\n200\n# comment\n300 9000\n")
    out = tmp_path / "o.pcapng"
    res = runner.invoke(
        app,
        [
            "convert",
            str(raw),
            "-o",
            str(out),
            "--ring",
            "4/51728/q1",
            "--abi",
            "x86_32-abi",
            "--order",
            "1",
            "--timestamps",
            str(ts),
        ],
    )
    assert res.exit_code == 0, res.output
    cap = read_ringcap(out)
    assert cap.rings.row(0) == (4, 51728, 1, "x86_32-abi", 1, 64, 0)
    assert cap.snapshots["ns"].to_list() == [100, 200, 300]
    assert cap.snapshots["tsc"].to_list() == [7000, None, 9000]
    assert [bytes(p) for p in cap.pages[(4, 51728, 1)]] == pages
    st = derive_ring_streams(cap)
    assert st.requests.select("idx", "id", "seen").rows() == [(0, 5, "full")]
    assert st.responses.select("idx", "id", "status").rows() == [(0, 5, 0)]


def test_convert_wrong_page_size(tmp_path: Path) -> None:
    raw, _ = _pages(tmp_path, "x86_64-abi", 0)
    raw.write_bytes(raw.read_bytes()[:-100])
    res = runner.invoke(
        app, ["convert", str(raw), "-o", str(tmp_path / "o.pcapng"), "--ring", "1/51712"]
    )
    assert res.exit_code == 1
    assert "error: raw-pages:" in res.output and "not a whole number of 4096-byte" in res.output
    assert str(raw) in res.output


def test_convert_bad_arguments(tmp_path: Path) -> None:
    raw, _ = _pages(tmp_path, "x86_64-abi", 0)
    for args, msg in (
        (["--ring", "x"], "not domid/vdev"),
        (["--ring", "1/2", "--abi", "mips"], "unknown protocol ABI"),
        (["--ring", "1/2", "--order", "7"], "outside 0..4"),
    ):
        res = runner.invoke(app, ["convert", str(raw), "-o", str(tmp_path / "o"), *args])
        assert res.exit_code == 1, res.output
        assert msg in res.output
    res = runner.invoke(app, ["convert", str(tmp_path / "missing"), "-o", "x", "--ring", "1/2"])
    assert res.exit_code == 1 and "cannot read" in res.output
