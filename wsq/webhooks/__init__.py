"""Webhooks per tenant: lifecycle events POSTed to the tenant's URLs, signed by Standard
Webhooks 1.0 (docs/webhooks.md).

``signing`` makes the headers; ``events`` names what is sent and shapes its body;
``delivery`` queues, sends and retries (``Webhooks``, whose ``emit`` the gateway calls and
which never waits). The configuration reads ``events`` and ``signing``, so this package's
``__init__`` imports nothing.
"""
