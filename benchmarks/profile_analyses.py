"""Per-rule profile of the analyses over N generated requests (the bench_analyses input).

Runs the rules one at a time in catalogue order, sharing the derived frames
the way ``run_rules`` does (so a rule that builds a shared frame is charged
for it), then ``btt_table``. For each step it prints the wall time, the
CPU time (all threads: wall time mostly measures other jobs on a shared machine), the
process's resident set after the step and the peak so far:

    python benchmarks/profile_analyses.py --requests 10000000 [--rule ID ...]

The sum of the rule rows is close to ``run_rules`` (which also adjusts
confidence and sorts the findings; shown as its own row).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import polars as pl
from bench_analyses import (
    SPACING_NS,
    generate,
)  # the same input (Python puts this script's folder on sys.path)

from blktrace_xen.analyses import RULES, btt_table, confidence, timeline
from blktrace_xen.analyses.options import AnalysisOptions


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1e6


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=10_000_000)
    ap.add_argument("--rule", action="append", help="profile only these rules (repeatable)")
    ap.add_argument("--spacing-ns", type=int, default=SPACING_NS, help="see bench_analyses")
    args = ap.parse_args()
    streams = generate(args.requests, spacing_ns=args.spacing_ns)
    print(f"input generated: rss {_rss_mb():.0f} MB, peak {_peak_mb():.0f} MB")
    opts = AnalysisOptions()
    rows: list[tuple[str, float, int]] = []
    parts: list[pl.DataFrame] = []
    cpu: list[float] = []
    for rid in args.rule or list(RULES):
        t, c = time.perf_counter(), time.process_time()
        found = RULES[rid].fn(streams, opts).lazy().collect()
        rows.append((rid, time.perf_counter() - t, found.height))
        cpu.append(time.process_time() - c)
        parts.append(found)
        print(
            f"{rid:34s} {rows[-1][1]:6.2f} s  cpu {cpu[-1]:6.2f} s  {found.height:8d} findings  "
            f"rss {_rss_mb():6.0f} MB  peak {_peak_mb():6.0f} MB",
            flush=True,
        )
    t, c = time.perf_counter(), time.process_time()
    confidence.adjust(pl.concat(parts), streams, opts)
    timeline.clear()
    adjust_s = time.perf_counter() - t
    cpu.append(time.process_time() - c)
    print(f"{'(confidence.adjust)':34s} {adjust_s:6.2f} s  cpu {cpu[-1]:6.2f} s")
    t, c = time.perf_counter(), time.process_time()
    table = btt_table(streams)
    btt_s = time.perf_counter() - t
    cpu.append(time.process_time() - c)
    print(
        f"{'btt_table':34s} {btt_s:6.2f} s  cpu {cpu[-1]:6.2f} s  {table.height:8d} rows      "
        f"rss {_rss_mb():6.0f} MB  peak {_peak_mb():6.0f} MB"
    )
    total = sum(r[1] for r in rows) + adjust_s + btt_s
    print(f"total {total:.2f} s, cpu {sum(cpu):.2f} s; peak RSS {_peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
