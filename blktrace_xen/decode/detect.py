"""Which input format a path holds, decided from its first bytes (never from its name)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal

from blktrace_xen.errors import InputFileError
from blktrace_xen.structs import xentrace as xt

Format = Literal["xentrace", "ringcap", "streams"]

_PCAPNG_SHB = 0x0A0D0D0A


def detect_format(path: str | Path) -> Format:
    """``"ringcap"`` (pcapng), ``"streams"`` (a folder with meta.json) or ``"xentrace"``.

    xentrace has no magic: a file is taken as xentrace when it starts with a
    plausible cpu-change window header. Anything else raises InputFileError.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "meta.json").is_file():
            return "streams"
        raise InputFileError(p, "a folder, but not a streams folder (no meta.json)")
    try:
        with open(p, "rb") as fh:
            head = fh.read(xt.CPU_CHANGE_SIZE)
    except FileNotFoundError:
        raise InputFileError(p, "no such file") from None
    except OSError as exc:
        raise InputFileError(p, f"cannot open: {exc.strerror}") from None
    if not head:
        raise InputFileError(p, "is empty")
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == _PCAPNG_SHB:
        return "ringcap"
    if len(head) == xt.CPU_CHANGE_SIZE:
        header, cpu, size = struct.unpack("<IiI", head)
        if header == xt.CPU_CHANGE_HEADER and 0 <= cpu < xt.MAX_CPUS and size % 4 == 0:
            return "xentrace"
    raise InputFileError(
        p,
        "not a recognised input: expected a xentrace dump (starting with the cpu-change "
        f"header {xt.CPU_CHANGE_HEADER:#010x}), a pcapng ring capture or a streams folder; "
        f"first bytes are {head.hex()}",
    )
