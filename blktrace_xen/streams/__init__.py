"""Normalised request / response / control streams, whatever the source.

:class:`Streams` is the one value that analyses, the report and replay take.
Builders (from xentrace events, from ring captures, or both merged on one time
base) live in the modules of this package and return it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from blktrace_xen import schema

# The tables in the order they are written; a builder provides all but ``io`` and
# ``pairing``, which :func:`~blktrace_xen.streams.assemble.assemble` derives.
TABLES: Final = (
    "requests",
    "responses",
    "control",
    "io",
    "snapshots",
    "rings",
    "gaps",
    "lost",
    "grants",
    "mutations",
    "pairing",
)
SOURCE_TABLES: Final = tuple(t for t in TABLES if t not in ("io", "pairing"))


def _empty(table: str) -> pl.DataFrame:
    return schema.empty(table)


@dataclass(frozen=True, slots=True, kw_only=True)
class Streams:
    """Every table a trace or capture yields, in the schemas of :mod:`blktrace_xen.schema`.

    Frames a source cannot provide are empty (never missing). ``meta`` holds
    provenance: ``inputs`` (list of {path, sha256, kind}), ``cpu_mhz``,
    ``cpu_mhz_default`` (True when the 2400 MHz default was used), ``t0_tsc``
    (the TSC that ``ns`` 0 stands for, when known).
    """

    requests: pl.DataFrame = field(default_factory=lambda: _empty("requests"))
    responses: pl.DataFrame = field(default_factory=lambda: _empty("responses"))
    control: pl.DataFrame = field(default_factory=lambda: _empty("control"))
    io: pl.DataFrame = field(default_factory=lambda: _empty("io"))
    snapshots: pl.DataFrame = field(default_factory=lambda: _empty("snapshots"))
    rings: pl.DataFrame = field(default_factory=lambda: _empty("rings"))
    gaps: pl.DataFrame = field(default_factory=lambda: _empty("gaps"))
    lost: pl.DataFrame = field(default_factory=lambda: _empty("lost"))
    grants: pl.DataFrame = field(default_factory=lambda: _empty("grants"))
    mutations: pl.DataFrame = field(default_factory=lambda: _empty("mutations"))
    pairing: pl.DataFrame = field(default_factory=lambda: _empty("pairing"))
    meta: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pl.DataFrame]:
        """The frames by table name (for writing Parquet)."""
        return {name: getattr(self, name) for name in TABLES}


__all__ = ["SOURCE_TABLES", "TABLES", "Streams"]
