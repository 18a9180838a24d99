"""The last step shared by every source: sessions, then pairing, into one Streams.

Builders (from xentrace events, from a ring capture, or both merged) hand over
requests / responses / control in their schemas with ``session`` unset; this
adds the index discontinuities the requests reveal, numbers each ring's
sessions (a run of starts with no traffic between them is one session, see
``sessions``), and pairs.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from blktrace_xen import schema
from blktrace_xen.streams import Streams, sessions
from blktrace_xen.streams.pairing import pair


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("ns", maintain_order=True, nulls_last=True)


def assemble(
    *,
    requests: pl.DataFrame,
    responses: pl.DataFrame,
    control: pl.DataFrame,
    meta: dict[str, Any],
    **tables: pl.DataFrame,
) -> Streams:
    """Number sessions, pair, and return the :class:`Streams`.

    ``tables`` are the remaining frames (snapshots, rings, gaps, lost, grants,
    mutations), passed through unchanged.
    """
    requests = _sorted(schema.conform(requests, "requests"))
    responses = _sorted(schema.conform(responses, "responses"))
    control = schema.conform(control, "control")
    jumps = sessions.index_discontinuities(requests)
    if jumps.height:
        control = pl.concat([control, jumps])
    control = _sorted(control)
    rings = sessions.ring_keys(requests, responses, control)
    gaps = tables.get("gaps")
    traffic = [requests, responses]
    if gaps is not None and gaps.height:
        traffic.append(gaps.sort("ns", nulls_last=True))
    starts = sessions.session_starts(control, rings, tuple(traffic))
    requests = sessions.assign_sessions(requests, starts)
    responses = sessions.assign_sessions(responses, starts)
    responses = sessions.drain_older_instance(responses, control, starts)
    io, facts = pair(requests, responses, control)
    return Streams(
        requests=requests,
        responses=responses,
        control=control,
        io=io,
        pairing=facts,
        meta=meta,
        **{name: schema.conform(frame, name) for name, frame in tables.items()},
    )


__all__ = ["assemble"]
