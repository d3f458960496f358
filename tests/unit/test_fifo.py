"""wsq.core.fifo.Fifo: order, length and truth, and that it gives back the room of the items it
has handed out (the reason it exists: a connection's queue that costs little)."""

from __future__ import annotations

import pytest

from wsq.core.fifo import Fifo


def test_items_come_out_in_the_order_they_went_in() -> None:
    fifo: Fifo[int] = Fifo()
    assert not fifo
    assert len(fifo) == 0
    fifo.append(1)
    fifo.extend([2, 3])
    assert fifo
    assert len(fifo) == 3
    assert fifo.peek() == 1
    assert [fifo.popleft(), fifo.popleft()] == [1, 2]
    assert len(fifo) == 1
    assert fifo.peek() == 3
    assert fifo.popleft() == 3
    assert not fifo
    assert len(fifo) == 0
    with pytest.raises(IndexError):
        fifo.popleft()


def test_clear_empties_it_and_it_can_be_used_again() -> None:
    fifo: Fifo[str] = Fifo()
    fifo.extend("abc")
    fifo.popleft()
    fifo.clear()
    assert not fifo
    assert len(fifo) == 0
    fifo.append("d")
    assert fifo.peek() == "d"
    assert len(fifo) == 1


def test_emptied_it_holds_no_list_and_restarts_at_the_front() -> None:
    fifo: Fifo[int] = Fifo()
    fifo.extend([1, 2])
    fifo.popleft()
    fifo.popleft()
    # White-box on purpose: the room is the point of this class.
    assert fifo._items == []
    assert fifo._head == 0


def test_the_items_handed_out_are_dropped_once_they_are_half_and_1024_or_more() -> None:
    fifo: Fifo[int] = Fifo()
    fifo.extend(range(3000))
    for expected in range(1499):
        assert fifo.popleft() == expected
    # 1,499 handed out: at least 1,024, but fewer than the 1,501 still queued.
    assert len(fifo._items) == 3000
    assert fifo.popleft() == 1499
    # 1,500 handed out, as many as remain: dropped.
    assert len(fifo._items) == 1500
    assert fifo._head == 0
    assert len(fifo) == 1500
    assert fifo.peek() == 1500
    assert [fifo.popleft() for _ in range(1500)] == list(range(1500, 3000))


def test_fewer_than_1024_handed_out_are_kept_even_past_half() -> None:
    fifo: Fifo[int] = Fifo()
    fifo.extend(range(2046))
    for _ in range(1023):
        fifo.popleft()
    assert len(fifo._items) == 2046
    assert len(fifo) == 1023
    fifo.popleft()
    assert len(fifo._items) == 1022
    assert fifo.peek() == 1024
