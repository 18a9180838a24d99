"""Findings come out in one total order, whatever order the rules produced them in."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import polars as pl
import pytest

from blktrace_xen import schema
from blktrace_xen.analyses import RULES, run
from blktrace_xen.streams import Streams

Row = dict[str, object]


def _finding(rule: str, ns: int, id_: int) -> Row:
    return {
        "rule": rule,
        "severity": "high",
        "domid": 1,
        "vdev": 51712,
        "queue": 0,
        "ns": ns,
        "id": id_,
        "message": f"{rule} {id_}",
        "confidence": 1.0,
    }


def _emitting(rows: list[Row]) -> Callable[..., pl.LazyFrame]:
    return lambda streams, opts: schema.conform(pl.DataFrame(rows), "findings").lazy()


def test_ties_on_ns_are_ordered_by_catalogue_then_ring_then_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = list(RULES)[:2]
    rows = [_finding(second, 5, 1), _finding(first, 5, 9), _finding(first, 5, 2)]
    rows.append(_finding(first, 1, 7))
    outputs = []
    for order in (rows, rows[::-1]):
        for rule in (first, second):
            mine = [r for r in order if r["rule"] == rule]
            monkeypatch.setitem(RULES, rule, dataclasses.replace(RULES[rule], fn=_emitting(mine)))
        found = run.run_rules(Streams(), rules=[first, second])
        outputs.append(found.select("rule", "ns", "id").rows())
    assert outputs[0] == outputs[1]
    assert outputs[0] == [(first, 1, 7), (first, 5, 2), (first, 5, 9), (second, 5, 1)]
