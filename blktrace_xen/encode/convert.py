"""Raw ring page dumps (concatenated ring areas) -> pcapng ring capture."""

from __future__ import annotations

from pathlib import Path

from blktrace_xen.encode.ringcap import RingcapWriter
from blktrace_xen.errors import InputFileError, MalformedRecord
from blktrace_xen.structs.blkif import ABIS, MAX_RING_PAGE_ORDER, ring_geometry


def parse_ring_key(text: str) -> tuple[int, int, int]:
    """``domid/vdev[/queue]`` (queue may be written ``q0``)."""
    parts = text.split("/")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        q = parts[2].removeprefix("q") if len(parts) == 3 else "0"
        return int(parts[0]), int(parts[1]), int(q)
    except ValueError:
        raise InputFileError("--ring", f"{text!r} is not domid/vdev[/queue]") from None


def _read_timestamps(path: Path, count: int) -> list[tuple[int, int | None]]:
    try:
        lines = path.read_text().split("\n")
    except OSError as exc:
        raise InputFileError(path, f"cannot read: {exc.strerror}") from exc
    out: list[tuple[int, int | None]] = []
    for lineno, line in enumerate(lines, 1):
        f = line.split("#", 1)[0].split()
        if not f:
            continue
        try:
            out.append((int(f[0]), int(f[1]) if len(f) > 1 else None))
        except ValueError:
            raise MalformedRecord(
                "timestamps",
                f"line {lineno}: expected 'ns [tsc]', got {line!r}",
                path=path,
                record_index=lineno,
            ) from None
    if len(out) != count:
        raise MalformedRecord("timestamps", f"{len(out)} timestamps for {count} pages", path=path)
    return out


def convert_raw_pages(
    pages: Path,
    output: Path,
    *,
    ring: str,
    abi: str = "x86_64-abi",
    ring_page_order: int = 0,
    backend_domid: int = 0,
    timestamps: Path | None = None,
) -> int:
    """Write each ring area of ``pages`` as one snapshot; returns the number written."""
    if abi not in ABIS:
        raise InputFileError("--abi", f"unknown protocol ABI {abi!r}; expected one of {ABIS}")
    if not 0 <= ring_page_order <= MAX_RING_PAGE_ORDER:
        raise InputFileError("--order", f"ring-page-order {ring_page_order} outside 0..4")
    domid, vdev, queue = parse_ring_key(ring)
    size = ring_geometry(abi, ring_page_order).nbytes
    try:
        data = pages.read_bytes()
    except OSError as exc:
        raise InputFileError(pages, f"cannot read: {exc.strerror}") from exc
    if not data or len(data) % size:
        raise MalformedRecord(
            "raw-pages",
            f"{len(data)} bytes is not a whole number of {size}-byte ring areas "
            f"(ring-page-order {ring_page_order})",
            path=pages,
            offset=len(data) - len(data) % size,
            record_index=len(data) // size,
        )
    count = len(data) // size
    stamps = (
        _read_timestamps(timestamps, count) if timestamps else [(i, None) for i in range(count)]
    )
    with RingcapWriter(output) as w:
        iface = w.add_ring(
            domid,
            vdev,
            queue,
            abi=abi,
            ring_page_order=ring_page_order,
            backend_domid=backend_domid,
        )
        for i in range(count):
            ns, tsc = stamps[i]
            w.write_snapshot(iface, ns, data[i * size : (i + 1) * size], tsc=tsc)
    return count
