"""Event catalogs: the shipped TOML loads, lookups pick the most specific mask, decode is typed."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from blktrace_xen.catalog import load_catalog
from blktrace_xen.decode.xentrace import read_xentrace
from blktrace_xen.encode.xentrace import TraceRecord, write_xentrace
from blktrace_xen.errors import CatalogError
from blktrace_xen.structs import xentrace as xt

# Every event docs/xen-abi.md §5 lists must be named by the shipped catalog.
ABI_EVENTS = {
    xt.TRC_LOST_RECORDS: "lost_records",
    xt.TRC_TRACE_WRAP_BUFFER: "wrap_buffer",
    xt.TRC_TRACE_CPU_CHANGE: "cpu_change",
    xt.TRC_SCHED_RUNSTATE_CHANGE | 0x120: "runstate_change",
    xt.TRC_SCHED_DOM_ADD: "sched_dom_add",
    xt.TRC_SCHED_DOM_REM: "sched_dom_rem",
    xt.TRC_SCHED_WAKE: "sched_wake",
    xt.TRC_SCHED_BLOCK: "sched_block",
    xt.TRC_SCHED_SHUTDOWN: "sched_shutdown",
    xt.TRC_SCHED_SWITCH: "sched_switch",
    xt.TRC_SCHED_SWITCH_INFPREV: "sched_switch_infprev",
    xt.TRC_SCHED_SWITCH_INFNEXT: "sched_switch_infnext",
    xt.TRC_DOM0_DOM_ADD: "domain_create",
    xt.TRC_DOM0_DOM_REM: "domain_destroy",
    xt.TRC_MEM_PAGE_GRANT_MAP: "grant_map",
    xt.TRC_MEM_PAGE_GRANT_UNMAP: "grant_unmap",
    xt.TRC_MEM_PAGE_GRANT_TRANSFER: "grant_transfer",
    xt.TRC_PV_HYPERCALL_V2: "hypercall",
    xt.TRC_PV_HYPERCALL_SUBCALL: "hypercall_subcall",
    xt.TRC_HW_IRQ_HANDLED: "irq_handled",
    xt.TRC_GUEST | 0x7: "guest",
}


@pytest.mark.parametrize(("event", "name"), sorted(ABI_EVENTS.items()))
def test_shipped_catalog_names_the_abi_events(event: int, name: str) -> None:
    found = load_catalog().lookup(event)
    assert found is not None and found.name == name


def test_most_specific_mask_wins_and_later_catalog_overrides(tmp_path: Path) -> None:
    extra = tmp_path / "mine.toml"
    extra.write_text(
        '[catalog]\nname = "mine"\n'
        '[[event]]\nid = 0x0800f007\nname = "my_probe"\n'
        '  [[event.field]]\n  name = "value"\n  word = 0\n  type = "i16"\n'
        '[[event]]\nid = 0x0010f001\nname = "my_map"\n'
    )
    cat = load_catalog([extra])
    assert cat.lookup(xt.TRC_GUEST | 7).name == "my_probe"  # type: ignore[union-attr]
    assert cat.lookup(xt.TRC_GUEST | 8).name == "guest"  # type: ignore[union-attr]
    assert cat.lookup(xt.TRC_MEM_PAGE_GRANT_MAP).name == "my_map"  # type: ignore[union-attr]
    assert cat.format_record(xt.TRC_GUEST | 7, [0xFFFE]) == "my_probe value=-2"
    assert cat.format_record(xt.TRC_GUEST | 7, []) == "my_probe value=-"


def test_format_record_uses_enums_and_fields() -> None:
    cat = load_catalog()
    text = cat.format_record(xt.TRC_SCHED_RUNSTATE_CHANGE | 0x120, [3 << 16 | 1])
    assert text == "runstate_change d3v1 runnable->blocked"  # old = bits 8..11, new = 4..7
    assert cat.format_record(0x00ABC123, [1]) == "event=0x00abc123 d0=0x00000001"


def test_vectorised_decode_equals_per_record_values(tmp_path: Path) -> None:
    recs = [
        TraceRecord(0, 10 + i, xt.TRC_SCHED_RUNSTATE_CHANGE | (i % 4) << 8 | (i % 3) << 4,
                    (i << 16 | i % 5,))
        for i in range(50)
    ] + [TraceRecord(0, 100, xt.TRC_LOST_RECORDS, (5, 2 | 1 << 16, 0xFFFFFFFF, 3))]  # fmt: skip
    path = tmp_path / "t.bin"
    write_xentrace(path, recs)
    events = read_xentrace(path, cpu_mhz=1000.0).events
    cat = load_catalog()
    for name in ("runstate_change", "lost_records"):
        frame = cat.decode(events, name)
        ev = cat.by_name(name)
        rows = events.filter((pl.col("event") & ev.mask) == ev.id)
        assert frame.height == rows.height > 0
        for got, r in zip(frame.iter_rows(named=True), rows.iter_rows(named=True), strict=True):
            words = [r[f"d{i}"] for i in range(r["n_extra"])]
            want = cat.values(ev, r["event"], words)
            assert {k: got[k] for k in want} == want
    lost = cat.decode(events, "lost_records").row(0, named=True)
    assert lost["first_tsc"] == 3 << 32 | 0xFFFFFFFF and lost["vid"] == 1


def test_short_record_fields_are_null(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_xentrace(path, [TraceRecord(0, 1, xt.TRC_SCHED_SWITCH, (1, 2))])
    frame = load_catalog().decode(read_xentrace(path, cpu_mhz=1000.0).events, "sched_switch")
    row = frame.row(0, named=True)
    assert (row["prev_dom"], row["prev_unit"], row["next_dom"]) == (1, 2, None)


def test_xen_formats_file_gives_names(tmp_path: Path) -> None:
    fmt = tmp_path / "formats"
    fmt.write_text(
        "# comment\n"
        "0x00000000  CPU%(cpu)d  %(tsc)d  unknown (0x%(event)016x)\n"
        "0x00abc001  CPU%(cpu)d  %(tsc)d (+%(reltsc)8d)  my_thing [ x = %(1)d ]\n"
    )
    cat = load_catalog([fmt])
    assert cat.lookup(0x00ABC001).name == "my_thing"  # type: ignore[union-attr]
    assert cat.lookup(0x00ABC002) is None


@pytest.mark.parametrize(
    "body",
    [
        '[[event]]\nid = 1\nname = "x"\n',  # no [catalog]
        '[catalog]\nname = "c"\n[[event]]\nid = 1\nname = "Bad Name"\n',
        '[catalog]\nname = "c"\n[[event]]\nid = 1\nname = "x"\n'
        '  [[event.field]]\n  name = "f"\n  word = 9\n',
        '[catalog]\nname = "c"\n[[event]]\nid = 1\nname = "x"\n'
        '  [[event.field]]\n  name = "f"\n  word = 0\n  type = "float"\n',
        '[catalog]\nname = "c"\n[[event]]\nid = 1\nname = "x"\n'
        '  [[event.field]]\n  name = "f"\n  word = 0\n  enum = "nope"\n',
        "not toml ===",
    ],
)
def test_bad_catalogs_raise_catalog_error(tmp_path: Path, body: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(CatalogError, match=r"bad\.toml"):
        load_catalog([path])


def test_a_name_follows_its_latest_definition_and_loses_a_taken_id(tmp_path: Path) -> None:
    def catalog(name: str, body: str) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(f'[catalog]\nname = "{name}"\n{body}')
        return path

    moved = catalog("moved", '[[event]]\nid = 0x0800fc01\nname = "blkif_req_push"\n')
    back = catalog("back", '[[event]]\nid = 0x0800fb01\nname = "blkif_req_push"\n')
    taken = catalog("taken", '[[event]]\nid = 0x0800fb01\nname = "my_probe"\n')
    assert load_catalog([moved]).by_name("blkif_req_push").id == 0x0800FC01
    assert load_catalog([moved, back]).by_name("blkif_req_push").id == 0x0800FB01
    cat = load_catalog([taken])
    assert cat.get("blkif_req_push") is None
    assert cat.lookup(0x0800FB01).name == "my_probe"  # type: ignore[union-attr]
    with pytest.raises(CatalogError, match="blkif_req_push"):
        cat.by_name("blkif_req_push")
