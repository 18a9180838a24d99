"""Event catalogs: xentrace event ids -> names and typed fields, from ``formats/*.toml``.

The TOML format is specified in formats/CATALOG.md. Xen's own
``tools/xentrace/formats`` file (``<id> <python %-format>`` per line) is also
accepted, for display names only. Later catalogs win on the same (id, mask);
the most specific mask wins among the events a record matches.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from blktrace_xen.errors import CatalogError
from blktrace_xen.resources import formats_dir

if TYPE_CHECKING:
    import polars as pl

__all__ = ["Catalog", "EventDef", "FieldDef", "field_columns", "load_catalog"]

DEFAULT_MASK: Final = 0x0FFFFFFF
# type -> (bit width, signed)
TYPES: Final[dict[str, tuple[int, bool]]] = {
    "u8": (8, False),
    "u16": (16, False),
    "u32": (32, False),
    "u64": (64, False),
    "i16": (16, True),
    "i32": (32, True),
    "hex32": (32, False),
    "hex64": (64, False),
    "bool": (1, False),
}
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class FieldDef:
    """A typed field: bits of one extra word (two for 64-bit types) or of the event id."""

    name: str
    type: str
    word: int | None  # None: taken from the event id
    bits: tuple[int, int] | None
    enum: str | None = None

    @property
    def wide(self) -> bool:
        """A 64-bit field without bits: words ``word`` (low half) and ``word + 1``."""
        return self.word is not None and self.bits is None and TYPES[self.type][0] == 64

    @property
    def span(self) -> tuple[int, int]:
        """The inclusive bit range the field takes in its (first) word or the event id."""
        return self.bits or (0, min(TYPES[self.type][0], 32) - 1)

    @property
    def words_needed(self) -> int:
        """The record must have at least this many extra words for the field to exist."""
        if self.word is None:
            return 0
        return self.word + (2 if self.wide else 1)

    def extract(self, event: int, words: Sequence[int]) -> int | None:
        """The field's value in one record, or None if the record is too short."""
        if self.word is None:
            raw = event
        else:
            if len(words) < self.words_needed:
                return None
            raw = words[self.word]
            if self.wide:
                raw |= words[self.word + 1] << 32
        if self.bits is not None:
            lo, hi = self.bits
            raw = (raw >> lo) & ((1 << (hi - lo + 1)) - 1)
        width, signed = TYPES[self.type]
        if self.type == "bool":
            return int(raw != 0)
        raw &= (1 << width) - 1
        if signed and raw >= 1 << (width - 1):
            raw -= 1 << width
        return raw


@dataclass(frozen=True, slots=True)
class EventDef:
    """One catalog entry: which ids it matches, its name and its fields."""

    id: int
    mask: int
    name: str
    kind: str
    tsc: bool | None
    format: str | None
    doc: str
    fields: tuple[FieldDef, ...]
    catalog: str

    def matches(self, event: int) -> bool:
        return (event & self.mask) == self.id


class Catalog:
    """Events from one or more catalog files; look up by id or name, format, decode frames."""

    def __init__(self, events: Sequence[EventDef], enums: Mapping[str, Mapping[int, str]]):
        # A later definition replaces the earlier one with the same (id, mask).
        # A name means its latest definition, and nothing once a later event
        # took that definition's id: a user's catalog remaps an event by name,
        # or takes an id away from it, and the stream builder, which finds the
        # blkif events by name, follows (formats/blkif-events.md).
        by_key: dict[tuple[int, int], EventDef] = {}
        by_name: dict[str, EventDef] = {}
        for ev in events:
            key = (ev.id, ev.mask)
            old = by_key.get(key)
            if old is not None and by_name.get(old.name) is old:
                del by_name[old.name]
            by_key[key] = ev
            by_name[ev.name] = ev
        self.events: tuple[EventDef, ...] = tuple(by_key.values())
        self.enums = {k: dict(v) for k, v in enums.items()}
        self._by_name = by_name
        # Most specific mask first: more bits set wins.
        self._ordered = sorted(self.events, key=lambda e: -bin(e.mask).count("1"))
        self._cache: dict[int, EventDef | None] = {}

    def lookup(self, event: int) -> EventDef | None:
        """The most specific entry matching ``event``, or None."""
        if event in self._cache:
            return self._cache[event]
        found = next((ev for ev in self._ordered if ev.matches(event)), None)
        self._cache[event] = found
        return found

    def by_name(self, name: str) -> EventDef:
        try:
            return self._by_name[name]
        except KeyError:
            raise CatalogError(f"no event named {name!r} in the loaded catalogs") from None

    def get(self, name: str) -> EventDef | None:
        """The event called ``name``, or None when no loaded catalog defines it."""
        return self._by_name.get(name)

    def fields(self, name: str) -> tuple[FieldDef, ...]:
        return self.by_name(name).fields

    def values(self, ev: EventDef, event: int, words: Sequence[int]) -> dict[str, Any]:
        """Field values of one record (None where the record is too short), enum names added."""
        out: dict[str, Any] = {}
        for f in ev.fields:
            v = f.extract(event, words)
            out[f.name] = v
            if f.enum is not None:
                out[f"{f.name}_name"] = (
                    None if v is None else self.enums.get(f.enum, {}).get(v, str(v))
                )
        return out

    def format_record(self, event: int, words: Sequence[int]) -> str:
        """``name fields...`` for a known event, ``event=0x... d0=...`` for an unknown one."""
        ev = self.lookup(event)
        raw = " ".join(f"d{i}={w:#010x}" for i, w in enumerate(words))
        if ev is None:
            return f"event={event:#010x} {raw}".rstrip()
        values = self.values(ev, event, words)
        if ev.format is not None and all(v is not None for v in values.values()):
            shown = {
                k: (f"{v:#x}" if _is_hex(ev, k) else v) for k, v in values.items()
            }  # fmt: skip
            try:
                return f"{ev.name} {ev.format.format(**shown)}"
            except (KeyError, IndexError, ValueError):
                pass  # a user's format naming a missing field: fall back to key=value
        parts = [f"{k}={'-' if v is None else v}" for k, v in values.items()]
        if not ev.fields:
            parts = [raw] if words else []
        return " ".join([ev.name, *parts]).rstrip()

    def decode(self, events: pl.DataFrame, name: str) -> pl.DataFrame:
        """Rows of ``events`` matching event ``name`` with one typed column per field (vectorised).

        Keeps ``cpu``, ``tsc``, ``ns`` and ``file_offset``; a field the record is
        too short to hold is null.
        """
        import polars as pl

        ev = self.by_name(name)
        rows = events.filter((pl.col("event") & ev.mask) == ev.id)
        keep = [c for c in ("cpu", "tsc", "ns", "file_offset") if c in rows.columns]
        out = rows.select(*keep, *field_columns(ev))
        for f in ev.fields:
            if f.enum is not None:
                mapping = {k: v for k, v in self.enums.get(f.enum, {}).items()}
                out = out.with_columns(
                    pl.col(f.name)
                    .replace_strict(mapping, default=None, return_dtype=pl.String)
                    .alias(f"{f.name}_name")
                )
        return out


def _is_hex(ev: EventDef, key: str) -> bool:
    return any(f.name == key and f.type.startswith("hex") for f in ev.fields)


def field_columns(ev: EventDef) -> list[pl.Expr]:
    """One typed column per field of ``ev``, over an events frame (``event``, ``d0..d6``,
    ``n_extra``); a field the record is too short to hold is null, never the zero padding."""
    return [_field_expr(f).alias(f.name) for f in ev.fields]


def _field_expr(f: FieldDef) -> pl.Expr:
    import polars as pl

    width, signed = TYPES[f.type]
    if f.word is None:
        raw = pl.col("event").cast(pl.UInt64)
    else:
        raw = pl.col(f"d{f.word}").cast(pl.UInt64)
        if f.wide:
            raw = raw | (pl.col(f"d{f.word + 1}").cast(pl.UInt64) * (1 << 32))
    if f.bits is not None:
        lo, hi = f.bits
        raw = (raw // (1 << lo)) % (1 << (hi - lo + 1))
    dtype = _dtype(f.type)
    if f.type == "bool":
        val = raw != 0
    elif signed:
        val = (
            pl.when(raw % (1 << width) >= 1 << (width - 1))
            .then(raw.cast(pl.Int64) % (1 << width) - (1 << width))
            .otherwise(raw.cast(pl.Int64) % (1 << width))
            .cast(dtype)
        )
    else:
        val = (raw if width == 64 else raw % (1 << width)).cast(dtype)
    if f.word is None:
        return val
    return pl.when(pl.col("n_extra") >= f.words_needed).then(val).otherwise(None)


def _dtype(type_: str) -> Any:
    import polars as pl

    return {
        "u8": pl.UInt8,
        "u16": pl.UInt16,
        "u32": pl.UInt32,
        "u64": pl.UInt64,
        "i16": pl.Int16,
        "i32": pl.Int32,
        "hex32": pl.UInt32,
        "hex64": pl.UInt64,
        "bool": pl.Boolean,
    }[type_]


# --- loading -----------------------------------------------------------------


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(f"{where}: expected an integer, got {value!r}")
    return value


def _field(raw: Any, where: str) -> FieldDef:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: a field must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CatalogError(f"{where}: field name {name!r} must be snake_case")
    type_ = raw.get("type", "u32")
    if type_ not in TYPES:
        raise CatalogError(f"{where}: field {name}: unknown type {type_!r} (one of {list(TYPES)})")
    source = raw.get("from", "word")
    word: int | None
    if source == "event":
        word = None
    elif source == "word":
        word = _int(raw.get("word"), f"{where}: field {name}: word")
        if not 0 <= word <= 6:
            raise CatalogError(f"{where}: field {name}: word {word} outside 0..6")
    else:
        raise CatalogError(f"{where}: field {name}: from must be 'word' or 'event'")
    bits = raw.get("bits")
    span: tuple[int, int] | None = None
    if bits is not None:
        if not (isinstance(bits, list) and len(bits) == 2):
            raise CatalogError(f"{where}: field {name}: bits must be [lo, hi]")
        lo, hi = _int(bits[0], where), _int(bits[1], where)
        limit = 27 if word is None else 31
        if not 0 <= lo <= hi <= limit:
            raise CatalogError(f"{where}: field {name}: bits [{lo}, {hi}] outside 0..{limit}")
        span = (lo, hi)
    if word == 6 and TYPES[type_][0] == 64 and span is None:
        raise CatalogError(f"{where}: field {name}: a 64-bit field needs words {word} and 7")
    enum = raw.get("enum")
    if enum is not None and not isinstance(enum, str):
        raise CatalogError(f"{where}: field {name}: enum must name an [enum.<name>] table")
    return FieldDef(name=name, type=type_, word=word, bits=span, enum=enum)


def _load_toml(path: Path) -> tuple[list[EventDef], dict[str, dict[int, str]]]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None
    cat = doc.get("catalog", {})
    cname = cat.get("name") if isinstance(cat, dict) else None
    if not isinstance(cname, str):
        raise CatalogError(f"{path}: [catalog] name missing")
    enums: dict[str, dict[int, str]] = {}
    for ename, table in (doc.get("enum") or {}).items():
        if not isinstance(table, dict):
            raise CatalogError(f"{path}: [enum.{ename}] must be a table")
        try:
            enums[ename] = {int(k, 0): str(v) for k, v in table.items()}
        except ValueError:
            raise CatalogError(f"{path}: [enum.{ename}] keys must be integers") from None
    events: list[EventDef] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc.get("event") or []):
        where = f"{path}: event #{i}"
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}: must be a table")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise CatalogError(f"{where}: name {name!r} must be snake_case")
        where = f"{path}: event {name}"
        if name in seen:
            raise CatalogError(f"{where}: name used twice in the catalog")
        seen.add(name)
        eid = _int(raw.get("id"), f"{where}: id")
        mask = _int(raw.get("mask", DEFAULT_MASK), f"{where}: mask")
        if eid & ~mask & DEFAULT_MASK or not 0 <= eid <= DEFAULT_MASK:
            raise CatalogError(f"{where}: id {eid:#x} has bits outside mask {mask:#x}")
        fields = tuple(_field(f, where) for f in raw.get("field") or [])
        for f in fields:
            if f.enum is not None and f.enum not in enums:
                raise CatalogError(f"{where}: field {f.name}: no [enum.{f.enum}] table")
        fmt = raw.get("format")
        tsc = raw.get("tsc")
        events.append(
            EventDef(
                id=eid, mask=mask, name=name, kind=str(raw.get("kind", "")),
                tsc=tsc if isinstance(tsc, bool) else None,
                format=fmt if isinstance(fmt, str) else None,
                doc=str(raw.get("doc", "")), fields=fields, catalog=cname,
            )
        )  # fmt: skip
    return events, enums


_XEN_FORMATS_LINE: Final = re.compile(r"^\s*(0x[0-9a-fA-F]+)\s+(.*)$")


def _load_xen_formats(path: Path) -> list[EventDef]:
    """Names from Xen's ``tools/xentrace/formats`` (``<id> <python %-format>``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror}") from None
    events = []
    names: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _XEN_FORMATS_LINE.match(line)
        if m is None:
            raise CatalogError(f"{path}:{lineno}: expected '<0x id> <format>'")
        eid = int(m[1], 16)
        if eid == 0:
            continue  # the fallback rule for unknown events: we print those raw
        words = [w for w in re.split(r"\s+", m[2]) if "%" not in w and not w.startswith("(+")]
        label = next((w for w in words if re.match(r"^[A-Za-z_][\w:]*$", w)), f"event_{eid:x}")
        name = re.sub(r"[^a-z0-9_]", "_", label.lower()).strip("_") or f"event_{eid:x}"
        if not name[0].isalpha():
            name = f"e_{name}"
        base, n = name, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.add(name)
        events.append(
            EventDef(
                id=eid & DEFAULT_MASK, mask=DEFAULT_MASK, name=name, kind="xen-formats",
                tsc=None, format=None, doc=m[2].strip(), fields=(), catalog=path.name,
            )
        )  # fmt: skip
    return events


def load_catalog(extra: Sequence[Path] = ()) -> Catalog:
    """The shipped catalogs (``formats/*.toml``, sorted by name), then ``extra`` in order.

    A path not ending in ``.toml`` is read as Xen's ``formats`` file.
    """
    events: list[EventDef] = []
    enums: dict[str, dict[int, str]] = {}
    paths = sorted(formats_dir().glob("*.toml")) + [Path(p) for p in extra]
    for path in paths:
        if path.suffix == ".toml":
            evs, ens = _load_toml(path)
            events.extend(evs)
            enums.update(ens)
        else:
            events.extend(_load_xen_formats(path))
    return Catalog(events, enums)
