"""ServerConnection under random input: it never raises, its loops end, its output stays valid.

A small fake gateway answers every event the way the real one may (accept or refuse an open or an
attach, publish and settle, deliver on receiver links with credit, end sessions, detach, close),
so that random frames reach deep states, not only the "first frame must be open" wall. Frames are
mostly well-formed with a few fields mutated, and a transfer's ``"delivery": "next"`` is replaced
by the number the session expects, so that publishing, credit and settlement get exercised.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_helpers import MAX_EVENTS, OPEN_ANSWER, message

from wsq.core.errors import Forbidden, GoingAway, InvalidFrame, Unauthorized
from wsq.core.wire import copy_tail, message_tail
from wsq.protocol.connection import Limits, ServerConnection
from wsq.protocol.events import (
    AttachRequested,
    ConnectionEnded,
    CreditGranted,
    DeliveriesSettled,
    LinkEnded,
    OpenRequested,
    PublishRequested,
    RefreshRequested,
)
from wsq.protocol.state import ConnectionState, Link, LinkState, Role, SessionState

SERVER_OPS = {
    "open",
    "close",
    "refresh",
    "begin",
    "end",
    "attach",
    "detach",
    "flow",
    "transfer",
    "disposition",
}
CONDITIONS = {
    f"wsq:{name}"
    for name in (
        "unauthorized",
        "token-expired",
        "forbidden",
        "invalid-frame",
        "frame-too-large",
        "resource-limit-exceeded",
        "transfer-limit-exceeded",
        "idle-timeout",
        "not-found",
        "internal-error",
        "going-away",
    )
}
LIMITS = Limits(max_frame_bytes=4_096, max_sessions=3, max_links_per_session=3, sender_credit=4)
NEXT = "next"  # placeholder for the delivery number the session expects

#: Open, two sessions, a sender (0/0), a copy receiver (0/1), move receivers (1/0, 1/1 settled).
PREAMBLE = [
    {"op": "open", "token": "jwt", "idle": 1_000, "client": "fuzz/1"},
    {"op": "begin", "ch": 0},
    {"op": "begin", "ch": 1},
    {"op": "attach", "ch": 0, "handle": 0, "role": "sender", "address": "chat.room1"},
    {"op": "attach", "ch": 0, "handle": 1, "role": "receiver", "address": "news.eu", "credit": 3},
    {
        "op": "attach",
        "ch": 1,
        "handle": 0,
        "role": "receiver",
        "address": "jobs",
        "mode": "move",
        "credit": 4,
    },
    {
        "op": "attach",
        "ch": 1,
        "handle": 1,
        "role": "receiver",
        "address": "jobs",
        "mode": "move",
        "settled": True,
    },
]

# -- strategies ---------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

#: Any value a field may be mutated to: valid ones, wrong types, out of range, odd JSON.
odd_values = (
    st.sampled_from(["accepted", "released", "bogus", 0, 1, ["accepted"], {"x": 1}])
    | st.sampled_from([-1, 0, 1, 2, 7, 65_535, 65_536, 2**32 - 1, 2**32, 2**53, 2**64, 2**70])
    | st.sampled_from([1.0, 0.5, True, False, "", "1", "x" * 300, "news.*", "a..b", None])
    | st.sampled_from([[], [1], {}, {"a": 1}, "\ud800"])
    | json_values
)

good_fields: dict[str, st.SearchStrategy[Any]] = {
    "ch": st.sampled_from([0, 0, 0, 0, 1, 1, 1, 1, 2]),
    "handle": st.sampled_from([0, 0, 1, 1, 2]),
    "token": st.just("jwt"),
    "idle": st.sampled_from([0, 500, 30_000]),
    "role": st.sampled_from(["receiver", "sender"]),
    "address": st.sampled_from(["news.eu", "chat.room1", "jobs"]),
    "mode": st.sampled_from(["copy", "move"]),
    "from": st.sampled_from(["$", "^", "5-1"]),
    "group": st.sampled_from(["default", "g1"]),
    "lease": st.sampled_from([100, 30_000]),
    "filter": st.sampled_from([{}, {"subject": "orders.*.eu"}, {"subject": "news.>"}]),
    "settled": st.booleans(),
    "credit": st.integers(min_value=0, max_value=6),
    "delivery": st.sampled_from([NEXT, NEXT, NEXT, 0, 1, 5]),
    "first": st.integers(min_value=0, max_value=8),
    "last": st.integers(min_value=0, max_value=12) | st.just(2**50),
    "outcome": st.sampled_from(["accepted", "released", "rejected", "modified"]),
    "error": st.just({"condition": "wsq:internal-error", "description": "client error"}),
    "body": json_values,
    "props": st.sampled_from(
        [
            {},
            {"subject": "orders.de.eu", "message_id": "m1", "ttl": 1000, "headers": {"k": "v"}},
            {"subject": "a..b"},
            {"ttl": 0},
            {"headers": []},
            {"message_id": "\ud800"},
        ]
    ),
}

fields_of_op: dict[str, tuple[list[str], list[str]]] = {
    # op: (required fields, optional fields)
    "open": (["token"], ["idle"]),
    "close": ([], ["error"]),
    "refresh": (["token"], []),
    "begin": (["ch"], []),
    "end": (["ch"], ["error"]),
    "attach": (
        ["ch", "handle", "role", "address"],
        ["mode", "from", "group", "lease", "filter", "settled", "credit"],
    ),
    "detach": (["ch", "handle"], ["error"]),
    "flow": (["ch", "handle", "credit"], []),
    "transfer": (["ch", "handle", "delivery"], ["settled", "body", "props"]),
    "disposition": (["ch", "first"], ["last", "outcome"]),
}
op_weights = (
    ["transfer"] * 8
    + ["flow"] * 4
    + ["disposition"] * 4
    + ["attach"] * 3
    + ["detach"] * 3
    + ["begin", "begin", "end", "refresh"]
)
rare_ops = ["open", "close"]


@st.composite
def frames(draw: st.DrawFn) -> dict[str, Any]:
    op = (
        draw(st.sampled_from(op_weights) | st.sampled_from(rare_ops))
        if draw(st.integers(0, 9)) == 0
        else draw(st.sampled_from(op_weights))
    )
    required, optional = fields_of_op[op]
    frame: dict[str, Any] = {"op": op}
    for key in (
        [*required, *draw(st.lists(st.sampled_from(optional), unique=True))]
        if optional
        else required
    ):
        frame[key] = draw(good_fields[key])
    if op == "begin":
        frame["ch"] = draw(st.sampled_from([2, 2, 3, 0]))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 0, 1, 1, 2]))):
        if draw(st.integers(min_value=0, max_value=4)):
            key = draw(st.sampled_from(sorted({*frame, *optional})))  # mostly a field the op reads
        else:
            key = draw(st.sampled_from(["op", "unknown", *sorted(good_fields)]))
        if key != "op" and key in frame and draw(st.integers(min_value=0, max_value=3)) == 0:
            del frame[key]
        elif key == "op":
            frame["op"] = draw(
                st.sampled_from(["bogus", "", None, 5, "OPEN", "detach", "transfer"])
            )
        else:
            frame[key] = draw(odd_values)
    return frame


def _deep_transfer(depth: int) -> tuple[str, Any]:
    return ("deep", depth)


garbage = st.one_of(
    json_values.map(lambda v: ("json", v)),
    st.text(max_size=30).map(lambda t: ("text", t)),
    st.binary(max_size=20).map(lambda b: ("text", b)),
    st.sampled_from(
        [
            "[]",
            "{",
            "NaN",
            "1e400",
            '"\\ud800"',
            "\ud800",
            '"' + "\ud800" * 1_500 + '"',  # a str no UTF-8 encoder takes, measured near the limit
            "[" * 2_000 + "]" * 2_000,
            '{"op":"begin","ch":2,"p":"' + "é" * 2_040 + '"}',  # 4,110 bytes in 2,070 characters
            '{"op":"begin","ch":2,"p":"' + "é" * 2_030 + '"}',  # 4,090 bytes
        ]
    ).map(lambda t: ("text", t)),
)
publishing = st.lists(
    st.just({"op": "transfer", "ch": 0, "handle": 0, "delivery": NEXT}), min_size=1, max_size=8
)


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, Any]:
    """One client message: mostly frames and batches, sometimes garbage (weights explicit)."""
    roll = draw(st.integers(min_value=0, max_value=99))
    if roll < 45:
        return ("json", draw(frames()))
    if roll < 70:
        return ("json", draw(st.lists(frames(), min_size=1, max_size=6)))
    if roll < 85:
        return ("json", draw(publishing))
    if roll < 90:
        return _deep_transfer(draw(st.sampled_from([300, 980, 1_000, 1_020])))
    broken: tuple[str, Any] = draw(garbage)
    return broken


@st.composite
def actions(draw: st.DrawFn) -> tuple[str, Any, int]:
    choice = draw(st.integers(min_value=0, max_value=2**16))
    if draw(st.integers(min_value=0, max_value=99)) < 15:
        return ("gateway", None, choice)
    return ("message", draw(messages()), choice)


# -- the fake gateway and the invariants ----------------------------------------------------------------


class Driver:
    def __init__(self) -> None:
        self.conn = ServerConnection(LIMITS)
        self.ended = 0
        self.position = 0
        self.answers: list[dict[str, Any]] = []
        self.closed = False  # we sent close: nothing may follow

    # -- client side --------------------------------------------------------------------------------

    def _next_delivery(self, frame: Any, planned: dict[int, int]) -> None:
        if type(frame) is dict and frame.get("op") == "transfer" and frame.get("delivery") == NEXT:
            ch = frame.get("ch")
            if type(ch) is not int:
                frame["delivery"] = 0
                return
            session = self.conn.sessions.get(ch)
            number = planned.get(ch, session.next_incoming if session else 0)
            frame["delivery"] = number
            planned[ch] = number + 1

    def feed(self, item: tuple[str, Any]) -> None:
        kind, value = item
        if kind == "json":
            value = copy.deepcopy(value)  # examples share their objects
            planned: dict[int, int] = {}
            for frame in value if isinstance(value, list) else [value]:
                self._next_delivery(frame, planned)
            self.conn.receive_text(json.dumps(value))
        elif kind == "deep":
            session = self.conn.sessions.get(0)
            number = session.next_incoming if session else 0
            body = "[" * value + "]" * value
            self.conn.receive_text(
                f'{{"op":"transfer","ch":0,"handle":0,"delivery":{number},"body":{body}}}'
            )
        else:
            self.conn.receive_text(value)

    # -- gateway side -------------------------------------------------------------------------------

    def drain(self, choice: int) -> None:
        """Answer every event; ``choice`` picks between the answers the gateway may give."""
        conn = self.conn
        for step in range(MAX_EVENTS):
            event = conn.next_event()
            if event is None:
                return
            pick = (choice >> (step % 16)) & 1 or step % 3 == 0
            if isinstance(event, OpenRequested):
                if pick:
                    conn.accept_open(OPEN_ANSWER)
                else:
                    conn.reject_open(Unauthorized("no"))
            elif isinstance(event, RefreshRequested):
                if pick:
                    conn.accept_refresh(2_000_000_000)
                else:
                    conn.close(Unauthorized("refresh refused"))
            elif isinstance(event, AttachRequested):
                link = event.link
                assert link.state is LinkState.ATTACHING
                if not pick:
                    conn.detach(link, Forbidden("no"))
                elif link.role is Role.RECEIVER and link.mode == "copy":
                    conn.accept_attach(link, from_="0-0", recovered=True)
                else:
                    conn.accept_attach(link)
            elif isinstance(event, PublishRequested):
                items = event.items
                assert items
                assert [i.delivery for i in items] == list(
                    range(items[0].delivery, items[0].delivery + len(items))
                )
                assert event.link.role is Role.SENDER
                assert event.link.state is LinkState.ATTACHED  # not one already ended
                for item in items:
                    json.loads(item.body.encode("utf-8"))  # stored as valid UTF-8 JSON
                results: list[Any] = []
                for item in items:
                    if item.error is None and pick:
                        self.position += 1
                        results.append((item, f"1-{self.position}", None))
                    else:
                        results.append((item, None, InvalidFrame(item.error or "refused")))
                conn.settle_publish(event.link, results)
            elif isinstance(event, CreditGranted):
                assert event.link.role is Role.RECEIVER
                assert event.link.state is not LinkState.DETACH_SENT
                self.deliver(event.link)
            elif isinstance(event, DeliveriesSettled):
                assert event.ids
                assert event.link.is_move
                assert event.link.state is LinkState.ATTACHED
            elif isinstance(event, LinkEnded):
                assert event.link.state is LinkState.DETACH_SENT
            elif isinstance(event, ConnectionEnded):
                self.ended += 1
            else:  # pragma: no cover
                raise AssertionError(event)
        raise AssertionError("next_event() never returned None")

    def deliver(self, link: Link) -> None:
        """Deliver up to three messages within the link's credit, as the hub does."""
        if link.state is not LinkState.ATTACHED:
            return
        for _ in range(min(link.credit, 3)):
            self.position += 1
            m = message(
                f"1-{self.position}",
                {"n": self.position},
                subject="orders.de.eu",
                message_id="\ud800",
            )
            if link.is_move:
                self.conn.send_transfer(link, message_tail(m, 0), m.id)
            else:
                self.conn.send_transfer(link, copy_tail(m))

    def act(self, choice: int) -> None:
        """Something the gateway does on its own: close, end a session, detach, deliver…"""
        conn = self.conn
        kind = choice % 20
        if kind == 0:
            conn.close(GoingAway("draining"))
        elif kind == 1:
            sessions = list(conn.sessions.values())
            if sessions:
                conn.end_session(sessions[choice % len(sessions)], InvalidFrame("fuzz"))
        elif kind == 2:
            links = conn.links()
            if links:
                conn.detach(links[choice % len(links)], Forbidden("fuzz"))
        elif kind in (3, 4, 5):
            conn.heartbeat()
        else:
            for link in conn.links():
                if link.role is Role.RECEIVER:
                    self.deliver(link)

    def _plan_answer(self, frame: dict[str, Any]) -> None:
        """A well-behaved client answers our end or detach, then begins or attaches again (the
        preamble's sessions and links only), so that a script does not run dry early."""
        op, ch = frame["op"], frame.get("ch")
        if op == "end" and ch in (0, 1):
            self.answers.append({"op": "end", "ch": ch})
            self.answers.append({"op": "begin", "ch": ch})
            self.answers.extend(f for f in PREAMBLE if f["op"] == "attach" and f["ch"] == ch)
        elif op == "detach":
            attach = [
                f
                for f in PREAMBLE
                if f["op"] == "attach" and (f["ch"], f["handle"]) == (ch, frame["handle"])
            ]
            self.answers.append({"op": "detach", "ch": ch, "handle": frame["handle"]})
            self.answers.extend(attach)

    def answer(self) -> None:
        """Send the planned answers (as one batch), if any."""
        if self.answers:
            batch, self.answers = self.answers, []
            self.conn.receive_text(json.dumps(batch))
            self.drain(0xFFFF)

    # -- invariants ---------------------------------------------------------------------------------

    def check(self) -> None:
        conn = self.conn
        # Output: valid UTF-8 JSON texts, each a frame or a batch of frames (or the heartbeat).
        for text in conn.data_to_send(max_bytes=512):
            assert isinstance(text, str)
            value = json.loads(text.encode("utf-8"))
            batch = value if isinstance(value, list) else [value]
            for frame in batch:
                assert isinstance(frame, dict)
                assert frame["op"] in SERVER_OPS
                assert not self.closed, f"{frame} after our close"
                self.closed = frame["op"] == "close"
                error = frame.get("error")
                if error is not None:
                    assert error["condition"] in CONDITIONS
                    assert isinstance(error["description"], str)
                    self._plan_answer(frame)
        assert not conn.has_output
        assert conn.out_bytes == 0
        assert self.ended <= 1
        # Bookkeeping stays consistent.
        if conn.state in (ConnectionState.CLOSE_SENT, ConnectionState.CLOSED):
            assert conn.sessions == {}
            assert self.ended == 1
        begun = 0
        for ch, session in conn.sessions.items():
            assert session.ch == ch
            if session.state is SessionState.BEGUN:
                begun += 1
            else:
                assert session.links == {}
            for handle, link in session.links.items():
                assert link.session is session and link.handle == handle and link.ch == ch
                if link.state is LinkState.DETACH_SENT:
                    assert link.unsettled == {}
                for delivery, message_id in link.unsettled.items():
                    assert session.unsettled[delivery] is link
                    assert isinstance(message_id, str)
            for delivery, link in session.unsettled.items():
                assert session.links.get(link.handle) is link
                assert delivery in link.unsettled
        assert begun <= LIMITS.max_sessions
        assert conn._begun == begun  # the slot count matches the sessions begun


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(actions(), min_size=3, max_size=30), st.sampled_from([True, True, True, False]))
def test_random_input_never_raises_and_leaves_a_consistent_connection(
    script: list[tuple[str, Any, int]], preamble: bool
) -> None:
    driver = Driver()
    if preamble:
        driver.feed(("json", PREAMBLE))
        driver.drain(0xFFFF)
        assert len(driver.conn.links()) == 4
        driver.check()
    for kind, item, choice in script:
        if kind == "message":
            driver.feed(item)
        else:
            driver.act(choice)
        driver.drain(choice)
        driver.check()
        if choice % 4:
            driver.answer()
            driver.check()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), max_size=8))
def test_random_messages_fed_without_draining_never_raise(items: list[tuple[str, Any]]) -> None:
    # A driver may feed several messages before asking for events.
    driver = Driver()
    driver.feed(("json", PREAMBLE))
    for item in items:
        driver.feed(item)
    driver.drain(0xFFFF)
    driver.check()


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_as_a_message_never_raises(value: Any) -> None:
    for preamble in (False, True):
        driver = Driver()
        if preamble:
            driver.feed(("json", PREAMBLE))
            driver.drain(0xFFFF)
        driver.feed(("json", value))
        driver.drain(0xFFFF)
        driver.check()
