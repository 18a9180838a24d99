"""``load_streams``: any mix of xentrace dumps, ring captures and streams folders -> one Streams.

Each input is recognised by content: a folder written by ``write_streams``, a
pcapng ring capture (its section header magic) or a xentrace dump (no magic:
it must open with a plausible cpu-change window header); anything else is refused
by name with its first bytes. Several inputs are merged on one time base: the earliest
trace's first TSC is ``ns`` 0 (``meta["t0_tsc"]``); captures with a TSC are
placed through it (see :mod:`blktrace_xen.streams.timebase`).

Where a ring is seen both by blkif instrumentation events and by a capture,
the events win (they are exact in time and order; a capture only samples).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import polars as pl

from blktrace_xen import schema
from blktrace_xen.decode.detect import Format, detect_format
from blktrace_xen.errors import InputFileError
from blktrace_xen.streams import SOURCE_TABLES, Streams, timebase
from blktrace_xen.streams.assemble import assemble
from blktrace_xen.streams.store import read_streams

RING: Final = list(schema.RING_KEY)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def input_kind(path: Path) -> Format:
    """``streams``, ``ringcap`` or ``xentrace``, by content; InputFileError if it cannot be any."""
    return detect_format(path)


def _xentrace_parts(
    path: Path, cpu_mhz: float | None, catalogs: Sequence[Path]
) -> tuple[dict[str, pl.DataFrame], int | None, dict[str, Any]]:
    try:
        from blktrace_xen.decode.xentrace import read_xentrace
    except ImportError as exc:  # the decoder ships with the xentrace issue
        raise InputFileError(path, "xentrace decoding is not available in this build") from exc
    from blktrace_xen.streams.from_events import event_parts

    result = read_xentrace(path, cpu_mhz=cpu_mhz)
    events = result.events
    meta = dict(getattr(result, "meta", {}) or {})
    t0 = meta.get("first_tsc")
    if t0 is None and events.height:
        t0 = events.filter(pl.col("has_tsc"))["tsc"].min()
    parts = event_parts(events, lost=result.lost, catalogs=catalogs)
    info = {"warnings": list(getattr(result, "warnings", []) or []), "decoder_meta": meta}
    return parts, None if t0 is None else int(str(t0)), info


def _ringcap_parts(path: Path) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    from blktrace_xen.streams.from_ring import ringcap_parts

    parts, warnings, agent = ringcap_parts(path)  # chunk by chunk: memory bounded by one chunk
    return parts, {"warnings": warnings, "agent": agent}


def _streams_parts(path: Path) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    s = read_streams(path)
    tables = s.tables()
    return {name: tables[name] for name in SOURCE_TABLES}, dict(s.meta)


def _drop_rings(frame: pl.DataFrame, rings: pl.DataFrame) -> pl.DataFrame:
    if frame.height == 0 or rings.height == 0:
        return frame
    return frame.join(rings, on=RING, how="anti", nulls_equal=True)


def load_streams(
    paths: Sequence[Path],
    *,
    cpu_mhz: float | None = None,
    catalogs: Sequence[Path] = (),
) -> Streams:
    """Decode and merge ``paths`` into one :class:`Streams`.

    ``cpu_mhz`` converts TSC to time (``xl info`` prints it); without it the
    xenalyze default of 2400 MHz is used and ``meta["cpu_mhz_default"]`` is
    True. ``catalogs`` are extra event catalogs, read after the shipped ones as
    :func:`~blktrace_xen.catalog.load_catalog` reads them. ``meta`` lists
    ``inputs`` (path, kind, size, sha256), ``cpu_mhz``, ``cpu_mhz_default``,
    ``t0_tsc`` and ``warnings``.
    """
    if not paths:
        raise InputFileError("-", "no input given")
    mhz = timebase.DEFAULT_CPU_MHZ if cpu_mhz is None else float(cpu_mhz)
    if not mhz > 0:
        raise InputFileError("-", f"cpu_mhz must be positive, got {cpu_mhz}")
    inputs: list[dict[str, Any]] = []
    traces: list[tuple[dict[str, pl.DataFrame], int | None]] = []
    captures: list[dict[str, pl.DataFrame]] = []
    warnings: list[str] = []
    for raw in paths:
        path = Path(raw)
        kind = input_kind(path)
        entry: dict[str, Any] = {"path": str(path), "kind": kind}
        if kind == "streams":
            parts, folder_meta = _streams_parts(path)
            t0 = folder_meta.get("t0_tsc")
            traces.append((parts, None if t0 is None else int(t0)))
            entry["sha256"] = sha256_file(path / "meta.json")
        else:
            entry["size"] = path.stat().st_size
            entry["sha256"] = sha256_file(path)
            if kind == "ringcap":
                parts, info = _ringcap_parts(path)
                captures.append(parts)
                if info["agent"] is not None:
                    entry["agent"] = info["agent"]
            else:
                parts, t0x, info = _xentrace_parts(path, mhz, catalogs)
                traces.append((parts, t0x))
            warnings += [f"{path}: {w}" for w in info.get("warnings", [])]
        inputs.append(entry)

    t0s = [t0 for _, t0 in traces if t0 is not None]
    t0_tsc = min(t0s) if t0s else None
    merged: list[dict[str, pl.DataFrame]] = []
    for parts, t0 in traces:
        if t0 is not None and t0_tsc is not None and t0 != t0_tsc:
            merged.append(timebase.shift(parts, _ns_between(t0_tsc, t0, mhz)))
        else:
            merged.append(parts)
    for parts in captures:
        if t0_tsc is None:
            merged.append(parts)
            continue
        offset = timebase.capture_offset(_tsc_points(parts), t0_tsc, mhz)
        if offset is None:
            warnings.append("a ring capture has no TSC: it keeps its own time base")
            merged.append(parts)
        else:
            merged.append(timebase.to_trace_time(parts, t0_tsc=t0_tsc, cpu_mhz=mhz, offset=offset))

    # Rings with instrumentation events: drop the capture's requests/responses for them.
    event_rings = (
        pl.concat(
            [schema.conform(p["requests"], "requests") for p, _ in traces]
            + [schema.empty("requests")]
        )
        .select(RING)
        .unique()
    )
    frames: dict[str, list[pl.DataFrame]] = {name: [] for name in SOURCE_TABLES}
    for i, parts in enumerate(merged):
        from_capture = i >= len(traces)
        for name in SOURCE_TABLES:
            frame = schema.conform(parts.get(name, schema.empty(name)), name)
            if from_capture and name in ("requests", "responses"):
                frame = _drop_rings(frame, event_rings)
            frames[name].append(frame)
    tables = {
        name: pl.concat(fs).sort(_sort_key(name), maintain_order=True)
        for name, fs in frames.items()
    }
    tables["rings"] = tables["rings"].unique(subset=RING, keep="last", maintain_order=True)
    meta: dict[str, Any] = {
        "inputs": inputs,
        "cpu_mhz": mhz,
        "cpu_mhz_default": cpu_mhz is None,
        "t0_tsc": t0_tsc,
        "warnings": warnings,
    }
    return assemble(**tables, meta=meta)


def _tsc_points(parts: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """(ns, tsc) of every capture row that carries a TSC: snapshots, and an agent's rows."""
    frames = [
        parts[name].select("ns", "tsc")
        for name in ("snapshots", "requests", "responses", "control")
        if name in parts and parts[name].height
    ]
    return pl.concat(frames) if frames else pl.DataFrame(schema={"ns": pl.Int64, "tsc": pl.UInt64})


def _sort_key(name: str) -> str | list[str]:
    return RING if name == "rings" else "ns"


def _ns_between(t0_tsc: int, later_tsc: int, cpu_mhz: float) -> int:
    return ((later_tsc - t0_tsc) * 1024) // timebase.cpu_qhz(cpu_mhz)


__all__ = ["input_kind", "load_streams", "sha256_file"]
