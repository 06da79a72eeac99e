"""A tiny name -> object registry, one per kind (backbones, scenarios, methods, data sets, presets).

Registries are the extension points: a new backbone, scenario, method, data set or preset is one
``@REGISTRY.register("name")`` away (see docs/extending.md), and ``impresslearn list`` shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from impresslearn.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names mapped to builders; ``impresslearn list`` reads these."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what was registered (e.g. to undo a test's registration)."""
        try:
            return self._items.pop(name)
        except KeyError:
            raise ConfigError(f"{self.kind} {name!r} is not registered") from None

    def get(self, name: str) -> T:
        """The object registered as ``name``; a clear error listing the known names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
