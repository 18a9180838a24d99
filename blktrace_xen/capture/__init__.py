"""Live capture in a Linux dom0: every blkif request and response exactly, by eBPF on xen-blkback.

Runs where blktrace-xen's analyses cannot (a minimal dom0: no polars, no numpy):
this package imports the standard library and the pcapng writer only.
:mod:`~blktrace_xen.capture.probes` generates the bpftrace program,
:mod:`~blktrace_xen.capture.lines` turns its output lines into agent records
(formats/ringcap.md), :mod:`~blktrace_xen.capture.agent` runs it.
"""

from __future__ import annotations

__all__: list[str] = []
