"""Transports: the one seam between prepared messages and the outside world.

Each transport implements :meth:`Transport.send`. A dry run or a test double is
just another transport, never a flag threaded through the code (after httpx).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Callable

from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.transports.base import Transport

#: Modules of this package that hold shared machinery, not a transport.
SUPPORT_MODULES = frozenset({"base", "http", "merge", "ratelimit"})
#: Transports that live in a support module rather than a module of their own name.
BUILT_IN = {"null": "newsletter.transports.base:NullTransport"}


def transport_names() -> list[str]:
    """Every transport, found rather than listed: a provider is a module of this package named as
    the transport (``postmark.py`` holds the ``postmark`` transport), so adding one is adding its
    module. Modules are listed, not imported: a dry run never imports requests or botocore."""
    import pkgutil

    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")} - SUPPORT_MODULES
    return sorted(found | set(BUILT_IN))


def transport_class(name: str) -> "type[Transport]":
    """The class of transport ``name``: the :class:`~newsletter.transports.base.Transport` subclass
    its module defines whose ``name`` is ``name``."""
    from newsletter.transports.base import Transport

    if name not in transport_names():
        raise ConfigError(f"NEWSLETTER_TRANSPORT={name!r} is not one of: {', '.join(transport_names())}")
    if name in BUILT_IN:
        module_name, _, class_name = BUILT_IN[name].partition(":")
        return getattr(import_module(module_name), class_name)
    module = import_module(f"{__name__}.{name}")
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, Transport) and value.__module__ == module.__name__
                and value.name == name):
            return value
    raise ConfigError(f"newsletter/transports/{name}.py defines no transport named {name!r}")


def get_transport(settings: "Settings", name: str | None = None, **options: object) -> "Transport":
    """Build the transport named by ``name`` or ``NEWSLETTER_TRANSPORT`` (default ``dryrun``)."""
    name = (name or settings.transport_name).lower()
    return transport_class(name).from_settings(settings, **options)


def transport_factory(settings: "Settings", name: str | None = None, *,
                      ledger: bool = False) -> Callable[[], "Transport"]:
    """Check the configuration now, before anything starts, and return a maker of fresh
    transports (one per worker). ``ledger`` runs must really send: one through a transport
    that sends nothing would mark everyone sent."""
    probe = get_transport(settings, name)
    try:
        probe.open()  # CA file, HELO name, the credentials' shape: refused before any reader is claimed
    finally:
        probe.close()
    if ledger and not probe.real:
        raise ConfigError(f"NEWSLETTER_TRANSPORT={probe.name} sends nothing, so it cannot run a delivery; "
                          "set a real transport, or use `newsletter send ISSUE --dry-run`")
    return lambda: get_transport(settings, name)
