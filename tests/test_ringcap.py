"""pcapng ring captures: writer -> reader round trip, auto-detection, damaged input."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest

from blktrace_xen.decode.ringcap import is_ringcap, iter_ringcap_dump, read_ringcap, ringcap_summary
from blktrace_xen.encode.blkif import RingPage
from blktrace_xen.encode.ringcap import RingcapWriter
from blktrace_xen.errors import BlktraceXenError, InputFileError, MalformedRecord, ModelUsageError
from blktrace_xen.structs.pcapng import EnhancedPacketHead, InterfaceDescriptionBody


def _write(path: Path) -> list[bytes]:
    a = RingPage("x86_64-abi", 0)
    b = RingPage("x86_32-abi", 2)
    pages = []
    with RingcapWriter(path) as w:
        ia = w.add_ring(1, 51712, 0)
        xs = w.add_xenstore()
        w.write_xenstore(5, "/local/domain/1/device/vbd/51712/state", "4", iface=xs)
        ib = w.add_ring(2, 51728, 1, abi="x86_32-abi", ring_page_order=2, backend_domid=7)
        for k in range(3):
            a.put_request(k, operation=0, id=k, segments=[(9, 0, 7)])
            a.req_prod = k + 1
            w.write_snapshot(ia, 10 + k, a.to_bytes(), tsc=1000 + k)
            pages.append(a.to_bytes())
        w.write_snapshot(ib, 20, b.to_bytes())
    return pages


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "c.pcapng"
    pages = _write(p)
    assert is_ringcap(p) and not is_ringcap(tmp_path / "nope")
    cap = read_ringcap(p)
    assert cap.warnings == []
    assert cap.rings.rows() == [
        (1, 51712, 0, "x86_64-abi", 0, 32, 0),
        (2, 51728, 1, "x86_32-abi", 2, 128, 7),
    ]
    s = cap.snapshots
    assert s.filter(s["domid"] == 1).select("snap", "ns", "tsc", "req_prod").rows() == [
        (0, 10, 1000, 1),
        (1, 11, 1001, 2),
        (2, 12, 1002, 3),
    ]
    assert [bytes(x) for x in cap.pages[(1, 51712, 0)]] == pages
    assert cap.pages[(2, 51728, 1)].shape == (1, 16384)
    assert cap.xenstore.rows() == [(5, None, "/local/domain/1/device/vbd/51712/state", "4")]
    summary = ringcap_summary(p)
    assert summary["snapshots"] == 4 and summary["rings"][0]["name"] == "vbd/1/51712/q0"
    dump = list(iter_ringcap_dump(p))
    assert any("request idx=2 id=2 op=0" in line for line in dump)
    assert any("xenstore /local/domain/1/device/vbd/51712/state=4" in line for line in dump)


def test_block_declarations_match_the_fast_path() -> None:
    assert EnhancedPacketHead.sizeof() == 20  # the reader's "<IIIII" after the block head
    body = InterfaceDescriptionBody.build(dict(linktype=147, reserved=0, snaplen=0, options=[]))
    assert body == struct.pack("<HHI", 147, 0, 0)


def test_writer_refuses_misuse(tmp_path: Path) -> None:
    with RingcapWriter(tmp_path / "x.pcapng") as w:
        i = w.add_ring(1, 2)
        with pytest.raises(ModelUsageError):
            w.write_snapshot(i, 0, bytes(100))
        with pytest.raises(ModelUsageError):
            w.write_snapshot(i, -1, bytes(4096))
        with pytest.raises(ModelUsageError):
            w.write_xenstore(0, "a", "b")


def test_truncated_capture_keeps_what_is_sound(tmp_path: Path) -> None:
    p = tmp_path / "c.pcapng"
    _write(p)
    data = p.read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:-100])
    cap = read_ringcap(cut)
    assert cap.snapshots.height == 3  # the last block (ring 2) is cut
    assert len(cap.warnings) == 1
    w = cap.warnings[0]
    assert (
        str(cut) in w
        and "truncated block #8 at offset 0x3260" in w
        and "need 16416 bytes, 16316 left" in w
    )


def test_wrong_page_size_and_missing_parameters(tmp_path: Path) -> None:
    p = tmp_path / "c.pcapng"
    with RingcapWriter(p) as w:
        i = w.add_ring(1, 51712)
        w.write_snapshot(i, 1, bytes(4096))
        w._sizes[i] = 100  # simulate a foreign writer: a packet of the wrong size
        w.write_snapshot(i, 2, bytes(100))
        # an interface named like a ring but without parameters
        j = w._add_interface(147, [(2, b"vbd/3/51712/q0"), (3, b"backend-domid=0")])
        w._sizes[j] = 4096
        w.write_snapshot(j, 3, bytes(4096))
    cap = read_ringcap(p)
    assert cap.snapshots.height == 1
    text = "\n".join(cap.warnings)
    assert (
        "block #3 at offset" in text and "snapshot of 100 bytes" in text and "expected 4096" in text
    )
    assert "lacks valid ring parameters" in text and "block #4" in text
    assert "block #5" in text and "without ring parameters skipped" in text


def test_not_pcapng_and_missing(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"RXRING01" + bytes(100))
    with pytest.raises(InputFileError, match="not a pcapng"):
        read_ringcap(p)
    with pytest.raises(InputFileError, match="cannot open"):
        read_ringcap(tmp_path / "missing.pcapng")
    big = tmp_path / "be.pcapng"
    big.write_bytes(
        b"\x0a\x0d\x0d\x0a" + struct.pack(">I", 28) + struct.pack(">I", 0x1A2B3C4D) + bytes(16)
    )
    with pytest.raises(MalformedRecord, match="big-endian"):
        read_ringcap(big)


def test_any_bytes_decode_or_raise_our_error(tmp_path: Path) -> None:
    p = tmp_path / "c.pcapng"
    _write(p)
    data = bytearray(p.read_bytes())
    f = tmp_path / "f.pcapng"
    # flip one byte at a spread of offsets: never an exception outside our hierarchy
    for off in range(0, len(data), 397):
        d = bytearray(data)
        d[off] ^= 0xFF
        f.write_bytes(bytes(d))
        with contextlib.suppress(BlktraceXenError):
            read_ringcap(f)
