"""The transition tables of wsq/protocol/state.py: every edge they have, and nothing else."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from wsq.core.errors import StateError
from wsq.protocol.state import (
    CONNECTION_TRANSITIONS,
    LINK_TRANSITIONS,
    SESSION_TRANSITIONS,
    ConnectionEvent,
    ConnectionState,
    Link,
    LinkEvent,
    LinkState,
    Role,
    Session,
    SessionEvent,
    SessionState,
    next_state,
)

C, CE = ConnectionState, ConnectionEvent


def test_the_connection_table_is_the_documented_machine() -> None:
    assert dict(CONNECTION_TRANSITIONS) == {
        (C.AWAIT_OPEN, CE.OPEN_RECEIVED): C.AUTHENTICATING,
        (C.AUTHENTICATING, CE.OPEN_ACCEPTED): C.OPEN,
        (C.AWAIT_OPEN, CE.CLOSE_SENT): C.CLOSE_SENT,
        (C.AUTHENTICATING, CE.CLOSE_SENT): C.CLOSE_SENT,
        (C.OPEN, CE.CLOSE_SENT): C.CLOSE_SENT,
        (C.AWAIT_OPEN, CE.CLOSE_RECEIVED): C.CLOSED,
        (C.AUTHENTICATING, CE.CLOSE_RECEIVED): C.CLOSED,
        (C.OPEN, CE.CLOSE_RECEIVED): C.CLOSED,
        (C.CLOSE_SENT, CE.CLOSE_RECEIVED): C.CLOSED,
    }


def test_the_session_table_is_the_documented_machine() -> None:
    S, SE = SessionState, SessionEvent
    assert dict(SESSION_TRANSITIONS) == {
        (S.BEGUN, SE.END_SENT): S.END_SENT,
        (S.BEGUN, SE.ENDED): S.ENDED,
        (S.END_SENT, SE.ENDED): S.ENDED,
    }


@pytest.mark.parametrize(
    "table",
    [CONNECTION_TRANSITIONS, SESSION_TRANSITIONS, LINK_TRANSITIONS],
    ids=["connection", "session", "link"],
)
def test_an_edge_the_table_lacks_raises_state_error(table: Mapping[Any, Any]) -> None:
    state_type, event_type = (type(x) for x in next(iter(table)))
    for state, event in itertools.product(state_type, event_type):
        if (state, event) in table:
            assert next_state(table, state, event) is table[(state, event)]
        else:
            with pytest.raises(StateError, match=f"{event.value} cannot happen in state"):
                next_state(table, state, event)


def test_a_link_moves_only_along_its_table() -> None:
    link = Link(Session(1), 0, Role.RECEIVER, "a")
    assert link.state is LinkState.ATTACHING
    assert link.can(LinkEvent.ACCEPTED) and link.can(LinkEvent.ENDED)
    link.advance(LinkEvent.ACCEPTED)
    assert link.state is LinkState.ATTACHED
    assert not link.can(LinkEvent.ACCEPTED)
    with pytest.raises(StateError):
        link.advance(LinkEvent.ACCEPTED)  # an attach is answered once
    link.advance(LinkEvent.ENDED)
    assert link.state is LinkState.DETACH_SENT
    assert not link.can(LinkEvent.ENDED)
    with pytest.raises(StateError):
        link.advance(LinkEvent.ENDED)  # a link ends once


def test_a_session_ends_once() -> None:
    session = Session(3)
    session.advance(SessionEvent.END_SENT)
    assert session.state is SessionState.END_SENT
    with pytest.raises(StateError):
        session.advance(SessionEvent.END_SENT)
