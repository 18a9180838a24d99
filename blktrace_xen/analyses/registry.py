"""The rule catalogue: every rule's stable id, family, default severity and docs.

Family modules register their rules with :func:`rule`; importing
:mod:`blktrace_xen.analyses` imports every family, so :data:`RULES` is complete
once the package is imported. A rule function's docstring is the body of its
docs page (``python -m blktrace_xen.analyses.docs`` renders docs/rules/), so
the catalogue and the code cannot drift apart.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import polars as pl

from blktrace_xen.errors import ModelUsageError
from blktrace_xen.schema import SEVERITIES

if TYPE_CHECKING:
    from blktrace_xen.analyses.options import AnalysisOptions
    from blktrace_xen.streams import Streams

RuleFn: TypeAlias = "Callable[[Streams, AnalysisOptions], pl.LazyFrame | pl.DataFrame]"


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of the catalogue.

    ``id`` is stable and kebab-case; ``severity`` is the default (a rule may
    raise or lower it per finding and says so in its docs); ``source`` names the
    real bug the rule comes from; ``example`` is a finding message as the rule
    prints it; ``doc`` is the docs page path relative to the repository root.
    """

    id: str
    family: str
    severity: str
    title: str
    source: str
    example: str
    fn: RuleFn

    @property
    def doc(self) -> str:
        return f"docs/rules/{self.id}.md"

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")


RULES: dict[str, Rule] = {}


def rule(
    id: str,
    *,
    family: str,
    severity: str,
    title: str,
    source: str,
    example: str,
) -> Callable[[RuleFn], RuleFn]:
    """Register the decorated function as rule ``id`` (ids must be unique)."""
    if severity not in SEVERITIES:
        raise ModelUsageError(f"rule {id}: unknown severity {severity!r}")

    def register(fn: RuleFn) -> RuleFn:
        if id in RULES:
            raise ModelUsageError(f"rule {id} registered twice")
        RULES[id] = Rule(id, family, severity, title, source, example, fn)
        return fn

    return register


def severity_rank(severity: str) -> int:
    """0 for info ... 4 for critical."""
    return SEVERITIES.index(severity)
