"""One address in the memory broker: its messages, retention, dedup and idempotency keys.

The messages are a list in position order with a head offset, so trimming the oldest is O(1)
amortised; reads bisect on positions. A trimmed message is released at once (its slot before the
head is given a placeholder) and the list's slots are compacted now and then. Retention counts
the messages, their age and their bytes (``bytes``: the ``stored_size`` of the retained ones, kept
as they come and go). The dedup map is pruned by age and capped in size; idempotency keys
likewise, their results kept as text (``wsq.core.messages.published_text``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from operator import attrgetter

from wsq.broker.base import Tail
from wsq.broker.memory.groups import EntryState, Group
from wsq.core.messages import Message, message_size
from wsq.core.policy import StoragePolicy
from wsq.core.positions import Position, parse_position

START_POS: Position = (0, 0)
pos_of = attrgetter("pos")

#: Compact a log's message list once this many trimmed slots sit before its head.
_COMPACT_MIN = 1024
#: What a trimmed message's slot holds until compaction: the message itself is released.
_TRIMMED = Message("0-0", "null", ts=0, publisher="")


class AddressLog:
    __slots__ = (
        "bytes",
        "cfg",
        "dedup",
        "dedup_order",
        "dropped",
        "groups",
        "head",
        "idem",
        "last",
        "msgs",
        "tails",
        "touched",
        "trimmed",
    )

    def __init__(self, cfg: StoragePolicy, now_ms: int) -> None:
        self.cfg = cfg
        self.msgs: list[Message] = []
        self.head = 0  # msgs[:head] are trimmed (placeholders), awaiting compaction
        self.bytes = 0  # the stored_size of msgs[head:]
        self.last: Position = START_POS  # newest position ever assigned
        self.dropped: Position = START_POS  # newest position lost to retention (not to its ttl)
        self.trimmed: Position = START_POS  # newest position removed from the log for any reason
        self.dedup: dict[str, tuple[int, str]] = {}  # message_id -> (ms accepted, position)
        self.dedup_order: deque[tuple[int, str]] = deque()  # (ms accepted, message_id)
        self.tails: list[Tail] = []
        self.groups: dict[str, Group] = {}
        self.touched = now_ms
        # Idempotency key -> (ms stored, request fingerprint, results as ``published_text``),
        # oldest first.
        self.idem: OrderedDict[str, tuple[int, str, str]] = OrderedDict()

    def append(self, new: list[Message]) -> None:
        self.msgs.extend(new)
        self.bytes += sum(map(message_size, new))

    def trim(self, now_ms: int) -> None:
        """Drop from the head what retention no longer keeps (by length, age and bytes: the
        newest message always stays), and expired messages there; release what goes."""
        msgs = self.msgs
        n = len(msgs)
        head = self.head
        if head >= n:
            return
        cfg = self.cfg
        total = self.bytes
        max_len = cfg.retention_max_len
        new_head = head
        if 0 < max_len < n - head:
            new_head = n - max_len
            for i in range(head, new_head):
                total -= message_size(msgs[i])
        max_age = cfg.retention_max_age_ms
        cutoff = now_ms - max_age if max_age > 0 else -1
        # Then the head goes while it is too old, or expired by its own ttl...
        while new_head < n:
            m = msgs[new_head]
            if m.ts < cutoff or (m.expires_at is not None and m.expires_at <= now_ms):
                total -= message_size(m)
                new_head += 1
            else:
                break
        # ... and while the rest is more bytes than retention keeps.
        max_bytes = cfg.retention_max_bytes
        while total > max_bytes > 0 and new_head < n - 1:
            total -= message_size(msgs[new_head])
            new_head += 1
        if new_head == head:
            return  # the common case: nothing to drop
        self.bytes = total
        dropped = self.dropped
        for i in range(head, new_head):
            m = msgs[i]
            if m.expires_at is None or m.expires_at > now_ms:
                dropped = m.pos  # lost to retention, not to its own ttl
            msgs[i] = _TRIMMED
        self.dropped = dropped
        self.trimmed = m.pos
        if new_head >= _COMPACT_MIN and new_head * 2 >= n:
            del msgs[:new_head]
            new_head = 0
        self.head = new_head

    def prune_dedup(self, now_ms: int, max_entries: int) -> None:
        order = self.dedup_order
        if not order:
            return
        dedup = self.dedup
        cutoff = now_ms - self.cfg.dedup_window_ms
        while order and (order[0][0] <= cutoff or len(dedup) > max_entries):
            ts, mid = order.popleft()
            cur = dedup.get(mid)
            if cur is not None and cur[0] == ts:
                del dedup[mid]

    def prune_idem(self, now_ms: int, max_entries: int) -> None:
        idem = self.idem
        cutoff = now_ms - self.cfg.dedup_window_ms
        while idem:
            ts = next(iter(idem.values()))[0]
            if ts > cutoff and len(idem) <= max_entries:
                break
            idem.popitem(last=False)

    def group(self, name: str) -> Group:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = Group()
        return g

    def prune_group(self, g: Group) -> None:
        """Forget the group's state for messages the log no longer holds."""
        entries = g.entries
        trimmed = self.trimmed
        while entries:
            e = next(iter(entries.values()))
            if e.msg.pos > trimmed:
                break
            entries.popitem(last=False)
            e.state = EntryState.REMOVED
            e.gen += 1

    def find(self, pos: Position) -> Message | None:
        msgs = self.msgs
        i = bisect_right(msgs, pos, lo=self.head, key=pos_of) - 1
        if i >= self.head and msgs[i].pos == pos:
            return msgs[i]
        return None

    def newest_first(
        self, before: str | None, limit: int, max_bytes: int, now_ms: int
    ) -> list[Message]:
        """Up to ``limit`` retained, unexpired messages before ``before`` (None: the newest),
        newest first, within ``max_bytes`` but at least one (``Broker.read_back``)."""
        self.touched = now_ms
        self.trim(now_ms)
        msgs = self.msgs
        i = len(msgs)
        if before is not None:
            i = bisect_left(msgs, parse_position(before), lo=self.head, key=pos_of)
        out: list[Message] = []
        used = 0
        while i > self.head and len(out) < limit:
            i -= 1
            m = msgs[i]
            if m.expires_at is None or m.expires_at > now_ms:
                used += message_size(m)
                if out and used > max_bytes:
                    break
                out.append(m)
        return out

    def idle(self) -> bool:
        if self.tails:
            return False
        return all(not g.watchers and g.timer is None for g in self.groups.values())
