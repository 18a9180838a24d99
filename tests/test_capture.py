"""blktrace-xen capture without Xen: the generated program, line decoding, record layouts,
refusals, and the agent loop driven by a stand-in bpftrace (a shell script replaying lines)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blktrace_xen.capture import agent
from blktrace_xen.capture.lines import LineDecoder, nodename_key
from blktrace_xen.capture.probes import PROBES, RSP_ENTRY_LEAN, probe_at_line, program
from blktrace_xen.cli import app
from blktrace_xen.decode.agentcap import agent_tables
from blktrace_xen.decode.ringcap import read_ringcap
from blktrace_xen.errors import CaptureError
from blktrace_xen.streams.load import load_streams
from blktrace_xen.structs.agentcap import BODIES, BODY_FMT, HEAD_FMT, Kind, RecordHead
from tests.conftest import require_tool

WORDS = " ".join(f"{w:x}" for w in range(14))


@pytest.fixture(autouse=True)
def _refused_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent remembers refused probes per kernel: never in the real /var/cache here."""
    monkeypatch.setattr(agent, "REFUSED_CACHE", tmp_path / "refused.json")


def _words(*vals: int) -> str:
    """14 slot words, the first ones given (little-endian u64 of a request)."""
    return " ".join(f"{v:x}" for v in [*vals, *([0] * (14 - len(vals)))])


def _request(op: int, nseg: int, rid: int, sector: int, first: int = 0, last: int = 7) -> str:
    # x86_64 blkif_request: op u8, nseg u8, handle u16, pad u32; id u64; sector u64;
    # seg[0] = gref u32, first u8, last u8, pad u16
    w0 = op | nseg << 8 | 51712 << 16
    seg = 0x1234 | first << 32 | last << 40
    return _words(w0, rid, sector, seg)


RING = "ffff888001000000 1 51712 0 3 32"


def _lines() -> list[str]:
    """One healthy exchange: two requests consumed and answered, one racing completion."""
    return [
        "B 900",
        f"R 1000 0 50 {RING} 10 10 10 10 1 1 ffffc90000000000 0 0 0 0",
        f"I 1100 0 0 {RING} 10 10 12 10",
        f"M 1200 0 50 {RING} 10 11 12 10 1",
        f"M 1300 0 50 {RING} 10 12 12 10 1",
        # response to id 7 written at 10 (the slot still holds request 10: id 7, write)
        f"E 2000 1 60 {RING} 10 12 12 10 0 1 7 {_request(1, 1, 7, 800)}",
        f"F 2000 60 {_request(0, 1, 8, 1600)}",
        f"X 2100 1 60 {RING} 2000 7 10 11",
        # response to id 8 at 11
        f"E 3000 0 61 {RING} 11 12 12 11 0 0 8 {_request(0, 1, 8, 1600)}",
        f"F 3000 61 {_words()}",
        f"X 3100 0 61 {RING} 3000 8 11 12",
        "P 4000 0 70 1 backend/vbd/1/51712 1 5 4 0",
        "Z 9000",
    ]


def test_program_holds_every_probe_and_maps_lines_back() -> None:
    text = program(PROBES)
    lines = text.splitlines()
    at = 0
    for p in PROBES:
        first = p.text.splitlines()[0]
        at = lines.index(first, at) + 1
        assert probe_at_line(PROBES, at) is p
    assert "@@FLAGS@@" not in text
    lean = program((RSP_ENTRY_LEAN, *PROBES[1:2]))
    assert 'printf("F ' not in lean and "@unbinding" not in lean  # no sysfs flags needed
    no_sysfs = program(tuple(p for p in PROBES if p.name != "sysfs-bind"))
    assert "@unbinding" not in no_sysfs
    core = program(tuple(p for p in PROBES if p.required))
    assert "@" not in core.replace("@@", "")  # END clears no map the program lacks


@pytest.mark.parametrize("kind", list(Kind))
def test_struct_formats_pack_what_the_declarations_build(kind: Kind) -> None:
    head = (int(kind), 3, 1, 51712, 0, 1, 99, 0xFFFF888001000000, 32, 0)
    names = (
        "kind",
        "protocol",
        "domid",
        "vdev",
        "queue",
        "cpu",
        "tid",
        "ring",
        "nr_ents",
        "reserved",
    )
    assert RecordHead.build(dict(zip(names, head, strict=True))) == struct.pack(HEAD_FMT, *head)
    fmt = struct.Struct(BODY_FMT[kind])
    con = BODIES[kind]
    fields = [s.name for s in con.subcons if s.name is not None]
    fixed = fields[: len(fmt.unpack(bytes(fmt.size)))]
    values = [
        (-3 if n in ("status", "ret", "nr_grants", "inflight") else i + 1)
        for i, n in enumerate(fixed)
    ]
    tail = {"slot": bytes(range(112)), "nodename": b"backend/vbd/1/51712", "text": b"hello"}
    data = dict(zip(fixed, values, strict=True))
    data.update({n: tail[n] for n in fields[len(fixed) :]})
    packed = fmt.pack(*values) + b"".join(tail[n] for n in fields[len(fixed) :])
    assert con.build(data) == packed


def test_lines_become_records_with_their_slots() -> None:
    dec = LineDecoder()
    records = [r for line in _lines() for r in dec.feed(line)]
    assert dec.unparsed == 0 and dec.begin_ns == 900 and dec.end_ns == 9000
    t = agent_tables(records)
    assert t.bad == 0
    entries = t.get(Kind.RSP_ENTRY)
    assert entries["id"].to_list() == [7, 8]
    assert entries["rsp_prod_pvt"].to_list() == [10, 11]
    slots = t.get(Kind.SLOT)
    assert slots["idx"].to_list() == [11, 12]  # k + 1 of each entry
    assert t.get(Kind.RSP_EXIT)["idx"].to_list() == [10, 11]
    xb = t.get(Kind.XENBUS)
    assert xb["frontend_state"].to_list() == [5] and xb["nodename"].to_list() == [
        "backend/vbd/1/51712"
    ]
    assert nodename_key("backend/vbd/12/51728") == (12, 51728)


@pytest.mark.parametrize(
    "line",
    [
        "E 1 2 3",  # short
        f"F 5 6 {WORDS}",  # no E before it
        "S 1 2 ffff 3 4",  # no D before it
        "Q x y z",
        "hello world",
    ],
)
def test_bad_lines_are_counted_not_guessed(line: str) -> None:
    dec = LineDecoder()
    assert dec.feed(line) == []
    assert dec.unparsed == 1 and dec.samples == [line]


def _fake_bpftrace(tmp_path: Path, lines: list[str], *, attach: bool = True, lost: int = 0) -> Path:
    start = (
        "echo 'Attaching 12 probes...'; echo 'B 1'"
        if attach
        else "echo 'Attaching 12 probes...'; echo 'ERROR: Error loading program: "
        "kfunc:xen_blkback:make_response' >&2; exit 255"
    )
    text = [
        "#!/bin/sh",
        start,
        *(f"echo '{ln}'" for ln in lines),
        f"echo 'Lost {lost} events'" if lost else "",
        "trap 'echo \"Z 9999\"; exit 0' INT",
        "while true; do sleep 0.05; done",
    ]
    script = tmp_path / "bpftrace"
    script.write_text("\n".join(text) + "\n")
    script.chmod(0o755)
    return script


def test_agent_writes_exact_streams(tmp_path: Path) -> None:
    fake = _fake_bpftrace(tmp_path, _lines(), lost=3)
    out = tmp_path / "cap.pcapng"
    stats = agent.run_capture(out, seconds=0.5, bpftrace=str(fake), probes=PROBES)
    assert stats.stop_reason == "--seconds 0.5" and stats.lost == 3 and stats.unparsed == 0
    s = load_streams([out])
    req = s.requests.sort("idx")
    assert req["idx"].to_list() == [10, 11]
    assert req["id"].to_list() == [7, 8] and req["operation"].to_list() == [1, 0]
    assert req["sector_number"].to_list() == [800, 1600]
    assert req["nr_sectors"].to_list() == [8, 8]
    assert set(req["seen"].to_list()) == {"full"} and set(req["source"].to_list()) == {"agent"}
    # first sight: the kick at 1100 saw req_prod 12 > 10, 11; consumed at 1200 / 1300
    assert req["ns"].to_list() == [1100, 1100]
    assert req["consumed_ns"].to_list() == [1200, 1300]
    rsp = s.responses.sort("idx")
    assert rsp["idx"].to_list() == [10, 11] and rsp["ns"].to_list() == [2100, 3100]
    assert s.io["latency_ns"].to_list() == [1000, 2000]
    assert any("lost 3 events" in w for w in s.meta["warnings"])
    assert s.meta["inputs"][0]["agent"]["lost_events"] == 3
    ctl = s.control
    assert (
        ctl.filter(ctl["kind"] == "ring_map")["detail"]
        .item()
        .startswith("ring_page_order=0 protocol=x86_64-abi req_prod=10 rsp_prod=10")
    )


def test_a_race_puts_the_request_in_the_next_slot(tmp_path: Path) -> None:
    """Two completions read pvt 10 at entry; the second writes index 11: its request is
    the F slot of its own entry, never the other call's read."""
    lines = [
        f"R 1000 0 50 {RING} 10 10 10 10 1 1 ffffc90000000000 0 0 0 0",
        f"E 2000 1 60 {RING} 10 12 12 10 0 1 7 {_request(1, 1, 7, 800)}",
        f"F 2000 60 {_request(0, 1, 8, 1600)}",
        f"E 2001 0 61 {RING} 10 12 12 10 0 0 8 {_request(1, 1, 7, 800)}",
        f"F 2001 61 {_request(0, 1, 8, 1600)}",
        f"X 2100 1 60 {RING} 2000 7 10 12",
        f"X 2101 0 61 {RING} 2001 8 11 12",
    ]
    fake = _fake_bpftrace(tmp_path, lines)
    out = tmp_path / "race.pcapng"
    agent.run_capture(out, seconds=0.3, bpftrace=str(fake), probes=PROBES)
    s = load_streams([out])
    req = s.requests.sort("idx")
    assert req["id"].to_list() == [7, 8] and req["sector_number"].to_list() == [800, 1600]
    assert s.io["outcome"].to_list() == ["completed", "completed"]


def test_a_race_without_exit_probes_keeps_bytes_and_leaves_the_index_unknown(
    tmp_path: Path,
) -> None:
    """Without the exit probe, two entries that read the same k raced: both requests keep
    their exact bytes (the second racer's read of slot k shows the first one's response
    and is set aside), and the two responses' ring indices are unknown, not guessed."""
    response_7 = _words(7, 1)  # the response to id 7 written over slot 10: id, op 1, status 0
    lines = [
        f"R 1000 0 50 {RING} 10 10 10 10 1 1 ffffc90000000000 0 0 0 0",
        f"E 2000 1 60 {RING} 10 12 12 10 0 1 7 {_request(1, 1, 7, 800)}",
        f"F 2000 60 {_request(0, 1, 8, 1600)}",
        f"E 2001 0 61 {RING} 10 12 12 10 0 0 8 {response_7}",
        f"F 2001 61 {_request(0, 1, 8, 1600)}",
        f"E 3000 0 61 {RING} 12 13 13 12 0 1 9 {_request(1, 1, 9, 2400)}",
    ]
    fake = _fake_bpftrace(tmp_path, lines)
    out = tmp_path / "race.pcapng"
    agent.run_capture(out, seconds=0.3, bpftrace=str(fake), probes=PROBES)
    s = load_streams([out])
    req = s.requests.sort("idx")
    assert req["idx"].to_list() == [10, 11, 12]
    assert req["id"].to_list() == [7, 8, 9] and req["sector_number"].to_list() == [800, 1600, 2400]
    rsp = s.responses.sort("ns")
    assert rsp["idx"].to_list() == [None, None, 12]
    assert s.io["outcome"].to_list() == ["completed"] * 3
    summary = s.meta["inputs"][0]["agent"]
    assert summary["responses_raced"] == 2 and summary["responses_index_unknown"] == 2
    assert summary["request_bytes_missing"] == 0


def test_xenbus_states_of_vbds_only() -> None:
    dec = LineDecoder()
    recs = [
        *dec.feed("V 10 0 5 /local/domain/3/device/vbd/51728 4"),
        *dec.feed("V 11 0 5 /local/domain/3/device/vif/0 4"),
        *dec.feed("W 12 0 5 backend/vbd/3/51728 5"),
        *dec.feed("W 13 0 5 backend/vif/3/0 5"),
    ]
    t = agent_tables(recs)
    xb = t.get(Kind.XENBUS)
    assert xb["domid"].to_list() == [3, 3] and xb["vdev"].to_list() == [51728, 51728]
    assert xb["frontend_state"].to_list() == [4, 255]
    assert xb["backend_state"].to_list() == [255, 5]
    assert dec.unparsed == 0


def test_agent_refuses_when_bpftrace_cannot_attach(tmp_path: Path) -> None:
    fake = _fake_bpftrace(tmp_path, [], attach=False)
    with pytest.raises(CaptureError, match="could not attach"):
        agent.run_capture(tmp_path / "x.pcapng", seconds=1, bpftrace=str(fake), probes=PROBES[:2])


def _sysfs(tmp_path: Path, functions: list[str], *, btf: bool = True) -> Path:
    sys_ = tmp_path / "sys"
    (sys_ / "module" / "xen_blkback").mkdir(parents=True)
    (sys_ / "kernel" / "btf").mkdir(parents=True)
    if btf:
        (sys_ / "kernel" / "btf" / "xen_blkback").write_text("")
    (sys_ / "kernel" / "tracing").mkdir(parents=True)
    (sys_ / "kernel" / "tracing" / "available_filter_functions").write_text(
        "\n".join(functions) + "\n"
    )
    return sys_


ALL = [f"{p.function} [{p.module}]" if p.module else p.function for p in PROBES]


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)


def test_preflight_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_root: None
) -> None:
    monkeypatch.setattr(agent, "SYS", _sysfs(tmp_path, [f for f in ALL if "disconnect" not in f]))
    probes, missing = agent.preflight(sys.executable)
    assert "disconnect" not in {p.name for p in probes}
    assert missing == [
        "xen_blkif_disconnect (xen_blkback) not traceable: no disconnects",
        "xen_blkif_disconnect (xen_blkback) not traceable: no bytes of the requests never answered",
    ]


def test_preflight_refuses_without_make_response(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_root: None
) -> None:
    monkeypatch.setattr(agent, "SYS", _sysfs(tmp_path, [f for f in ALL if "make_resp" not in f]))
    with pytest.raises(CaptureError, match=r"make_response \(xen_blkback\) cannot be traced"):
        agent.preflight(sys.executable)


def test_preflight_refuses_without_btf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_root: None
) -> None:
    monkeypatch.setattr(agent, "SYS", _sysfs(tmp_path, ALL, btf=False))
    with pytest.raises(CaptureError, match="no BTF for xen_blkback"):
        agent.preflight(sys.executable)


def test_capture_cli_refuses_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = CliRunner().invoke(app, ["capture", "-o", str(tmp_path / "x.pcapng")])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "error: capture must run as root in dom0 (it loads eBPF programs)"
    ]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(agent, "SYS", tmp_path / "nothing")
    res = CliRunner().invoke(app, ["capture", "-o", str(tmp_path / "x.pcapng")])
    assert res.exit_code == 1 and "xen-blkback is not loaded" in res.output
    assert not (tmp_path / "x.pcapng").exists()


_RUNNER = """
import sys
from pathlib import Path
from blktrace_xen.capture.agent import run_capture
from blktrace_xen.capture.probes import PROBES
run_capture(Path(sys.argv[1]), bpftrace=sys.argv[2], probes=PROBES,
            on_status=lambda m: print(m, flush=True))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_stopped_or_killed_capture_still_reads(tmp_path: Path, sig: signal.Signals) -> None:
    fake = _fake_bpftrace(tmp_path, _lines())
    out = tmp_path / "cap.pcapng"
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(out), str(fake)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("capturing")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the agent flushed what it has
        cap = read_ringcap(out) if out.stat().st_size else None
        if cap is not None and len(cap.agent) >= 12:
            break
        time.sleep(0.1)
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == (-9 if sig == signal.SIGKILL else 0)
    cap = read_ringcap(out)
    kinds = [r[0] for _, r in cap.agent]
    assert kinds.count(Kind.RSP_ENTRY) == 2 and kinds.count(Kind.RSP_EXIT) == 2
    assert (Kind.AGENT in kinds[-3:]) == (sig != signal.SIGKILL)  # the stop is recorded
    assert load_streams([out]).requests.height == 2


def test_tshark_reads_an_agent_capture(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    fake = _fake_bpftrace(tmp_path, _lines())
    out = tmp_path / "cap.pcapng"
    agent.run_capture(out, seconds=0.3, bpftrace=str(fake), probes=PROBES)
    n = len(read_ringcap(out).agent)
    res = subprocess.run(
        [tshark, "-r", str(out), "-T", "fields", "-e", "frame.interface_name"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.split().count("blkback-agent") == n


def test_docs_probe_table_is_current() -> None:
    from blktrace_xen.capture.probes import probes_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "capture.md").read_text()
    assert probes_table() in doc, "run: python -m blktrace_xen.capture.probes --write"


def test_a_probe_refused_once_is_not_tried_again_on_this_kernel(tmp_path: Path) -> None:
    """bpftrace compiles slowly in a loaded dom0: the agent remembers what the kernel
    refused, so the next capture attaches at the first try."""
    fake = tmp_path / "bpftrace"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> ' + str(tmp_path / "calls") + "\n"
        'if grep -q "^kprobe:xen_blkif_disconnect" "$3"; then\n'
        "  echo 'Attaching 9 probes...'\n"
        "  echo 'ERROR: Error loading program: kprobe:xen_blkif_disconnect (try -v)' >&2\n"
        "  exit 255\n"
        "fi\n"
        "echo 'Attaching 7 probes...'; echo 'B 1'\n"
        "trap 'exit 0' INT\n"
        "while true; do sleep 0.05; done\n"
    )
    fake.chmod(0o755)
    first = agent.run_capture(tmp_path / "a.pcapng", seconds=0.2, bpftrace=str(fake), probes=PROBES)
    assert {"disconnect", "disconnect-dump"}.isdisjoint(first.probes)
    assert len((tmp_path / "calls").read_text().splitlines()) == 3  # two refusals, one attach
    second = agent.run_capture(
        tmp_path / "b.pcapng", seconds=0.2, bpftrace=str(fake), probes=PROBES
    )
    assert second.probes == first.probes
    assert len((tmp_path / "calls").read_text().splitlines()) == 4  # attached at once
    assert any("refused earlier on this kernel" in m for m in second.missing)


def test_a_refused_program_is_dropped_by_name() -> None:
    """bpftrace names the program the kernel refused: an optional probe goes, the others
    stay; response-entry steps through its variants (lean, then as kprobes) before the
    capture gives up."""
    from blktrace_xen.capture.probes import RSP_ENTRY_VARIANTS

    err = "ERROR: Error loading program: kprobe:xen_blkif_disconnect"
    nxt = agent._without_failed(PROBES, err)
    assert nxt is not None  # two programs there: the secondary one (the dump) goes first
    assert {p.name for p in PROBES} - {p.name for p in nxt} == {"disconnect-dump"}
    attempt: tuple = PROBES
    seen = [attempt[0]]
    while True:
        head = attempt[0].attach_points[0]
        nxt = agent._without_failed(attempt, f"ERROR: Error loading program: {head}")
        if nxt is None:
            break
        attempt = nxt
        seen.append(attempt[0])
    assert tuple(seen) == RSP_ENTRY_VARIANTS
    assert RSP_ENTRY_LEAN in seen
