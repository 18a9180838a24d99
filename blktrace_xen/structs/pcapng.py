"""pcapng blocks used by the ring capture (formats/ringcap.md): pure construct declarations.

Provenance: IETF draft-ietf-opsawg-pcapng (section header, interface
description and enhanced packet blocks, options). Only little-endian sections
are declared; the writer always produces them.
"""

from __future__ import annotations

from typing import Final

from construct import (
    Bytes,
    Const,
    GreedyRange,
    Int16ul,
    Int32ul,
    Int64sl,
    Padding,
    Struct,
    this,
)

BT_SHB: Final = 0x0A0D0D0A
BT_IDB: Final = 0x00000001
BT_SPB: Final = 0x00000003
BT_ISB: Final = 0x00000005
BT_EPB: Final = 0x00000006
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
# The first four bytes of every pcapng file (the SHB block type).
PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"

LINKTYPE_USER0: Final = 147  # one blkif ring: each packet is one snapshot of its area
LINKTYPE_USER1: Final = 148  # xenstore: each packet is one "path=value" line
LINKTYPE_USER2: Final = 149  # capture agent: each packet is one record (structs/agentcap.py)

OPT_ENDOFOPT: Final = 0
OPT_COMMENT: Final = 1
SHB_USERAPPL: Final = 4
IF_NAME: Final = 2
IF_DESCRIPTION: Final = 3
IF_TSRESOL: Final = 9

# Generic option TLV; the value is padded to 32 bits.
Option = Struct(
    "code" / Int16ul,
    "length" / Int16ul,
    "value" / Bytes(this.length),
    Padding(lambda ctx: -ctx.length % 4),
)
Options = GreedyRange(Option)

# Body of a Section Header Block (between block length and trailing length).
SectionHeaderBody = Struct(
    "byte_order_magic" / Const(BYTE_ORDER_MAGIC, Int32ul),
    "major_version" / Int16ul,
    "minor_version" / Int16ul,
    "section_length" / Int64sl,  # -1: not given
    "options" / Options,
)

InterfaceDescriptionBody = Struct(
    "linktype" / Int16ul,
    "reserved" / Int16ul,
    "snaplen" / Int32ul,  # 0: no limit
    "options" / Options,
)

# The fixed part of an Enhanced Packet Block body; packet data (padded to 32
# bits) and options follow. The reader decodes it with struct at fixed offsets
# (it is the hot loop) and tests check those offsets against this declaration.
EnhancedPacketHead = Struct(
    "interface_id" / Int32ul,
    "timestamp_high" / Int32ul,
    "timestamp_low" / Int32ul,
    "captured_length" / Int32ul,
    "original_length" / Int32ul,
)

BlockHead = Struct(
    "block_type" / Int32ul,
    "block_total_length" / Int32ul,
)
