"""blktrace-xen capture on real Xen: the lab's five scenarios, captured by the agent in dom0.

The data (tests/data/realxen-agent/, made as lab/README.md says) are what the agent wrote
in the real Xen 4.17 lab, with blkback's own counters and the guest's results beside them:
nobody here wrote those bytes or those counts.
"""

from __future__ import annotations

import lzma
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from blktrace_xen.analyses import run_rules
from blktrace_xen.capture.lines import LineDecoder
from blktrace_xen.decode.agentcap import agent_tables
from blktrace_xen.decode.ringcap import read_ringcap
from blktrace_xen.replay import replay
from blktrace_xen.streams import SOURCE_TABLES, Streams
from blktrace_xen.streams.assemble import assemble
from blktrace_xen.streams.load import load_streams
from blktrace_xen.structs.agentcap import Kind, RingReason

DATA = Path(__file__).resolve().parent / "data" / "realxen-agent"
CPU_MHZ = 2596.125
SCENARIOS = ("steady", "nopersist", "detach", "saverestore", "rebind")
HEALTHY = SCENARIOS  # a detach is an operation, not a fault: quiet too
NO_IO_ERROR = ("steady", "nopersist", "saverestore", "rebind")
# blkback's counter names per effective operation (BLKIF_OP_*)
_COUNTER = {0: "rd_req", 1: "wr_req", 2: "f_req", 3: "f_req", 5: "ds_req"}


@cache
def capture() -> Path:
    """The run's one agent capture (all five scenarios), decompressed once per session."""
    out = Path(__file__).resolve().parents[1] / ".pytest_cache" / "realxen-agent"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "agent.pcapng"
    if not path.exists():  # xdist workers may race here: each writes its own, then renames
        tmp = out / f"agent.{os.getpid()}.tmp"
        tmp.write_bytes(lzma.decompress((DATA / "agent.pcapng.xz").read_bytes()))
        os.replace(tmp, path)
    return path


@cache
def all_streams() -> Streams:
    return load_streams([capture()], cpu_mhz=CPU_MHZ)


@cache
def domids(scenario: str) -> tuple[int, ...]:
    """The scenario's domains, as its vbd state log names them."""
    text = (DATA / scenario / "vbd-state.txt").read_text()
    return tuple(sorted({int(d) for d in re.findall(r" domid=(\d+) ", text)}))


def mine(frame: pl.DataFrame, scenario: str) -> pl.DataFrame:
    return frame.filter(pl.col("domid").is_in(domids(scenario)))


@cache
def findings() -> pl.DataFrame:
    return run_rules(all_streams())


def stats(scenario: str) -> list[dict[str, Any]]:
    """blkback-stats.txt: per vbd, blkback's counters and the dom0 clocks they were read at."""
    rows = []
    for line in (DATA / scenario / "blkback-stats.txt").read_text().splitlines():
        m = re.match(r"vbd-(\d+)-(\d+) .*monotonic_ns=(\d+)", line)
        if m:
            fields = dict(re.findall(r"(\w+)=(\d+)", line))
            rows.append(
                {
                    "domid": int(m.group(1)),
                    "vdev": int(m.group(2)),
                    "mono": int(m.group(3)),
                    **{k: int(fields[k]) for k in ("rd_req", "wr_req", "f_req", "ds_req")},
                }
            )
    return rows


def guest(scenario: str) -> dict[str, dict[str, int]]:
    """The guest's own counts per disk (`RX: RESULT xvdX: ... writes=.. verified_reads=..`)."""
    out = {}
    for line in (DATA / scenario / "domU-results.txt").read_text().splitlines():
        m = re.search(r"RESULT (xvd\w): (.*)", line)
        if m:
            out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def test_the_raw_lines_give_the_capture_s_records() -> None:
    """bpftrace's lines as the agent recorded them, decoded again, are the capture's
    probe records byte for byte (the agent adds only its clock and notes)."""
    raw = lzma.decompress((DATA / "agent-raw.txt.xz").read_bytes()).decode()
    dec = LineDecoder()
    again = [r for line in raw.splitlines() for r in dec.feed(line)]
    added = (Kind.CLOCK, Kind.AGENT, Kind.LOST)
    kept = [(ns, rec) for ns, rec in read_ringcap(capture()).agent if rec[0] not in added]
    assert dec.unparsed == 0
    # the lab powers dom0 off with the agent running: the raw log's unflushed tail is
    # gone, the capture's blocks up to its last flush are kept
    assert len(again) > 0.9 * len(kept)
    assert again == kept[: len(again)]


def test_nothing_was_lost_missed_or_left_without_bytes() -> None:
    summary = all_streams().meta["inputs"][0]["agent"]
    assert summary["lost_events"] == 0
    assert summary["bad_records"] == 0
    assert summary["responses_missed"] == 0
    assert summary["request_bytes_missing"] == 0
    # every ring: one request per index, no gap, from its first to its last
    for _, ring in all_streams().requests.group_by(["domid", "vdev", "queue"]):
        idx = ring["idx"].cast(pl.Int64)
        assert idx.n_unique() == ring.height


def _effective_op() -> pl.Expr:
    return (
        pl.when(pl.col("operation") == 6)
        .then(pl.col("indirect_op"))
        .otherwise(pl.col("operation"))
        .alias("op")
    )


@cache
def first_sights() -> pl.DataFrame:
    """blkback's counters of each backend instance when the agent first saw it: at its
    connect (counters 0), or for one connected before the agent, at its first kick. A
    ring's kernel address is reused by later instances, so a first kick only counts
    where the same ring had no connect seen before it."""
    t = agent_tables(read_ringcap(capture()).agent)
    rings = t.get(Kind.RING).sort("ns")
    connects = rings.filter(pl.col("reason") == RingReason.CONNECT)
    kicks = rings.filter(pl.col("reason") == RingReason.FIRST_SIGHT).join(
        connects.select("ring", pl.col("ns").alias("c_ns")), on="ring", how="left"
    )
    kicks = kicks.filter(pl.col("c_ns").is_null() | (pl.col("c_ns") > pl.col("ns"))).drop("c_ns")
    return pl.concat([connects, kicks.unique(subset=["ring", "ns"])]).sort("ns")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_guest_s_writes_and_reads_are_all_in_the_capture(scenario: str) -> None:
    """Exact: for each disk, the guest's own count of writes it completed equals blkback's
    write counter when the agent first saw the disk's backend plus the write requests
    captured (full bytes) from that index on, over every backend instance the disk had;
    reads likewise, plus the kernel's own reads at boot (a few, counted by blkback, not by
    the workload). Indices of an instance the agent saw before its first response
    (attach) are counted, not attributed to an operation: `slack`."""
    s = all_streams()
    req = mine(s.requests, scenario).with_columns(_effective_op())
    for disk, counts in guest(scenario).items():
        vdev = 51712 + 16 * (ord(disk[-1]) - ord("a"))
        writes, reads, slack = 0, 0, 0
        sights = first_sights().filter(
            pl.col("domid").is_in(domids(scenario)) & (pl.col("vdev") == vdev)
        )
        assert sights.height >= 1
        for sight in sights.iter_rows(named=True):
            inst = req.filter(
                (pl.col("domid") == sight["domid"])
                & (pl.col("vdev") == vdev)
                & (((pl.col("idx").cast(pl.Int64) - sight["req_cons"]) % (1 << 32)) < (1 << 31))
            )
            # a later instance of the same ring (rebind) re-counts from its own first sight
            later = sights.filter(
                (pl.col("domid") == sight["domid"]) & (pl.col("ns") > sight["ns"])
            )
            if later.height:
                inst = inst.filter(pl.col("idx") < later["req_cons"].min())
            first_idx = inst["idx"].min() if inst.height else sight["req_cons"]
            slack += (first_idx - sight["req_cons"]) % (1 << 32)
            writes += sight["st_wr_req"] + inst.filter(pl.col("op") == 1).height
            reads += sight["st_rd_req"] + inst.filter(pl.col("op") == 0).height
            assert inst["seen"].unique().to_list() in ([], ["full"])
        if scenario == SCENARIOS[-1]:
            # the run ends with a power-off while the agent runs: what bpftrace still held
            # in its output buffer (a few lines a request, 8 KiB) never reached the capture
            slack += 32
        assert 0 <= counts["writes"] - writes <= slack, (disk, counts, writes, slack)
        boot_reads = reads - counts["verified_reads"]
        assert -slack <= boot_reads <= 16, (disk, counts, reads, slack)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_blkback_s_counters_bound_what_was_captured(scenario: str) -> None:
    """Bounded: the lab reads blkback's counters with one `cat` per file after stamping
    the clock (~0.1 s each in the emulated dom0), so each counter lies between what the
    capture had consumed at the stamp and what it had consumed two seconds later."""
    req = mine(all_streams().requests, scenario).with_columns(
        _effective_op(), pl.coalesce("consumed_ns", "ns").alias("t")
    )
    checked = 0
    for st in stats(scenario):
        sights = first_sights().filter(
            (pl.col("domid") == st["domid"])
            & (pl.col("vdev") == st["vdev"])
            & (pl.col("ns") < st["mono"])
        )
        if sights.is_empty():
            continue
        sight = sights.row(-1, named=True)  # the instance alive when the lab read it
        inst = req.filter(
            (pl.col("domid") == st["domid"])
            & (pl.col("vdev") == st["vdev"])
            & (((pl.col("idx").cast(pl.Int64) - sight["req_cons"]) % (1 << 32)) < (1 << 31))
        )
        for name, op in (("rd_req", 0), ("wr_req", 1)):
            ops = inst.filter(pl.col("op") == op)
            low = sight[f"st_{name}"] + ops.filter(pl.col("t") < st["mono"]).height
            high = sight[f"st_{name}"] + ops.filter(pl.col("t") < st["mono"] + 2e9).height
            assert low <= st[name] <= high + 3, (st, name, low, high)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("scenario", HEALTHY)
def test_a_healthy_capture_has_nothing_above_info(scenario: str) -> None:
    above = mine(findings(), scenario).filter(pl.col("severity") != "info")
    assert above.is_empty(), above.select("rule", "message").to_dicts()


@pytest.mark.parametrize("scenario", NO_IO_ERROR)
def test_the_guest_saw_no_error_and_no_response_was_one(scenario: str) -> None:
    g = guest(scenario)
    assert g and all(r["errors"] == 0 and r["mismatches"] == 0 for r in g.values())
    assert mine(all_streams().responses, scenario).filter(pl.col("status") != 0).is_empty()


def test_rebind_shows_the_unbind_and_the_bind() -> None:
    ctl = mine(all_streams().control, "rebind")
    kinds = ctl.filter(pl.col("source") == "agent")["kind"].cast(pl.String).to_list()
    assert kinds.count("unbind") == 1 and kinds.count("bind") == 1
    assert kinds.index("unbind") < kinds.index("bind")
    maps = ctl.filter(pl.col("kind") == "ring_map")
    assert maps.height >= 1


def scenario_streams(scenario: str) -> Streams:
    """The capture's streams of one scenario's domains, assembled again on their own."""
    tables = all_streams().tables()
    parts = {
        name: tables[name].filter(pl.col("domid").is_in(domids(scenario)))
        if "domid" in tables[name].columns
        else tables[name]
        for name in SOURCE_TABLES
    }
    return assemble(**parts, meta=dict(all_streams().meta))


def test_replay_of_the_rebind_breaks_the_init_logic_only() -> None:
    """The rebind run's traffic, replayed: re-initialising the ring counters at bind
    (the logic before the 2019 fix) halts the backend; attaching to the live ring (the
    fix, as Linux 6.1 runs) does not."""
    result = replay(scenario_streams("rebind"), ["blkback-rebind-init", "blkback-rebind-attach"])
    assert result.inconclusive is None
    init, attach = result.verdicts
    assert [v.invariant for v in init.violations] == ["backend-halted"]
    assert not attach.fails, [v.invariant for v in attach.violations]


def test_replay_of_the_whole_run_flags_only_the_rebind() -> None:
    """All six domains of the run replayed together: the five other scenarios' rings give
    no violation under either logic (no cry of wolf), the rebind ring halts under init."""
    result = replay(all_streams(), ["blkback-rebind-init", "blkback-rebind-attach"])
    init, attach = result.verdicts
    assert [(v.ring[0], v.invariant) for v in init.violations] == [
        (domids("rebind")[0], "backend-halted")
    ]
    assert not attach.fails, [v.invariant for v in attach.violations]


def test_saverestore_ends_the_old_ring_and_starts_the_new_domain_s() -> None:
    assert len(domids("saverestore")) == 2
    old, new = domids("saverestore")
    ctl = all_streams().control
    new_map = ctl.filter((pl.col("kind") == "ring_map") & (pl.col("domid") == new))
    assert new_map.height == 1
    assert "live_req_prod=0 live_rsp_prod=0" in new_map["detail"].item()
    ends = ctl.filter(
        (pl.col("domid") == old) & pl.col("kind").is_in(["disconnect_request", "disconnect_done"])
    )
    assert ends.height >= 1


def test_detach_waits_for_its_in_flight_io_and_the_guest_s_errors_are_its_own() -> None:
    """What real Linux 6.1 does on `xl block-detach` with I/O running: blkback's
    disconnect finds no request consumed and unanswered (it drained them: every one was
    answered OK), the frontend stops publishing, and the guest's I/O errors on that disk
    are blkfront's own for I/O it could no longer send (no error response on the ring)."""
    s = all_streams()
    g = guest("detach")
    xvdb = mine(s.responses, "detach").filter(pl.col("vdev") == 51728)
    assert xvdb.height == g["xvdb"]["writes"] + g["xvdb"]["verified_reads"] + 3  # + boot reads
    assert xvdb.filter(pl.col("status") != 0).is_empty()
    assert g["xvdb"]["errors"] > 0
    ctl = mine(s.control, "detach").filter(pl.col("vdev") == 51728)
    disc = ctl.filter(pl.col("kind") == "disconnect_request")
    assert disc.height >= 1 and disc["value"].to_list()[0] == 0  # nothing in flight
    assert "xenbus_state" in ctl["kind"].cast(pl.String).to_list()
    # the other disk of the same guest went on without a disconnect until shutdown
    xvda = mine(s.control, "detach").filter(
        (pl.col("vdev") == 51712) & (pl.col("kind") == "disconnect_request")
    )
    assert xvda["ns"].min() > disc["ns"].min()
