"""Rule families over the stream frames: frames in, findings out.

Public API: :data:`RULES` (the catalogue), :func:`run_rules`, :func:`analyze`,
:func:`btt_table`, :func:`summarize` and :class:`AnalysisOptions`. Importing
this package imports every family module, which registers its rules.
"""

from blktrace_xen.analyses import (  # noqa: F401  (importing a family registers its rules)
    confidence,
    indices,
    lifecycle,
    ordering,
    pairing,
    progress,
    rebind,
    requests,
    slots,
)
from blktrace_xen.analyses.latency import btt_table
from blktrace_xen.analyses.options import AnalysisOptions
from blktrace_xen.analyses.registry import RULES, Rule
from blktrace_xen.analyses.run import analyze, run_rules, summarize

__all__ = ["RULES", "AnalysisOptions", "Rule", "analyze", "btt_table", "run_rules", "summarize"]
