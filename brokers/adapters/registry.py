"""The broker adapter registry: built once at start-up from ``settings.BROKER_ADAPTERS``."""

from __future__ import annotations

from types import MappingProxyType

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import BrokerAdapter

_registry: MappingProxyType[str, type[BrokerAdapter]] = MappingProxyType({})


class UnknownBroker(LookupError):
    """No adapter is registered under this broker code."""


def load(dotted_paths: list[str]) -> None:
    """Import every adapter; a wrong path or a duplicate code stops start-up, saying which."""
    global _registry
    adapters: dict[str, type[BrokerAdapter]] = {}
    for path in dotted_paths:
        try:
            adapter_class = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"BROKER_ADAPTERS: cannot import {path!r}: {exc}") from exc
        if not (isinstance(adapter_class, type) and issubclass(adapter_class, BrokerAdapter)):
            raise ImproperlyConfigured(f"BROKER_ADAPTERS: {path!r} is not a BrokerAdapter")
        code = adapter_class.code
        if not code:
            raise ImproperlyConfigured(f"BROKER_ADAPTERS: {path!r} has no broker code")
        if code in adapters:
            raise ImproperlyConfigured(
                f"BROKER_ADAPTERS: broker code {code!r} is used by both "
                f"{adapters[code].__module__}.{adapters[code].__name__} and {path!r}"
            )
        adapters[code] = adapter_class
    _registry = MappingProxyType(adapters)  # read-only once built


def get(code: str) -> type[BrokerAdapter]:
    try:
        return _registry[code]
    except KeyError:
        known = ", ".join(sorted(_registry)) or "none"
        raise UnknownBroker(f"Unknown broker {code!r}; registered brokers: {known}") from None


def all_adapters() -> list[type[BrokerAdapter]]:
    return list(_registry.values())


def codes() -> list[str]:
    return sorted(_registry)
