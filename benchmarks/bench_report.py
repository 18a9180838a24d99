"""Report size and time for a large trace: ``python benchmarks/bench_report.py [--events N]``.

Builds analysed-looking Streams with N request + response events (default
10 M, on 8 rings) and findings, then times what ``blktrace-xen report`` does
after decoding and analysis: assemble (all reductions in polars), render and
write the HTML and Markdown. Prints one JSON line; run it under
``/usr/bin/time -v`` for peak RSS. Goal (issue 8): <= 15 MB and <= 15 s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from blktrace_xen.report import assemble, write_report
from blktrace_xen.report.sample import sample_streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rings", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="keep the report here")
    args = parser.parse_args()

    t = time.perf_counter()
    streams, findings = sample_streams(args.events, n_rings=args.rings, seed=0)
    build_s = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        data = assemble(streams, findings)
        assemble_s = time.perf_counter() - t
        t = time.perf_counter()
        html_path, md_path = write_report(data, out / "report.html", out / "report.md")
        write_s = time.perf_counter() - t
        html_mb = html_path.stat().st_size / 1e6
        md_kb = md_path.stat().st_size / 1e3

    events = streams.requests.height + streams.responses.height
    points = sum(r.inflight.height + r.occupancy.height for r in data.rings)
    print(
        json.dumps(
            {
                "events": events,
                "io_rows": streams.io.height,
                "snapshots": streams.snapshots.height,
                "rings": data.summary["rings"],
                "findings": data.summary["findings_total"],
                "ring_points": points,
                "latency_points": data.latency_time.height,
                "build_inputs_s": round(build_s, 2),
                "assemble_s": round(assemble_s, 2),
                "write_s": round(write_s, 2),
                "report_s": round(assemble_s + write_s, 2),
                "html_mb": round(html_mb, 2),
                "md_kb": round(md_kb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
