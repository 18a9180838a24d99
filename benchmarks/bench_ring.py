"""Benchmark: the public ring-capture path on >= 1 M order-0 snapshots (x86_64-abi).

Usage: python benchmarks/bench_ring.py [--snapshots 250000 1000000] [--chunk 16384]
       [--traffic full|via] [--dir DIR]
       python benchmarks/bench_ring.py --assign-only [--snapshots 1000000]

For each size, writes a pcapng capture (SHB and IDB by RingcapWriter; the
snapshot blocks with NumPy in RingcapWriter's exact layout, checked byte for
byte against it on the first 1,000 snapshots), then times, each in a fresh
interpreter under /usr/bin/time -v (page cache warm, file just written):

* ``chunked``: derive_ring_streams_chunked(iter_ringcap_chunks(path)) - the
  bounded-memory public path - run twice in the process (cold, then warm);
* ``whole``: derive_ring_streams(read_ringcap(path)) - the whole-file map.

Traffic ``full`` (default): each snapshot publishes one request and answers
the previous one, so each yields one full request and one response. Traffic
``via``: three snapshots in four answer their own request before it was
seen, as a polled capture of a fast backend sees them (about 3 in 4 requests
on the real captures): those requests are ``via_response`` and get their id
from the response (``_assign_via_response``); the fourth stays in flight
until the next snapshot.

``--assign-only`` times the via-response assignment alone (the step that runs
when a ring ends), in process, best of 3, on the arrays the ``via`` capture
of that many snapshots gives it. Prints GB/s of page data (4096
bytes per snapshot), wall time of the process and peak RSS (which counts the
file pages mapped at the time, as well as anonymous memory).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PAGE = 4096
NR_ENTS = 32
ENTRY = 112
BLOCK = 28 + PAGE + 28 + 4 + 4  # EPB head, page, tsc comment, end of options, trailer


def rsp_prod(k: np.ndarray, traffic: str) -> np.ndarray:
    """rsp_prod of snapshot k: k (full), or k + 1 except every fourth (via)."""
    if traffic == "full":
        return k
    return np.where(k % 4 == 0, k, k + 1)


def make_pages(first: int, count: int, template: np.ndarray, traffic: str = "full") -> np.ndarray:
    """Snapshots first..first+count-1: req_prod = k + 1, rsp_prod = :func:`rsp_prod`."""
    pages = np.repeat(template[None, :], count, axis=0)
    k = np.arange(first, first + count, dtype=np.uint64)
    hdr = pages[:, :16].view("<u4")
    hdr[:, 0] = (k + 1) & 0xFFFFFFFF
    hdr[:, 1] = (k + 2) & 0xFFFFFFFF
    hdr[:, 2] = rsp_prod(k, traffic) & 0xFFFFFFFF
    hdr[:, 3] = (k + 1) & 0xFFFFFFFF
    slots = pages[:, 64 : 64 + NR_ENTS * ENTRY].reshape(count, NR_ENTS, ENTRY)
    rows = np.arange(count)
    # the new request k (full) and the response to request k-1 in its slot
    req = slots[rows, (k % NR_ENTS).astype(np.intp)]
    req[:, 8:16] = k[:, None].view(np.uint8).reshape(count, 8)
    req[:, 16:24] = (k * 8)[:, None].view(np.uint8).reshape(count, 8)
    rsp = np.zeros((count, ENTRY), np.uint8)
    rsp[:, 0:8] = (k - 1)[:, None].view(np.uint8).reshape(count, 8)
    rsp[:, 8] = 1
    slots[rows, (k % NR_ENTS).astype(np.intp)] = req
    has_prev = k > 0
    slots[rows[has_prev], ((k[has_prev] - 1) % NR_ENTS).astype(np.intp)] = rsp[has_prev]
    # via: request k already answered in its own snapshot, its slot holds the response
    own = rsp_prod(k, traffic) == k + 1
    own_rsp = np.zeros((int(own.sum()), ENTRY), np.uint8)
    own_rsp[:, 0:8] = k[own][:, None].view(np.uint8).reshape(-1, 8)
    own_rsp[:, 8] = 1
    slots[rows[own], (k[own] % NR_ENTS).astype(np.intp)] = own_rsp
    return pages


def _template() -> np.ndarray:
    from blktrace_xen.encode.blkif import RingPage

    r = RingPage("x86_64-abi", 0)
    for s in range(NR_ENTS):
        r.put_request(s, operation=1, id=0, segments=[(5, 0, 7)])
    return np.frombuffer(r.to_bytes(), dtype=np.uint8)


def _blocks(first: int, count: int, template: np.ndarray, traffic: str) -> bytes:
    """Enhanced packet blocks of snapshots first.., as RingcapWriter.write_snapshot writes them."""
    out = np.zeros((count, BLOCK), np.uint8)
    k = np.arange(first, first + count, dtype=np.uint64)
    ns = k * 3_000_000
    head = out[:, :28].view("<u4")
    head[:, 0] = 6
    head[:, 1] = BLOCK
    head[:, 2] = 0
    head[:, 3] = ns >> np.uint64(32)
    head[:, 4] = ns & np.uint64(0xFFFFFFFF)
    head[:, 5] = PAGE
    head[:, 6] = PAGE
    out[:, 28 : 28 + PAGE] = make_pages(first, count, template, traffic)
    opt = 28 + PAGE
    out[:, opt : opt + 4].view("<u2")[:] = (1, 24)
    text = "".join(f"tsc={7 * int(v):020d}" for v in range(first, first + count)).encode()
    out[:, opt + 4 : opt + 28] = np.frombuffer(text, np.uint8).reshape(count, 24)
    out[:, BLOCK - 4 :].view("<u4")[:, 0] = BLOCK
    return out.tobytes()


def write_capture(path: Path, n: int, chunk: int = 65536, traffic: str = "full") -> None:
    from blktrace_xen.encode.ringcap import RingcapWriter

    template = _template()
    with RingcapWriter(path) as w:
        w.add_ring(1, 51712)
    with open(path, "ab") as f:
        for first in range(0, n, chunk):
            f.write(_blocks(first, min(chunk, n - first), template, traffic))


def check_layout(tmp: Path, traffic: str) -> None:
    """The NumPy-written blocks are byte for byte what RingcapWriter writes."""
    from blktrace_xen.encode.ringcap import RingcapWriter

    n = 1000
    template = _template()
    ours, ref = tmp / "ours.pcapng", tmp / "ref.pcapng"
    write_capture(ours, n, chunk=300, traffic=traffic)
    pages = make_pages(0, n, template, traffic)
    with RingcapWriter(ref) as w:
        i = w.add_ring(1, 51712)
        for k in range(n):
            w.write_snapshot(i, k * 3_000_000, pages[k].tobytes(), tsc=7 * k)
    if ours.read_bytes() != ref.read_bytes():
        raise SystemExit("benchmark capture differs from RingcapWriter's output")
    ours.unlink()
    ref.unlink()


def measure(path: Path, mode: str, chunk: int, n: int, traffic: str) -> None:
    """In a fresh interpreter: time the public path twice (cold, warm)."""
    t0 = time.perf_counter()
    from blktrace_xen.decode.ring import derive_ring_streams, derive_ring_streams_chunked
    from blktrace_xen.decode.ringcap import iter_ringcap_chunks, read_ringcap

    t_imp = time.perf_counter() - t0
    gb = n * PAGE / 1e9
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        if mode == "chunked":
            st = derive_ring_streams_chunked(iter_ringcap_chunks(path, snapshots_per_chunk=chunk))
        else:
            st = derive_ring_streams(read_ringcap(path))
        dt = time.perf_counter() - t0
        answers = int(rsp_prod(np.array([n - 1], np.uint64), traffic)[0])
        assert st.requests.height == n and st.responses.height == answers, (
            st.requests.height,
            st.responses.height,
        )
        # every request, via_response ones too, carries its own id (k)
        assert st.requests["id"].to_list() == list(range(n))
        via = int((st.requests["seen"] == "via_response").sum())
        out_mb = (st.requests.estimated_size() + st.responses.estimated_size()) / 2**20
        print(
            f"RESULT {label} {dt:.3f} s {gb / dt:.2f} GB/s "
            f"(imports {t_imp:.2f} s, output tables {out_mb:.0f} MB, {via} via_response)",
            flush=True,
        )
        del st


def measure_assign(n: int) -> None:
    """Time _assign_via_response on the arrays a ``via`` capture of n snapshots hands it."""
    from blktrace_xen.decode.ring import _assign_via_response

    k = np.arange(n, dtype=np.uint64)
    answered = rsp_prod(k, "via") == k + 1
    rp = rsp_prod(k, "via")
    # responses of snapshot k: indices [rsp_prod(k - 1), rsp_prod(k)), in index order
    prev = np.concatenate([[0], rp[:-1]]).astype(np.int64)
    s_snap = np.repeat(np.arange(n), (rp.astype(np.int64) - prev))
    rsp_id = np.arange(len(s_snap), dtype=np.uint64)
    args = {
        "answered": answered,
        "req_id": np.where(answered, 0, k).astype(np.uint64),
        "rsp_id": rsp_id,
        "rsp_op": np.ones(len(s_snap), np.uint8),
        "q_snap": np.arange(n),
        "s_snap": s_snap,
    }
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        out_id, _op, ok = _assign_via_response(**args)
        best = min(best, time.perf_counter() - t0)
    assert ok.sum() == answered.sum() and (out_id[answered] == k[answered]).all()
    print(
        f"_assign_via_response: {n} requests ({int(answered.sum())} via_response), "
        f"{len(s_snap)} responses: best of 3 {best:.3f} s ({n / best / 1e6:.1f} M requests/s)"
    )


def _run_child(path: Path, mode: str, chunk: int, n: int, traffic: str) -> None:
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        __file__,
        "--measure",
        mode,
        "--file",
        str(path),
        "--chunk",
        str(chunk),
        "--snapshots",
        str(n),
        "--traffic",
        traffic,
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)[1]) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", p.stderr)[1]
    results = [line.removeprefix("RESULT ") for line in p.stdout.splitlines() if "RESULT" in line]
    label = f"{mode} (chunk {chunk})" if mode == "chunked" else mode
    print(f"  {label:<22} {' | '.join(results)}; process wall {wall}, peak RSS {rss:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshots", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--chunk", type=int, default=16384)
    ap.add_argument("--traffic", choices=["full", "via"], default="full")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--measure", choices=["chunked", "whole"], default=None)
    ap.add_argument("--file", type=Path, default=None)
    ap.add_argument("--assign-only", action="store_true")
    a = ap.parse_args()
    if a.assign_only:
        for n in a.snapshots:
            measure_assign(n)
        return
    if a.measure:
        measure(a.file, a.measure, a.chunk, a.snapshots[0], a.traffic)
        return
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        tmp = Path(d)
        check_layout(tmp, a.traffic)
        for n in a.snapshots:
            path = tmp / f"ring-{n}.pcapng"
            t0 = time.perf_counter()
            write_capture(path, n, traffic=a.traffic)
            t_w = time.perf_counter() - t0
            print(
                f"{n} snapshots ({a.traffic} traffic), {n * PAGE / 1e9:.2f} GB of page data, "
                f"{path.stat().st_size / 1e9:.2f} GB file (written in {t_w:.1f} s)"
            )
            _run_child(path, "chunked", a.chunk, n, a.traffic)
            _run_child(path, "whole", a.chunk, n, a.traffic)
            path.unlink()


if __name__ == "__main__":
    main()
