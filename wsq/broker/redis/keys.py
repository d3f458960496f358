"""Redis key names of an address: everything one address needs lives under one prefix.

``wsq:{<tenant>:<address>}`` with tenant and address percent-escaped, so ``{``, ``}``, ``:`` and
``%`` never appear raw and no address can name another tenant's keys. The braces are a Redis
Cluster hash tag: every key of one address lands in one slot, so the Lua scripts that touch
several of them stay legal in a cluster.

- ``…:s``  the stream (entry id = position; ``entries`` says what an entry holds)
- ``…:m``  hash: ``last`` (newest id ever added), ``dropped`` (newest id lost to retention)
- ``…:i:<message_id>`` the position of a message_id, expiring with the dedup window
- ``…:k:<idempotency key>`` an HTTP publish's fingerprint and results, as long
- ``…:io`` / ``…:ko`` sorted sets of the dedup ids / idempotency keys kept (what follows
  ``:i:`` / ``:k:`` in their key names), scored by the ms they were stored: what bounds their
  number (``max_dedup_ids``, ``max_idempotency_keys``; ``lua/bound.lua``)
- ``…:g:<group>:l`` / ``:w`` / ``:n`` / ``:q`` lease deadlines, redelivery delays, per message
  state (redelivered count, last holder, dead-letter reason), consumers wanting work
- ``…:p``  the Pub/Sub channel where each publish announces its newest position, and each
  change of the address's presence room its new version (``v:<version>``)
- ``…:pm`` / ``…:pv`` the address's present members and their version (``presence.py``)
- ``…:oc`` / ``…:on`` the processes with receivers on the address and its occupancy number,
  ``…:h:<name>`` a lease one process holds on it (a sink's turn to read it) (``presence.py``)

A tenant as a whole has keys of its own, ``wsq:{<tenant>}:…`` (its hash tag names no address,
so all of them share one slot): its quota counts (``tenant_key``, ``lua/count.lua`` and
``lua/admit.lua``).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

#: Pseudo consumers of a group: what is available again, what waits out a redelivery delay,
#: what waits to be dead-lettered and what a process is dead-lettering (``lua/group.lua``).
READY = "~ready"
DELAY = "~delay"
DEAD = "~dead"
DYING = "~dying"


@lru_cache(maxsize=65_536)
def address_base(tenant: str, address: str) -> str:
    """The key prefix of one address: a hash tag no other (tenant, address) can produce."""
    return f"wsq:{{{quote(tenant, safe='')}:{quote(address, safe='')}}}"


def group_keys(base: str, group: str) -> tuple[str, str, str, str]:
    """Lease deadlines, redelivery delays, per message state and wanting consumers of one
    consumer group (``lua/group.lua`` says what each holds)."""
    g = f"{base}:g:{quote(group, safe='')}"
    return f"{g}:l", f"{g}:w", f"{g}:n", f"{g}:q"


def dedup_key(base: str, message_id: str) -> str:
    # JSON lets a client send a lone surrogate, which UTF-8 cannot encode strictly:
    # ``surrogatepass`` keeps such an id distinct instead of refusing the publish.
    return f"{base}:i:{quote(message_id, safe='', errors='surrogatepass')}"


def idempotency_key(base: str, key: str) -> str:
    return f"{base}:k:{quote(key, safe='')}"


def tenant_key(tenant: str, what: str) -> str:
    """A key of the tenant as a whole: ``connections`` and ``links`` (hashes of each process's
    count), ``addresses`` (sorted set of its live addresses)."""
    return f"wsq:{{{quote(tenant, safe='')}}}:{what}"


def bound_keys(base: str) -> tuple[str, str]:
    """The sorted sets that bound an address's dedup ids and idempotency keys."""
    return f"{base}:io", f"{base}:ko"
