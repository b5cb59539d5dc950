"""The module system: one file per protocol feature, registered declaratively.

A module is a class with a ``name``, the XEPs it implements, the disco features it advertises, an
``Options`` model (its ``[name]`` section of roost.toml), and methods marked with :func:`iq_handler`
or :func:`hook`. :class:`ModuleManager` instantiates it once per served domain, registers those
methods on the host's IQ table and event bus, and undoes every registration on unload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from roost.config.schema import ModuleOptions, register_section
from roost.core.hooks import Hook
from roost.core.iq import Target

if TYPE_CHECKING:
    from roost.core.host import Host
    from roost.core.server import Server
    from roost.xml.element import Element

log = logging.getLogger("roost.modules")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Xep:
    """A protocol extension a module implements (for docs/xeps.md and disco)."""

    number: int
    version: str
    status: str = "complete"  # "complete" | "partial"
    note: str = ""


def iq_handler(type_: str, ns: str, name: str, to: Target = Target.HOST) -> Callable[[F], F]:
    """Mark a method as the handler of IQs of ``type_`` whose payload is ``{ns}name``, sent ``to``."""

    def mark(func: F) -> F:
        marks: list[tuple[str, str, str, Target]] = func.__dict__.setdefault("_roost_iq", [])
        marks.append((type_, ns, name, to))
        return func

    return mark


def hook(event: Hook[Any] | str, priority: int = 0) -> Callable[[F], F]:
    """Mark a method as a handler of ``event`` (a hook declared in :mod:`roost.core.hooks` or by a module)."""

    def mark(func: F) -> F:
        marks: list[tuple[Hook[Any] | str, int]] = func.__dict__.setdefault("_roost_hooks", [])
        marks.append((event, priority))
        return func

    return mark


class Module:
    """Base class of feature modules."""

    name: ClassVar[str] = ""
    xeps: ClassVar[tuple[Xep, ...]] = ()
    #: disco#info features of the server domain while this module is loaded.
    features: ClassVar[tuple[str, ...]] = ()
    #: disco#info features of each account (bare JID) while this module is loaded.
    account_features: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[ModuleOptions]] = ModuleOptions
    #: This module's ``[name]`` section, an instance of ``Options`` (checked in ``__init__``). A
    #: subclass narrows the type with a class-level annotation (``options: MyOptions``) and reads its
    #: fields typed, without casts.
    options: ModuleOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            register_section(cls.name, cls.Options)

    def __init__(self, host: Host, options: ModuleOptions) -> None:
        expected = type(self).Options
        if not isinstance(options, expected):
            raise TypeError(
                f"module {self.name!r} takes {expected.__name__} options, not {type(options).__name__}"
            )
        self.host = host
        self.server: Server = host.server
        self.options = options
        self.log = logging.getLogger(f"roost.mod.{self.name}")

    def stream_features(self) -> Sequence[Element]:
        """Informative stream features this module adds after authentication (RFC 6121 §2.6.1, §3.4).

        Read when the set of loaded modules changes, not at every login: keep them constant.
        """
        return ()

    async def start(self) -> None:
        """Called after registration (open stores, start timers)."""

    async def stop(self) -> None:
        """Called before unregistration (flush, cancel timers)."""


class ModuleManager:
    """Loads and unloads modules on one host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.loaded: dict[str, Module] = {}
        self._undo: dict[str, list[Callable[[], None]]] = {}
        #: Bumped whenever the set of loaded modules changes (what is derived from it is cached).
        self.generation = 0

    async def load(self, cls: type[Module], options: ModuleOptions) -> Module:
        if cls.name in self.loaded:
            raise ValueError(f"module {cls.name} is already loaded on {self.host.domain}")
        module = cls(self.host, options)
        undo: list[Callable[[], None]] = []
        for attr in dir(cls):
            func = getattr(cls, attr, None)
            if func is None or not callable(func):
                continue
            bound = getattr(module, attr)
            for type_, ns, name, target in getattr(func, "_roost_iq", ()):
                undo.append(self.host.iq.register(type_, ns, name, target, bound))
            for event, priority in getattr(func, "_roost_hooks", ()):
                undo.append(self.host.bus.on(event, bound, priority))
        self.loaded[cls.name] = module
        self._undo[cls.name] = undo
        self.generation += 1
        try:
            await module.start()
        except Exception:
            self._unregister(cls.name)
            raise
        log.debug("loaded module %s on %s", cls.name, self.host.domain)
        return module

    async def unload(self, name: str) -> None:
        module = self.loaded.get(name)
        if module is None:
            return
        try:
            await module.stop()
        finally:
            self._unregister(name)

    def _unregister(self, name: str) -> None:
        for undo in self._undo.pop(name, ()):
            undo()
        self.loaded.pop(name, None)
        self.generation += 1

    async def unload_all(self) -> None:
        for name in reversed(list(self.loaded)):
            await self.unload(name)
