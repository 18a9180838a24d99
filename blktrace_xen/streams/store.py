"""Streams on disk: one Parquet file per table plus ``meta.json`` in a folder.

``blktrace-xen streams FILE -o DIR`` writes this layout; every command that
takes a trace also takes such a folder, so an expensive decode is done once.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from blktrace_xen import schema
from blktrace_xen.errors import InputFileError
from blktrace_xen.streams import Streams

META_FILE = "meta.json"


def write_streams(streams: Streams, out_dir: str | Path) -> list[Path]:
    """Write every table of ``streams`` as ``<table>.parquet`` (zstd) and ``meta.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in streams.tables().items():
        path = out / f"{name}.parquet"
        frame.write_parquet(path, compression="zstd")
        written.append(path)
    meta = out / META_FILE
    meta.write_text(json.dumps(streams.meta, indent=2, sort_keys=True, default=str) + "\n")
    written.append(meta)
    return written


def is_streams_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :func:`write_streams`."""
    p = Path(path)
    return p.is_dir() and (p / META_FILE).is_file()


def read_streams(in_dir: str | Path) -> Streams:
    """Read a folder written by :func:`write_streams`, checking every table's schema."""
    src = Path(in_dir)
    if not is_streams_dir(src):
        raise InputFileError(src, f"not a streams folder (no {META_FILE})")
    frames: dict[str, pl.DataFrame] = {}
    for name in Streams().tables():
        path = src / f"{name}.parquet"
        if not path.is_file():
            frames[name] = schema.empty(name)
            continue
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several unrelated types on bad files
            raise InputFileError(path, f"unreadable Parquet: {exc}") from exc
        schema.validate(frame, name)
        frames[name] = frame
    try:
        meta = json.loads((src / META_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise InputFileError(src / META_FILE, f"invalid JSON at offset {exc.pos}") from exc
    return Streams(**frames, meta=meta)
