"""A first-in first-out queue that costs little while it is empty."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Fifo(Generic[T]):
    """A first-in first-out queue for the few items a connection holds at a time: a list and a
    read index, 100-odd bytes where it is empty (a ``collections.deque`` takes 760)."""

    __slots__ = ("_head", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._head = 0

    def append(self, item: T) -> None:
        self._items.append(item)

    def extend(self, items: Iterable[T]) -> None:
        self._items.extend(items)

    def popleft(self) -> T:
        items = self._items
        head = self._head
        item = items[head]
        head += 1
        if head == len(items):
            self._items = []
            head = 0
        elif head >= 1024 and head * 2 >= len(items):
            del items[:head]  # amortised: each item is moved at most once more
            head = 0
        self._head = head
        return item

    def peek(self) -> T:
        return self._items[self._head]

    def clear(self) -> None:
        self._items = []
        self._head = 0

    def __bool__(self) -> bool:
        return self._head < len(self._items)

    def __len__(self) -> int:
        return len(self._items) - self._head
