"""What one gateway process shares between its WebSocket endpoint and its HTTP bridge."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from wsq.auth import Authenticator
from wsq.broker.base import Broker
from wsq.config import Settings
from wsq.hub import Hub
from wsq.hub.occupancy import Occupancy
from wsq.hub.presence import PresenceHub
from wsq.publishing import PublishService
from wsq.quotas import Quotas
from wsq.webhooks.delivery import Webhooks
from wsq.webhooks.requests import Requests
from wsq.webhooks.sinks import Sinks


@dataclass
class Node:
    """The settings, token verification, storage, fan-out, publishing and tenant quotas of
    this process."""

    settings: Settings
    auth: Authenticator
    broker: Broker
    hub: Hub
    node_id: str
    publishing: PublishService = field(init=False)
    quotas: Quotas = field(init=False)
    presence: PresenceHub = field(init=False)
    #: Which addresses have receivers, over every node (address.occupied / vacated).
    occupancy: Occupancy = field(init=False)
    #: The tenants' webhooks (lifecycle events); emit never waits.
    webhooks: Webhooks = field(init=False)
    #: The tenants' message sinks (started and closed by the app's lifespan).
    sinks: Sinks = field(init=False)
    #: The HTTP client and per-tenant request bounds of both (closed by the app's lifespan).
    webhook_requests: Requests = field(init=False)
    #: Errors answered to clients (sockets and the HTTP bridge) by condition (wsq.stats).
    errors: Counter[str] = field(default_factory=Counter)
    #: POSTs to HTTP streams by outcome (wsq.stream: taken, relayed, replayed, unknown,
    #: refused).
    stream_posts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.quotas = Quotas(self.settings.tenants, self.broker)
        self.webhook_requests = Requests(self.settings.tenants)
        self.webhooks = Webhooks(self.settings.tenants, self.node_id, self.webhook_requests)
        hooks = self.webhooks
        store = self.broker.presence_store
        self.presence = PresenceHub(store, hooks.presence_changed)
        self.occupancy = Occupancy(store, hooks.address_changed, hooks.wants_occupancy)
        self.broker.on_dead_letter = hooks.dead_lettered
        self.publishing = PublishService(self.broker, self.settings.tenants, self.quotas)
        self.sinks = Sinks(self.settings.tenants, self.broker, self.node_id, self.webhook_requests)

    @classmethod
    def build(cls, settings: Settings, broker: Broker, node_id: str) -> Node:
        return cls(
            settings=settings,
            auth=Authenticator(settings.tenants),
            broker=broker,
            hub=Hub(broker, settings.storage_policies()),
            node_id=node_id,
        )
