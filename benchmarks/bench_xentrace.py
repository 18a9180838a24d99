"""Benchmark: blktrace-xen info / ingest against xenalyze and a plain read, on one big dump.

Builds ``benchmarks/data/xentrace-<N>M.bin`` from a real trace in
../shared/realxen/ repeated with its TSCs (and lost-record first_tsc) shifted
forward so time keeps increasing, plus a synthetic TRC_LOST_RECORDS and a
TRC_TRACE_WRAP_BUFFER filler between repetitions. Then times, in the same run
and on the same file, each tool's first run and its warm repeats with
``/usr/bin/time -v`` (wall time and peak RSS of a fresh process).

    python benchmarks/bench_xentrace.py --records 10 --repeats 3
    python benchmarks/bench_xentrace.py --records 40 --repeats 1
    python benchmarks/bench_xentrace.py --records 10 --stages   # ingest, stage by stage

``--stages`` times ingest's stages inside one process instead (CPU time of
the process, all threads, and wall; best of the repeats after a first run):
decode to frames, the Parquet sink of those frames alone, and the whole ingest.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
REAL = ROOT.parent / "shared" / "realxen" / "steady" / "trace-all.bin"
CPU_MHZ = "2596.125"

sys.path.insert(0, str(ROOT))


def build(records_m: int) -> Path:
    from blktrace_xen.decode.xentrace import summarize_xentrace
    from blktrace_xen.decode.xentrace_block import decode_block
    from blktrace_xen.decode.xentrace_walk import scan_windows
    from blktrace_xen.encode.xentrace import (
        encode_cpu_change,
        encode_record,
        lost_records_record,
        wrap_buffer_record,
    )
    from blktrace_xen.structs import xentrace as xt

    out = DATA / f"xentrace-{records_m}M.bin"
    if out.exists():
        return out
    DATA.mkdir(parents=True, exist_ok=True)
    raw = REAL.read_bytes()
    words = np.frombuffer(raw, dtype="<u4").copy()
    win = scan_windows(raw)
    block = decode_block(words, 0, win.offset, win.cpu, win.size, path=REAL, fields=False)
    pos = (block.file_offset // 4).astype(np.int64)
    has = block.has_tsc
    tsc_at = pos[has] + 1
    ev = block.header & np.uint32(xt.TRC_EVENT_MASK)
    lost_at = pos[(ev == xt.TRC_LOST_RECORDS) & has] + 4  # first_tsc words
    info = summarize_xentrace(REAL, cpu_mhz=float(CPU_MHZ))
    span = info["last_tsc"] - info["first_tsc"] + 1_000_000
    per_copy = info["records"]
    copies = -(-records_m * 1_000_000 // per_copy)
    base_lo = words[tsc_at].astype(np.uint64)
    base = base_lo | (words[tsc_at + 1].astype(np.uint64) << np.uint64(32))
    lost_base = words[lost_at].astype(np.uint64) | (
        words[lost_at + 1].astype(np.uint64) << np.uint64(32)
    )
    with open(out, "wb") as fh:
        for k in range(copies):
            shift = np.uint64(k * span)
            t = base + shift
            words[tsc_at] = (t & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            words[tsc_at + 1] = (t >> np.uint64(32)).astype(np.uint32)
            lt = lost_base + shift
            words[lost_at] = (lt & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            words[lost_at + 1] = (lt >> np.uint64(32)).astype(np.uint32)
            fh.write(words.tobytes())
            end = info["last_tsc"] + k * span
            extra = encode_record(lost_records_record(0, end + 30, 1000, 0, 0, end + 10))
            extra += encode_record(wrap_buffer_record(0, 40, end + 40))
            fh.write(encode_cpu_change(0, len(extra)) + extra)
    assert struct.unpack_from("<I", out.read_bytes()[:4])[0] == xt.CPU_CHANGE_HEADER
    return out


def timed(cmd: list[str]) -> dict[str, float]:
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr[-800:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", proc.stderr)
    system = re.search(r"System time \(seconds\): ([\d.]+)", proc.stderr)
    assert wall and rss and user and system
    secs = int(wall[1] or 0) * 3600 + int(wall[2]) * 60 + float(wall[3])
    # CPU time beside wall time: on a shared, loaded VM wall time mostly
    # measures the other tenants.
    cpu = float(user[1]) + float(system[1])
    return {"wall_s": secs, "cpu_s": cpu, "rss_mb": int(rss[1]) / 1024}


def stages(path: Path, repeats: int) -> None:
    import os

    from blktrace_xen.cli import recycle_freed_memory

    recycle_freed_memory()  # as the CLI does
    import polars as pl
    from polars.io.plugins import register_io_source

    from blktrace_xen.cli.commands.ingest import ROW_GROUP_ROWS, _ingest_xentrace
    from blktrace_xen.decode.xentrace import IngestRun, iter_xentrace_chunks
    from blktrace_xen.schema import EVENTS_SCHEMA

    out = DATA / "ingest-stages"
    frames: list[pl.DataFrame] = []

    def decode() -> None:
        run = IngestRun.start(path, float(CPU_MHZ))
        frames[:] = iter_xentrace_chunks(path, run=run, chunk_records=ROW_GROUP_ROWS)

    def sink() -> None:
        def src(*_: object) -> object:
            yield from frames

        out.mkdir(parents=True, exist_ok=True)
        register_io_source(src, schema=EVENTS_SCHEMA).sink_parquet(  # type: ignore[arg-type]
            out / "events.parquet", engine="streaming", row_group_size=ROW_GROUP_ROWS,
            compression="lz4", statistics=False,
        )  # fmt: skip

    def whole() -> None:
        _ingest_xentrace(path, out, float(CPU_MHZ), progress=False)

    for name, fn in (("decode to frames", decode), ("sink of those frames", sink),
                     ("whole ingest", whole)):  # fmt: skip
        runs = []
        for _ in range(1 + repeats):
            w, c = time.perf_counter(), time.process_time()
            fn()
            runs.append((time.perf_counter() - w, time.process_time() - c))
        warm = min(runs[1:]) if repeats else (float("nan"), float("nan"))
        print(f"{name:22s} first {runs[0][0]:5.2f} s wall {runs[0][1]:5.2f} s CPU   "
              f"warm {warm[0]:5.2f} s wall {warm[1]:5.2f} s CPU", flush=True)  # fmt: skip
    print(f"{sum(f.height for f in frames)} rows; load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10, help="millions of records")
    ap.add_argument("--repeats", type=int, default=3, help="warm repeats after the first run")
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument("--stages", action="store_true", help="time ingest's stages in-process")
    args = ap.parse_args()
    path = build(args.records)
    if args.stages:
        stages(path, args.repeats)
        return
    size_mb = path.stat().st_size / 1e6
    from blktrace_xen.decode.xentrace import summarize_xentrace

    n = summarize_xentrace(path, cpu_mhz=float(CPU_MHZ))["records"]
    # The console script installed beside this interpreter: a version manager's
    # shim on PATH (pyenv's is a bash script that runs ``pyenv exec``) adds
    # ~0.15 s to every run that is not blktrace-xen's.
    beside = Path(sys.executable).with_name("blktrace-xen")
    exe = str(beside) if beside.exists() else shutil.which("blktrace-xen") or "blktrace-xen"
    print(f"blktrace-xen: {exe}")
    out_dir = DATA / "ingest-out"
    tools = {
        "plain read (cat)": ["sh", "-c", f"cat {path} > /dev/null"],
        "xenalyze (summary)": ["xenalyze", f"--cpu-hz={CPU_MHZ}M", str(path)],
        "blktrace-xen info": [exe, "info", "--cpu-mhz", CPU_MHZ, str(path)],
        "blktrace-xen ingest": [exe, "ingest", "--cpu-mhz", CPU_MHZ, str(path), "-o",
                                str(out_dir)],
    }  # fmt: skip
    results = []
    for name, cmd in tools.items():
        runs = []
        for i in range(1 + args.repeats):
            if name == "xenalyze (summary)":
                cmd_run = ["sh", "-c", " ".join(cmd) + " > /dev/null 2>&1"]
            else:
                cmd_run = cmd
            time.sleep(1 if i == 0 else 0)
            runs.append(timed(cmd_run))
        first, warm = runs[0], runs[1:]
        warm_wall = min(r["wall_s"] for r in warm) if warm else float("nan")
        row = {
            "tool": name,
            "first_s": first["wall_s"],
            "warm_s": warm_wall,
            "first_rec_s": n / first["wall_s"],
            "warm_rec_s": n / warm_wall if warm else float("nan"),
            "warm_mb_s": size_mb / warm_wall if warm else float("nan"),
            "rss_mb": max(r["rss_mb"] for r in runs),
            "first_cpu_s": first["cpu_s"],
            "warm_cpu_s": min(r["cpu_s"] for r in warm) if warm else float("nan"),
        }
        results.append(row)
        print(
            f"{name:22s} first {row['first_s']:6.2f} s  warm {row['warm_s']:6.2f} s  "
            f"{row['warm_rec_s'] / 1e6:6.1f} M rec/s  {row['warm_mb_s']:7.0f} MB/s  "
            f"RSS {row['rss_mb']:6.0f} MB  CPU first {row['first_cpu_s']:5.2f} s "
            f"warm {row['warm_cpu_s']:5.2f} s",
            flush=True,
        )
    xen = next(r for r in results if r["tool"].startswith("xenalyze"))
    info = next(r for r in results if r["tool"] == "blktrace-xen info")
    print(f"file {path.name}: {n} records, {size_mb:.0f} MB")
    print(f"info / xenalyze records/s: first {xen['first_s'] / info['first_s']:.2f}x, "
          f"warm {xen['warm_s'] / info['warm_s']:.2f}x; by CPU time: first "
          f"{xen['first_cpu_s'] / info['first_cpu_s']:.2f}x, "
          f"warm {xen['warm_cpu_s'] / info['warm_cpu_s']:.2f}x")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"records": n, "mb": size_mb, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
