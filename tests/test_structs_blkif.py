"""blkif construct declarations: round trips, hand-written hex fixtures, sizes, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from construct import Container
from hypothesis import given, settings
from hypothesis import strategies as st

from blktrace_xen.decode.ring_dtypes import blkif_dtypes, dtype_of
from blktrace_xen.errors import ModelUsageError
from blktrace_xen.structs.blkif import (
    ABIS,
    BlkifOp,
    BlkifStatus,
    XenbusState,
    blkif_structs,
    ring_geometry,
)


def roundtrip(fmt, data: bytes, size: int) -> None:
    obj = fmt.parse(data)
    assert fmt.build(obj) == data
    assert fmt.sizeof() == size
    compiled = fmt.compile()
    assert compiled.build(compiled.parse(data)) == data


@pytest.mark.parametrize(
    ("abi", "sizes"),
    [
        ("x86_64-abi", (8, 112, 32, 64, 16, 16, 64)),
        ("x86_32-abi", (8, 108, 28, 64, 12, 12, 64)),
        ("arm-abi", (8, 112, 32, 64, 16, 16, 64)),
    ],
)
def test_sizes(abi: str, sizes: tuple[int, ...]) -> None:
    s = blkif_structs(abi)
    got = tuple(
        c.sizeof()
        for c in (
            s.segment,
            s.request_rw,
            s.request_discard,
            s.request_indirect,
            s.request_other,
            s.response,
            s.sring_header,
        )
    )
    assert got == sizes
    assert s.indirect_page.sizeof() == 4096


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("order", range(5))
def test_geometry(abi: str, order: int) -> None:
    g = ring_geometry(abi, order)
    assert g.nr_ents == 32 << order
    assert g.nbytes == 4096 << order
    assert blkif_structs(abi).sring(order).sizeof() == g.nbytes


def test_bad_abi_and_order() -> None:
    with pytest.raises(ModelUsageError):
        blkif_structs("sparc-abi")
    with pytest.raises(ModelUsageError):
        ring_geometry("x86_64-abi", 5)


# x86_64 rw request, written by hand field by field.
RW64 = bytes.fromhex(
    "01"  # operation = BLKIF_OP_WRITE
    "02"  # nr_segments = 2
    "00ca"  # handle = 0xca00 = 51712 (xvda)
    "deadbeef"  # 4 padding bytes before the 8-aligned id: stale, kept
    "0807060504030201"  # id = 0x0102030405060708
    "1000000000000000"  # sector_number = 16
    "e8030000"
    "00"
    "07"
    "0000"  # seg[0]: gref 1000, sectors 0..7
    "e9030000"
    "02"
    "03"
    "0000"  # seg[1]: gref 1001, sectors 2..3
) + bytes(8 * 9)  # seg[2..10] unused

# the same request on x86_32: no padding, id at 4
RW32 = bytes.fromhex(
    "01"
    "02"
    "00ca"  # operation, nr_segments, handle
    "0807060504030201"  # id at offset 4
    "1000000000000000"  # sector_number at 12
    "e8030000"
    "00"
    "07"
    "0000"
    "e9030000"
    "02"
    "03"
    "0000"  # seg[0], seg[1] at 20
) + bytes(8 * 9)

# x86_64 response as blkback writes it: id, operation, status; padding stale
RSP64 = bytes.fromhex(
    "0807060504030201"  # id
    "01"  # operation = WRITE
    "aa"  # pad byte: stale
    "ffff"  # status = -1 (BLKIF_RSP_ERROR)
    "bbccddee"  # tail padding: stale
)


def test_hand_written_rw_x86_64() -> None:
    s = blkif_structs("x86_64-abi")
    r = s.request_rw.parse(RW64)
    assert (r.operation, r.nr_segments, r.handle, r.id, r.sector_number) == (
        1,
        2,
        51712,
        0x0102030405060708,
        16,
    )
    assert (r.seg[1].gref, r.seg[1].first_sect, r.seg[1].last_sect) == (1001, 2, 3)
    assert r._pad0 == bytes.fromhex("deadbeef")
    roundtrip(s.request_rw, RW64, 112)
    assert s.request.parse(RW64).body.id == r.id


def test_hand_written_rw_x86_32() -> None:
    s = blkif_structs("x86_32-abi")
    r = s.request_rw.parse(RW32)
    assert (r.id, r.sector_number, r.seg[0].gref) == (0x0102030405060708, 16, 1000)
    roundtrip(s.request_rw, RW32, 108)


def test_hand_written_response_keeps_dirty_padding() -> None:
    s = blkif_structs("x86_64-abi")
    r = s.response.parse(RSP64)
    assert (r.id, r.operation, r.status) == (0x0102030405060708, 1, BlkifStatus.BLKIF_RSP_ERROR)
    assert r._pad1 == bytes.fromhex("bbccddee")
    roundtrip(s.response, RSP64, 16)
    # built without padding values: zeros
    assert s.response.build(Container(id=1, operation=0, status=0)) == bytes.fromhex(
        "01000000000000000000000000000000"
    )


def test_request_dispatch_on_operation() -> None:
    s = blkif_structs("x86_64-abi")
    disc = s.request_discard.build(
        dict(operation=5, flag=1, handle=0, id=9, sector_number=64, nr_sectors=8)
    ) + bytes(80)
    assert s.request.parse(disc).body.nr_sectors == 8
    ind = s.request_indirect.build(
        dict(
            operation=6,
            indirect_op=1,
            nr_segments=40,
            id=3,
            sector_number=8,
            handle=1,
            indirect_grefs=[5, 0, 0, 0, 0, 0, 0, 0],
        )
    ) + bytes(48)
    body = s.request.parse(ind).body
    assert (body.indirect_op, body.nr_segments, body.indirect_grefs[0]) == (1, 40, 5)
    other = bytes([4]) + bytes(7) + (77).to_bytes(8, "little") + bytes(96)
    assert s.request.parse(other).body.id == 77


def test_enums() -> None:
    assert BlkifOp.BLKIF_OP_INDIRECT == 6
    assert BlkifStatus.BLKIF_RSP_EOPNOTSUPP == -2
    assert XenbusState.XenbusStateReconfigured == 8


@pytest.mark.parametrize("abi", ABIS)
@settings(derandomize=True, max_examples=60, deadline=None)
@given(data=st.binary(min_size=112, max_size=112))
def test_dtypes_equal_construct(abi: str, data: bytes) -> None:
    s = blkif_structs(abi)
    d = blkif_dtypes(abi)
    raw = np.frombuffer(data[: d.entry_size], dtype=np.uint8)
    for con, dt in (
        (s.request_rw, d.request_rw),
        (s.request_discard, d.request_discard),
        (s.request_indirect, d.request_indirect),
        (s.response, d.response),
    ):
        parsed = con.parse(data)
        rec = raw.view(dt)[0]
        for name in dt.names:
            if name == "seg":
                assert [(x.gref, x.first_sect, x.last_sect) for x in parsed.seg] == [
                    (int(x["gref"]), int(x["first_sect"]), int(x["last_sect"])) for x in rec["seg"]
                ]
            elif isinstance(parsed[name], bytes):
                assert bytes(rec[name]) == parsed[name]
            elif isinstance(parsed[name], list):
                assert list(rec[name]) == list(parsed[name])
            else:
                assert int(rec[name]) == parsed[name], name
        assert dtype_of(con).itemsize == con.sizeof()
