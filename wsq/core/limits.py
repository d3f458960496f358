"""The contract's numbers, each defined once: ranges of frame fields, defaults, and the bounds
every front end (WebSocket, HTTP bridge) applies to the same values.

Server-wide limits an operator sets (``max_frame_bytes``, ``max_sessions``, …) live in the
configuration; these are the ones the contract or the design fixes.
"""

from __future__ import annotations

#: ``ch``: a session's channel (contract section 4).
MAX_CHANNEL = 65_535
#: ``handle`` and ``credit``: unsigned 32-bit (contract section 5).
MAX_UINT32 = 4_294_967_295
#: Delivery numbers are not wrapped at 32 bits: a long session may pass it. JSON-safe bound.
MAX_DELIVERY = 2**53 - 1

#: Longest token accepted (characters), in ``open``, ``refresh`` and ``Authorization``: anything
#: longer is refused before it is parsed.
MAX_TOKEN_CHARS = 16_384
#: ``message_id`` and ``content_type`` (characters).
MAX_STRING_PROP = 1_024
#: ``open``'s ``client`` name (characters).
MAX_CLIENT_NAME = 256

#: ``idle`` of ``open`` when the client gives none, and the server's own default (ms).
DEFAULT_IDLE_MS = 30_000
#: What the server grants each sender link (``[server] sender_credit``): publishes a client may
#: have on the way. It bounds no memory of the gateway's (docs/performance.md, "The publisher's
#: window"); the bound keeps a flow's number far from the wire's uint32.
DEFAULT_SENDER_CREDIT = 1024
MAX_SENDER_CREDIT = 65_536
#: A client's ``idle``: 0 (no heartbeats wanted) or within these (ms).
MIN_IDLE_MS = 500
MAX_IDLE_MS = 3_600_000

#: A move-mode lease (``lease`` of ``attach``, and of the bridge's claims) (ms).
DEFAULT_LEASE_MS = 30_000
MIN_LEASE_MS = 100
MAX_LEASE_MS = 86_400_000

#: ``rewind`` of a copy receiver's ``attach`` (contract section 5), and ``last`` of the bridge's
#: history read: the most retained messages a link may start with.
MAX_REWIND = 1_000
#: The most stored entries a rewind reads back from the newest, looking for the messages that
#: match a link's filter (or the last of each subject): a rewind never reads a whole stream.
REWIND_SCAN = 10_000
#: ... and at most about this many bytes of them (``message_size``), read a page of at most
#: ``REWIND_PAGE_BYTES`` at a time: a rewind over large messages holds little and stops early.
REWIND_SCAN_BYTES = 32 * 1024 * 1024
REWIND_PAGE_BYTES = 1024 * 1024
#: ``conflate.ms`` of a copy receiver's ``attach`` (contract section 5): from the contract's
#: floor up to a day.
MIN_CONFLATE_MS = 10
MAX_CONFLATE_MS = 86_400_000
#: What one conflating link holds back at most (the latest message of each subject waiting for
#: its turn): subjects, and bytes of their wire tails. Past either, a new subject's message is
#: dropped and counted (``hub.conflate_dropped``); a held subject is still replaced.
CONFLATE_MAX_SUBJECTS = 1_000
CONFLATE_MAX_BYTES = 4 * 1024 * 1024

#: A message's ``ttl`` (ms): up to a year.
MAX_TTL_MS = 365 * 86_400_000

#: Queue (move) rules, contract section 5: the most messages one link is handed per round, so
#: that every consumer of a group with credit gets work.
QUEUE_ROUND = 32
#: How long (ms) a message released by a consumer, or whose lease ran out on it, waits for
#: *another* consumer that wants work before it may go back to the same one. Another consumer
#: with credit claims it within milliseconds; the wait only matters when the group believes one
#: wants work that does not claim (its socket is full, or its process died unannounced).
HANDOFF_MS = 1_000
#: The most consumers a group remembers as wanting work: past it the record starts afresh
#: (consumers of a process that died unannounced are never removed otherwise).
MAX_WANTING = 4_096
