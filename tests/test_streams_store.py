"""Streams round-trip through a Parquet folder, and bad folders fail with one clear error."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from blktrace_xen import schema
from blktrace_xen.errors import InputFileError, SchemaError
from blktrace_xen.streams import Streams
from blktrace_xen.streams.store import read_streams, write_streams


def test_roundtrip(tmp_path: Path) -> None:
    req = schema.conform(
        pl.DataFrame({"domid": [1], "vdev": [51712], "queue": [0], "id": [7], "operation": [1]}),
        "requests",
    )
    s = Streams(requests=req, meta={"cpu_mhz": 2596.125})
    write_streams(s, tmp_path)
    back = read_streams(tmp_path)
    assert back.requests.equals(req)
    assert back.meta == {"cpu_mhz": 2596.125}
    assert back.io.schema == schema.IO_SCHEMA


def test_not_a_streams_dir(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not a streams folder"):
        read_streams(tmp_path)


def test_wrong_schema_is_reported(tmp_path: Path) -> None:
    write_streams(Streams(), tmp_path)
    pl.DataFrame({"id": [1]}).write_parquet(tmp_path / "responses.parquet")
    with pytest.raises(SchemaError, match="responses"):
        read_streams(tmp_path)
