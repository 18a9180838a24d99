"""The dom0 TSC beside CLOCK_MONOTONIC, so agent records land on the xentrace time base.

bpftrace stamps events with ``nsecs`` (CLOCK_MONOTONIC); xentrace stamps its
records with the TSC. The agent reads both, bracketing one ``rdtsc`` between
two monotonic reads and keeping the tightest bracket of a few tries, at start,
every second and at stop (CLOCK records); the reader interpolates between them.
A PV dom0 reads the TSC untrapped, the same counter Xen's trace buffers use
(the lab's ringdump pairs them the same way).

Python has no ``rdtsc``: the ten bytes of machine code below are mapped
executable and called through ctypes (x86-64 only; elsewhere the TSC is
unknown and the capture keeps its monotonic time base, said so in the file).
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import time
from collections.abc import Callable
from typing import Final

# rdtsc; shl rdx, 32; or rax, rdx; ret
_RDTSC_X86_64: Final = bytes.fromhex("0f3148c1e2204809d0c3")
_TRIES: Final = 5


class TscReader:
    """Reads the TSC; :attr:`available` is False where it cannot."""

    def __init__(self) -> None:
        self._buf: mmap.mmap | None = None
        self._fn: Callable[[], int] | None = None
        self.why_not = ""
        if platform.machine() not in ("x86_64", "AMD64"):
            self.why_not = f"no TSC on {platform.machine()}"
            return
        try:
            buf = mmap.mmap(
                -1,
                mmap.PAGESIZE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC,
            )
        except (OSError, ValueError) as exc:  # a kernel refusing W+X mappings
            self.why_not = f"cannot map code to read the TSC: {exc}"
            return
        buf.write(_RDTSC_X86_64)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        self._buf = buf
        self._fn = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)

    @property
    def available(self) -> bool:
        return self._fn is not None

    def read(self) -> int:
        if self._fn is None:
            raise RuntimeError(self.why_not)
        return int(self._fn())

    def pair(self) -> tuple[int, int, int, int]:
        """(tsc, realtime_ns, mono_before_ns, mono_after_ns): the tightest of a few brackets."""
        best: tuple[int, int, int, int] | None = None
        for _ in range(_TRIES):
            before = time.monotonic_ns()
            tsc = self.read()
            after = time.monotonic_ns()
            if best is None or after - before < best[3] - best[2]:
                best = (tsc, time.time_ns(), before, after)
        assert best is not None
        return best


__all__ = ["TscReader"]
