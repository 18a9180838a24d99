"""The logic interface: what a blkif driver *does*, separated from what the model checks.

A backend logic decides how the backend attaches to a ring, what it does on disconnect,
unbind and removal, and around each disk I/O; a frontend logic decides how request ids are
allocated, what is kept in the shadow of each outstanding request and what is re-issued
after a resume. The machines (:mod:`.backend`, :mod:`.frontend`) call these hooks and check
the invariants themselves, so a logic cannot hide a violation.

Write your own by subclassing :class:`~blktrace_xen.model.logics.linux.LinuxBlkback` or
:class:`~blktrace_xen.model.logics.linux.LinuxBlkfront` and overriding a hook, then pass
``path.py:ClassName`` wherever a logic name is accepted (:func:`load_logic`).

Backend logic objects may be shared by several backend instances: keep per-instance state
on the :class:`~blktrace_xen.model.backend.Backend` (``be.refcnt``, ``be.goal``). Frontend
logic objects are per frontend and may keep the shadow themselves.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, cast, runtime_checkable

from blktrace_xen.errors import LogicLoadError

if TYPE_CHECKING:
    from blktrace_xen.model.backend import Backend
    from blktrace_xen.model.frontend import Frontend
    from blktrace_xen.model.ring import Req


@runtime_checkable
class BackendLogic(Protocol):
    """What a backend driver does. Hooks receive the backend instance ``be``.

    Attributes:
        name: the logic's registry name.
        checks_request_overflow: halt when ``req_prod - rsp_prod_pvt > nr_ents``
            (RING_REQUEST_PROD_OVERFLOW, Linux blkback since 2013).
        consumes_while_draining: keep consuming requests after a stop was requested
            (xbdback kept its event handler until the disconnect finished).

    Optional attributes (read with Linux's value as default, so older logics still load):
        max_indirect_segments: feature-max-indirect-segments (Linux 256); 0 makes
            BLKIF_OP_INDIRECT an unknown operation.
        unknown_op_status: the status an unknown operation is answered with at once
            (Linux dispatch_other_io: BLKIF_RSP_EOPNOTSUPP, -2).

    ``io_started``/``io_done`` left as :class:`LinuxBlkback`'s no-ops are not called.
    """

    name: str
    checks_request_overflow: bool
    consumes_while_draining: bool

    def attach(self, be: Backend, t_ns: int) -> bool:
        """Bind / connect: call ``be.map_at(t_ns, idx)`` and return True, or refuse (False)."""
        ...

    def disconnect(self, be: Backend, t_ns: int, goal: str) -> None:
        """The toolstack asks for a disconnect (goal "disconnect") or a domain destroy
        ("destroy"). Typically ``be.stop(t_ns, goal, wait=...)``."""
        ...

    def unbind(self, be: Backend, t_ns: int) -> None:
        """The driver is unbound from the device."""
        ...

    def remove(self, be: Backend, t_ns: int) -> None:
        """Migration: the device is removed on the source. Must call ``be.start_target``
        (now or later, e.g. in :meth:`finished`) for the guest to run on the target."""
        ...

    def io_started(self, be: Backend, req: Req, t_ns: int) -> None:
        """A consumed request was sent to the disk."""
        ...

    def io_done(self, be: Backend, req: Req, t_ns: int) -> None:
        """A request's disk I/O completed and its response was produced (or lost)."""
        ...

    def drained(self, be: Backend, t_ns: int) -> None:
        """The last I/O in flight completed while DRAINING (typically ``be.complete_goal``)."""
        ...

    def finished(self, be: Backend, t_ns: int, goal: str) -> None:
        """``be.complete_goal`` ran: the ring is unmapped (e.g. publish shutdown-done)."""
        ...


@runtime_checkable
class FrontendLogic(Protocol):
    """What a frontend driver does with request ids and its shadow.

    Attributes:
        name: the logic's registry name.
        validates_responses: stop (BLKIF_STATE_ERROR) on a response with a bad id or
            operation or an implausible rsp_prod (Linux blkfront since 2021).
    """

    name: str
    validates_responses: bool

    def setup(self, fe: Frontend, nr_ents: int) -> None:
        """Called once, before the first request."""
        ...

    def log(self, fe: Frontend, req: Req, wanted_id: int | None) -> int:
        """A new request: choose its ring id, remember what the logic keeps of it, return
        the id (the machine sets ``req.id``)."""
        ...

    def retire(self, fe: Frontend, rsp_id: int) -> None:
        """A response for ``rsp_id`` was read: free what :meth:`log` allocated."""
        ...

    def recover(self, fe: Frontend) -> list[Req]:
        """After resume, on a fresh ring: the requests to re-issue, in order, rebuilt from
        the logic's shadow (ids must be the ring ids they were logged with)."""
        ...


Side = Literal["back", "front"]
Kind = Literal["legacy", "patched", "reference"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LogicSpec:
    """A registered logic. ``sides`` maps "back"/"front" to the class building it (a
    reference logic such as ``linux-default`` names both halves)."""

    name: str
    seed: str | None  # "000", "002", "003", "004" or None
    kind: Kind
    doc: str
    paired: str | None  # the other half of the legacy/patched pair
    sides: dict[Side, Callable[[], BackendLogic | FrontendLogic]]

    @property
    def side(self) -> str:
        return "both" if len(self.sides) > 1 else next(iter(self.sides))

    def make(self, side: Side) -> BackendLogic | FrontendLogic:
        return self.sides[side]()


# Filled at the bottom of this module, once LogicSpec and the protocols exist (the seed
# modules import them from here).
LOGICS: dict[str, LogicSpec] = {}

_BACK_ATTRS = ("name", "checks_request_overflow", "consumes_while_draining")
_BACK_METHODS = (
    "attach",
    "disconnect",
    "unbind",
    "remove",
    "io_started",
    "io_done",
    "drained",
    "finished",
)
_FRONT_ATTRS = ("name", "validates_responses")
_FRONT_METHODS = ("setup", "log", "retire", "recover")


def _missing(obj: object, attrs: tuple[str, ...], methods: tuple[str, ...]) -> list[str]:
    missing = [a for a in attrs if not hasattr(obj, a)]
    missing += [m for m in methods if not callable(getattr(obj, m, None))]
    return missing


def load_logic(ref: str, side: Side) -> BackendLogic | FrontendLogic:
    """Build a logic from a registry name or from ``path.py:ClassName``.

    Raises :class:`~blktrace_xen.errors.LogicLoadError` naming what is wrong: unknown name,
    missing file, missing class, a class for the other side, or missing hooks.
    """
    if ":" not in ref:
        spec = LOGICS.get(ref)
        if spec is None:
            known = ", ".join(sorted(n for n, s in LOGICS.items() if side in s.sides))
            raise LogicLoadError(f"unknown {side}end logic {ref!r}; known: {known}")
        if side not in spec.sides:
            raise LogicLoadError(f"logic {ref!r} is a {spec.side}end logic, not a {side}end one")
        return spec.make(side)
    path_s, _, cls_name = ref.rpartition(":")
    path = Path(path_s)
    if not path.is_file():
        raise LogicLoadError(f"{path}: no such logic file")
    modspec = importlib.util.spec_from_file_location(f"_blktrace_xen_user_{path.stem}", path)
    if modspec is None or modspec.loader is None:
        raise LogicLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(modspec)
    try:
        modspec.loader.exec_module(module)
    except Exception as exc:  # a user file may raise anything; report it as one error
        raise LogicLoadError(f"{path}: importing failed: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, cls_name, None)
    if cls is None or not inspect.isclass(cls):
        raise LogicLoadError(f"{path}: no class {cls_name!r}")
    try:
        obj = cls()
    except Exception as exc:
        raise LogicLoadError(
            f"{path}:{cls_name}: cannot be constructed without arguments: {exc}"
        ) from exc
    attrs, methods = (
        (_BACK_ATTRS, _BACK_METHODS) if side == "back" else (_FRONT_ATTRS, _FRONT_METHODS)
    )
    missing = _missing(obj, attrs, methods)
    if missing:
        raise LogicLoadError(
            f"{path}:{cls_name} is not a {side}end logic: missing {', '.join(missing)} "
            f"(subclass blktrace_xen.model.logics.linux."
            f"{'LinuxBlkback' if side == 'back' else 'LinuxBlkfront'})"
        )
    return cast("BackendLogic | FrontendLogic", obj)


def resolve_backend(logic: str | BackendLogic) -> BackendLogic:
    if isinstance(logic, str):
        obj = load_logic(logic, "back")
        assert isinstance(obj, BackendLogic)
        return obj
    return logic


def resolve_frontend_factory(logic: str | FrontendLogic) -> Callable[[], FrontendLogic]:
    """Frontend logics keep per-frontend state: each ring needs its own object."""
    if isinstance(logic, str):
        ref = logic

        def make() -> FrontendLogic:
            obj = load_logic(ref, "front")
            assert isinstance(obj, FrontendLogic)
            return obj

        make()  # fail early on a bad name
        return make
    obj = logic
    return lambda: obj


def _register() -> None:
    from blktrace_xen.model.logics import all_specs

    for spec in all_specs():
        LOGICS[spec.name] = spec


_register()
