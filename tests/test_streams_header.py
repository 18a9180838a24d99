"""formats/blkif-trace.h emits exactly the layouts formats/blkif.toml declares.

The header is compiled with gcc against Xen's own hvm_op.h (to check the record
struct and HVMOP number), every helper is called with distinct values, the
captured words are decoded with the TOML field specs, and the decoded values
must equal the arguments.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import polars as pl
import pytest

from blktrace_xen.catalog import load_catalog
from blktrace_xen.resources import formats_dir
from blktrace_xen.streams.from_events import BLKIF_EVENT_NAMES, select_events
from tests.conftest import require_tool

# (C call, event name, expected field values)
CALLS: list[tuple[str, str, dict[str, int]]] = [
    (
        "blkif_trace_req_push(7, 51712, 3, 0xfffffffe, 0x1122334455667788ULL, 6, 1, 300, "
        "2400, 0xa0b0c0d0e0f0ULL)",
        "blkif_req_push",
        dict(
            domid=7,
            vdev=51712,
            queue=3,
            idx=0xFFFFFFFE,
            id=0x1122334455667788,
            operation=6,
            indirect_op=1,
            nr_segments=300,
            nr_sectors=2400,
        ),
    ),
    (
        "",
        "blkif_req_sector",
        dict(domid=7, vdev=51712, queue=3, idx=0xFFFFFFFE, sector_number=0xA0B0C0D0E0F0),
    ),
    (
        "blkif_trace_req_consume(9, 268439808, 1, 5, 42, 1, 0, 11)",
        "blkif_req_consume",
        dict(
            domid=9,
            vdev=268439808,
            queue=1,
            idx=5,
            id=42,
            operation=1,
            indirect_op=0,
            nr_segments=11,
        ),
    ),
    (
        "blkif_trace_rsp_push(9, 51728, 0, 77, 0xdeadbeefcafeULL, 3, -2)",
        "blkif_rsp_push",
        dict(domid=9, vdev=51728, queue=0, idx=77, id=0xDEADBEEFCAFE, operation=3, status=-2),
    ),
    (
        "blkif_trace_rsp_consume(9, 51728, 0, 78, 12, 0, -1)",
        "blkif_rsp_consume",
        dict(domid=9, vdev=51728, queue=0, idx=78, id=12, operation=0, status=-1),
    ),
    (
        "blkif_trace_xenbus_state(4, 51712, 0, BLKIF_TRC_SIDE_BACK, 5)",
        "blkif_xenbus_state",
        dict(domid=4, vdev=51712, queue=0, side=1, state=5),
    ),
    (
        "blkif_trace_ring_map(4, 51712, 2, BLKIF_TRC_SIDE_BACK, 3, BLKIF_TRC_PROTO_X86_32, "
        "100, 90, 0x7ff0)",
        "blkif_ring_map",
        dict(
            domid=4,
            vdev=51712,
            queue=2,
            side=1,
            ring_page_order=3,
            protocol=1,
            req_prod=100,
            rsp_prod=90,
            backend_domid=0x7FF0,
        ),
    ),
    (
        "blkif_trace_ring_unmap(4, 51712, 2, BLKIF_TRC_SIDE_FRONT, 101, 99, 2)",
        "blkif_ring_unmap",
        dict(domid=4, vdev=51712, queue=2, side=0, req_prod=101, rsp_prod=99, inflight=2),
    ),
    (
        "blkif_trace_ref(4, 51712, 0, 1, 3)",
        "blkif_ref_get",
        dict(domid=4, vdev=51712, queue=0, refcnt=3),
    ),
    (
        "blkif_trace_ref(4, 51712, 0, 0, 2)",
        "blkif_ref_put",
        dict(domid=4, vdev=51712, queue=0, refcnt=2),
    ),
    (
        "blkif_trace_suspend(4, 51712, 0, BLKIF_TRC_SIDE_FRONT, 6)",
        "blkif_suspend",
        dict(domid=4, vdev=51712, queue=0, side=0, inflight=6),
    ),
    (
        "blkif_trace_resume(4, 51712, 0, BLKIF_TRC_SIDE_FRONT, 6)",
        "blkif_resume",
        dict(domid=4, vdev=51712, queue=0, side=0, inflight=6),
    ),
    (
        "blkif_trace_disconnect_req(4, 51712, 0, BLKIF_TRC_SIDE_BACK, 1)",
        "blkif_disconnect_req",
        dict(domid=4, vdev=51712, queue=0, side=1, inflight=1),
    ),
    (
        "blkif_trace_disconnect_done(4, 51712, 0, BLKIF_TRC_SIDE_BACK, -16)",
        "blkif_disconnect_done",
        dict(domid=4, vdev=51712, queue=0, side=1, result=-16),
    ),
    (
        "blkif_trace_bind(4, 51712, 0, 0)",
        "blkif_unbind",
        dict(domid=4, vdev=51712, queue=0, side=1),
    ),
    ("blkif_trace_bind(4, 51712, 0, 1)", "blkif_bind", dict(domid=4, vdev=51712, queue=0, side=1)),
]

PROGRAM = r"""
#include <stdio.h>
#include <stdint.h>
#include <xen/xen.h>
#include <xen/trace.h>
#include <xen/hvm/hvm_op.h>
static int capture(int op, const void *arg);
#define BLKIF_TRACE_HYPERCALL(op, arg) capture((op), (arg))
#include "blkif-trace.h"

_Static_assert(sizeof(struct blkif_trace_xentrace) == sizeof(struct xen_hvm_xentrace), "size");
_Static_assert(BLKIF_TRACE_HVMOP_xentrace == HVMOP_xentrace, "hvmop");
_Static_assert(BLKIF_TRACE_MAX_WORDS == TRACE_EXTRA_MAX, "words");

static int capture(int op, const void *arg)
{
    const struct blkif_trace_xentrace *r = arg;
    unsigned i;
    if (op != HVMOP_xentrace || r->event >= 0x1000 || r->extra_bytes > 28 || r->extra_bytes % 4)
        return -22;
    printf("%u %u", r->event, r->extra_bytes / 4);
    for (i = 0; i < 7; i++)
        printf(" %u", i < r->extra_bytes / 4 ? r->extra[i] : 0u);
    printf("\n");
    return 0;
}

int main(void)
{
%CALLS%
    return 0;
}
"""


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> list[list[int]]:
    gcc = require_tool("gcc")
    if not Path("/usr/include/xen/hvm/hvm_op.h").is_file():
        require_tool("/usr/include/xen/hvm/hvm_op.h")
    work = tmp_path_factory.mktemp("hdr")
    src = work / "t.c"
    calls = "\n".join(f"    {c};" for c, _, _ in CALLS if c)
    src.write_text(PROGRAM.replace("%CALLS%", calls))
    exe = work / "t"
    subprocess.run(
        [
            gcc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(formats_dir()),
            str(src),
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [[int(x) for x in line.split()] for line in out.splitlines()]


def test_every_catalog_event_has_a_helper() -> None:
    assert sorted(name for _, name, _ in CALLS) == sorted(BLKIF_EVENT_NAMES)
    shipped = [ev.name for ev in load_catalog().events if ev.catalog == "blkif"]
    assert sorted(shipped) == sorted(BLKIF_EVENT_NAMES)


def test_header_matches_catalog(emitted: list[list[int]]) -> None:
    catalog = load_catalog()
    assert len(emitted) == len(CALLS)
    rows = [
        {
            "cpu": 0,
            "tsc": i,
            "ns": i,
            "event": 0x0800F000 | rec[0],
            "n_extra": rec[1],
            **{f"d{w}": rec[2 + w] for w in range(7)},
        }
        for i, rec in enumerate(emitted)
    ]
    events = pl.DataFrame(
        rows,
        schema_overrides={f"d{w}": pl.UInt32 for w in range(7)}
        | {"event": pl.UInt32, "n_extra": pl.UInt8},
    )
    for (_, name, expected), rec in zip(CALLS, emitted, strict=True):
        spec = catalog.by_name(name)
        assert 0x0800F000 | rec[0] == spec.id, name
        # the helper sends exactly the words the TOML needs, no more
        assert rec[1] == max(f.words_needed for f in spec.fields), name
        got = select_events(events, spec)
        assert got.height == 1, name
        decoded = {k: got[k][0] for k in expected}
        assert decoded == expected, name
