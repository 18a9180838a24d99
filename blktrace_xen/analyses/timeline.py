"""What the rule families share: the streams' one pairing, and per-ring views of the events.

Pairing belongs to :mod:`blktrace_xen.streams.pairing` (the ``io`` table and
the ``pairing`` facts, with the protocol order on equal timestamps). The
analyses read those and never pair again: :func:`paired` returns them, and
calls :func:`~blktrace_xen.streams.pairing.pair` itself only for a
:class:`Streams` built by hand without them.

Derived frames are computed once per :class:`Streams` and held for the last
one only (keyed by identity); :func:`clear` drops them and ``run_rules`` /
``btt_table`` call :func:`done` when finished, so nothing outlives an analysis
run. Inside :func:`shared` (``analyze`` runs both there) they are kept until
the block ends, and a value both use is built once (see :func:`handed_over`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import polars as pl

from blktrace_xen import schema
from blktrace_xen.analyses.emit import ring_key
from blktrace_xen.analyses.rings import RingGroups
from blktrace_xen.streams import Streams
from blktrace_xen.streams.pairing import effective_op, pair

RING = list(schema.RING_KEY)
REQ, RSP = 0, 1

T = TypeVar("T")

_owner: list[Streams] = []
_cache: dict[str, Any] = {}


def cached(streams: Streams, name: str, build: Callable[[], T]) -> T:
    """``build()``, computed once per ``streams`` (the last one only)."""
    if not _owner or _owner[0] is not streams:
        clear()
        _owner.append(streams)
    if name not in _cache:
        _cache[name] = build()
    value: T = _cache[name]
    return value


def clear() -> None:
    """Drop every derived frame."""
    _owner.clear()
    _cache.clear()


_scope: list[Streams] = []


@contextmanager
def shared(streams: Streams) -> Iterator[None]:
    """Keep ``streams``' derived frames across the analyses run inside; drop them at the end."""
    if _scope:
        raise RuntimeError("analyses: shared() does not nest")
    clear()
    _scope.append(streams)
    try:
        yield
    finally:
        _scope.clear()
        clear()


def done() -> None:
    """An analysis run finished: drop the derived frames, unless inside :func:`shared`."""
    if not _scope:
        clear()


def handed_over(streams: Streams, name: str, build: Callable[[], T]) -> T:
    """``build()`` for two users inside :func:`shared`: the first keeps it, the second takes it.

    Each user asks once per run (the index summary and btt's queue depth ask
    for the ring grouping). Outside :func:`shared` nothing is kept, so a large
    value lives no longer than its one user; inside, no longer than the second.
    """
    if not _scope or _scope[0] is not streams:
        return build()
    if name in _cache and _owner and _owner[0] is streams:
        value: T = _cache.pop(name)
        return value
    return cached(streams, name, build)


def _in_time_order(frame: pl.DataFrame) -> pl.DataFrame:
    # The builders emit time order; a frame built by hand may not be.
    if frame.height and not frame["ns"].is_sorted():
        return frame.sort("ns", maintain_order=True, nulls_last=True)
    return frame


def paired(streams: Streams) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(io, pairing)`` of ``streams``: its own, or :func:`pair` when it has neither.

    A Streams from ``assemble`` (every loader) always carries both, and an
    empty ``pairing`` beside a non-empty ``io`` just means no anomaly.
    """

    def build() -> tuple[pl.DataFrame, pl.DataFrame]:
        unpaired = streams.io.is_empty() and streams.pairing.is_empty()
        if unpaired and (streams.requests.height or streams.responses.height):
            return pair(
                _in_time_order(streams.requests),
                _in_time_order(streams.responses),
                streams.control,
            )
        return streams.io, streams.pairing

    return cached(streams, "paired", build)


def requests(streams: Streams) -> pl.DataFrame:
    """The requests in time order."""
    return cached(streams, "requests", lambda: _in_time_order(streams.requests))


def responses(streams: Streams) -> pl.DataFrame:
    """The responses in time order."""
    return cached(streams, "responses", lambda: _in_time_order(streams.responses))


def events_by_ring(streams: Streams) -> RingGroups:
    """:func:`requests` and :func:`responses` grouped by ring (no null ring key: ``usable``).

    The index summary and btt's queue depth both group them; inside
    :func:`shared` that is done once.
    """
    return handed_over(
        streams, "events_by_ring", lambda: RingGroups.of(requests(streams), responses(streams))
    )


def timeline(streams: Streams) -> pl.LazyFrame:
    """Requests (kind 0) and responses (kind 1) as one lazy frame, each kind in time order.

    Columns: ring key, session, ns, kind, id, op (a request's effective op),
    idx, status. Not merged, sorted or windowed: filter one kind (the
    filter is pushed down, so the other kind is never copied). Pairing
    questions go to :func:`paired`.
    """
    req = (
        requests(streams)
        .lazy()
        .select(
            *RING,
            "session",
            "ns",
            pl.lit(REQ, pl.Int8).alias("kind"),
            "id",
            effective_op().alias("op"),
            "idx",
            pl.lit(None, pl.Int16).alias("status"),
        )
    )
    rsp = (
        responses(streams)
        .lazy()
        .select(
            *RING,
            "session",
            "ns",
            pl.lit(RSP, pl.Int8).alias("kind"),
            "id",
            pl.col("operation").alias("op"),
            "idx",
            "status",
        )
    )
    return pl.concat([req, rsp])


__all__ = [
    "REQ",
    "RSP",
    "cached",
    "clear",
    "effective_op",
    "paired",
    "requests",
    "responses",
    "ring_key",
    "timeline",
]
