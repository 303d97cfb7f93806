"""One registry style for everything a user may add by name: objectives, behaviours, probe classes, scorers.

``Registry(kind)`` maps names to items; ``register(name, item)`` refuses a taken name unless the item is
the same object or ``replace=True`` (so re-running a notebook cell that registers a new version works with
``replace=True``); ``get(name)`` raises a ValueError that lists the registered names and the closest match.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named items of one kind (``kind`` names them in error messages, e.g. ``"scorer"``)."""

    def __init__(self, kind: str, *, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._items: dict[str, T] = {}

    @property
    def _a(self) -> str:
        """The kind with its article, for messages: ``"an objective"``, ``"a scorer"``."""
        return f"{'an' if self.kind[:1].lower() in 'aeiou' else 'a'} {self.kind}"

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Make ``item`` available as ``name``; returns it. A different item under a taken name needs ``replace=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self._a} is registered under a non-empty string name, got {name!r}")
        current = self._items.get(name)
        if current is not None and current is not item and not replace:
            raise ValueError(f"{self._a} named {name!r} is already registered; pass replace=True to replace it")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a no-op when it is not registered)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The item registered as ``name``; a ValueError listing the registered names when there is none."""
        if not isinstance(name, str):
            raise TypeError(f"{self._a} is named by a string, got {type(name).__name__}")
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, list(self._items), n=1)
        did_you_mean = f" (did you mean {close[0]!r}?)" if close else ""
        hint = f". {self.hint}" if self.hint else ""
        raise ValueError(f"unknown {self.kind} {name!r}{did_you_mean}; registered: {self.names()}{hint}")

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {self.names()})"
