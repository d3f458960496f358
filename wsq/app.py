"""The Starlette application: routes, static pages, and the lifespan that owns the broker."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wsq import bridge, demo, js_client, stream
from wsq.admission import STATE_KEY, Admission, parse_networks
from wsq.broker.base import Broker
from wsq.config import Settings, load_settings, settings_from_json
from wsq.config.settings import ENV_SETTINGS_FILE
from wsq.core.errors import ConfigError
from wsq.drain import Drain, DrainGate, drain_on_signals
from wsq.endpoint import WebSocketEndpoint
from wsq.gateway import Gateway
from wsq.gc_tuning import tune_collector
from wsq.metrics import CONTENT_TYPE, Metrics, allowed
from wsq.node import Node
from wsq.readiness import Readiness
from wsq.stats import NodeStats
from wsq.sys_stats import SysStatsPublisher
from wsq.timed_broker import TimedBroker

log = logging.getLogger("wsq")


def _project_dir(name: str) -> Path:
    """``static/`` or ``js-client/``: beside the package in a checkout (editable install), else
    under the working directory (an installed wheel run from the project, as in the image), or
    where ``WSQ_<NAME>_DIR`` says."""
    override = os.environ.get(f"WSQ_{name.upper().replace('-', '_')}_DIR")
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parent.parent / name
    return beside if beside.is_dir() else Path.cwd() / name


STATIC_DIR = _project_dir("static")
JS_CLIENT = _project_dir("js-client") / "src" / "index.js"


def make_broker(settings: Settings) -> Broker:
    url = settings.broker.url
    if url.startswith("memory://"):
        from wsq.broker.memory import MemoryBroker

        return MemoryBroker(settings.storage_policies())
    if url.startswith(("redis://", "rediss://", "redis+cluster://")):
        from wsq.broker.redis import RedisBroker

        return RedisBroker(
            url, settings.storage_policies(), quota_lease_ms=settings.broker.quota_lease_ms
        )
    raise ConfigError(f"broker {url.split('://')[0]}:// is not available in this version")


def create_app(settings: Settings, broker: Broker | None = None) -> Starlette:
    node_id = settings.server.node_id or f"wsq-{secrets.token_hex(4)}"
    broker = broker if broker is not None else make_broker(settings)
    admission = Admission(settings.server)
    metrics = Metrics(settings.tenants)
    # What the node uses is the broker with its commands timed (wsq_broker_command_seconds).
    timed = TimedBroker(broker, metrics.observers())
    node = Node.build(settings, timed, node_id)
    gateway = Gateway(node)
    readiness = Readiness(timed, settings.server.ready_max_lag_ms)
    stats = NodeStats(gateway, admission, readiness)
    metrics.collect_from(stats)
    metrics_allow = parse_networks(settings.server.metrics_allow)
    # /readyz goes red the moment a drain begins: the load balancer stops sending new clients.
    drain = Drain(
        gateway, settings.server.drain_timeout_ms, on_draining=lambda: readiness.set_draining(True)
    )
    streams = stream.Streams(gateway, lambda: drain.draining)
    # Straight to the broker: wsq_broker_command_seconds times the tenants' commands only.
    figures = SysStatsPublisher(
        broker, node_id, stats.snapshot, settings.server.stats_interval_ms / 1000
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await broker.start()
        readiness.set_started(True)
        await readiness.probe()
        metrics.start()
        figures.start()
        node.sinks.start()
        if any(node.webhooks.wants_occupancy(t) for t in settings.tenants):
            node.occupancy.start()
        restore = drain_on_signals(drain)
        try:
            # The lifespan state is where wsq.http_protocol finds the admission.
            yield {STATE_KEY: admission}
        finally:
            restore()
            readiness.set_started(False)
            await metrics.stop()
            await figures.close()
            # Not by a signal (an embedding program, tests): the same drain, no backstop.
            await drain.begin(backstop=False)
            await node.hub.close()
            await node.occupancy.close()
            await node.presence.close()
            await node.webhooks.close()
            await node.sinks.close()
            await node.webhook_requests.close()
            await broker.close()
            await node.auth.aclose()

    async def healthz(request: Request) -> Response:
        if drain.draining:  # alive (no restart), on its way out
            return JSONResponse({"status": "draining", "node": node_id})
        if not readiness.started:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "node": node_id})

    async def readyz(request: Request) -> Response:
        reasons = await readiness.check()
        return JSONResponse(
            {"status": "not-ready" if reasons else "ready", "node": node_id, "reasons": reasons},
            status_code=503 if reasons else 200,
        )

    async def metrics_page(request: Request) -> Response:
        # Outside metrics_allow the page does not exist, as it does not with metrics_allow [].
        if not allowed(request.client.host if request.client else None, metrics_allow):
            return PlainTextResponse("Not Found", status_code=404)
        await readiness.probe()  # broker status and wsq_ready as of this scrape
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    routes: list[Route | Mount] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *([Route("/metrics", metrics_page)] if metrics_allow else []),
        *js_client.routes(JS_CLIENT.parent),  # /wsq-client.js and /wsq-client/<module>.js
        # Before the static pages: every /v1 path answers in the bridge's JSON shape.
        # wsq.v1 over HTTP (wsq.stream) beside the bridge: the same CORS, the same error shape.
        Mount(
            "/v1",
            routes=[*stream.routes(streams), *bridge.routes()],
            middleware=bridge.cors_middleware(gateway.origins),
        ),
    ]
    routes += demo.routes(settings)  # /demo/config, and /dev/token in development mode
    if STATIC_DIR.is_dir():
        # The operator view at exactly /ops (StaticFiles maps no path to a name with .html).
        ops_page = STATIC_DIR / "ops.html"
        routes.append(Route("/ops", lambda request: FileResponse(ops_page)))
        routes.append(Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static"))
    # /ws is served in front of the router: see wsq.endpoint.WebSocketEndpoint.
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: bridge.http_exception},
        middleware=[
            Middleware(DrainGate, drain=drain),  # while draining, upgrades are refused 503
            Middleware(WebSocketEndpoint, gateway=gateway),
        ],
    )
    app.state.node = node
    app.state.gateway = gateway
    # wsq.drain: SIGTERM's graceful drain; is_draining for readiness.
    app.state.drain = drain
    app.state.is_draining = lambda: drain.draining
    # The bounds before authentication, with what they refused (wsq.admission).
    app.state.admission = admission
    # The node's figures at once (wsq.stats), and what drains the node calls first.
    app.state.snapshot = stats.snapshot
    app.state.readiness = readiness
    app.state.set_draining = readiness.set_draining
    app.state.metrics = metrics
    app.state.figures = figures
    return app


def _log_like_uvicorn() -> None:
    """wsq's loggers at the level ``wsq serve --log-level`` gave uvicorn's, through its handlers
    (one format on the terminal); a logging setup of the embedding program's own is kept."""
    wsq_log = logging.getLogger("wsq")
    handlers = logging.getLogger("uvicorn").handlers
    if wsq_log.handlers or not handlers:
        return
    wsq_log.setLevel(logging.getLogger("uvicorn.error").getEffectiveLevel())
    for handler in handlers:
        wsq_log.addHandler(handler)
    wsq_log.propagate = False


#: The settings ``wsq serve`` resolved, when uvicorn runs the app in its own process (one
#: worker): handed over in memory, never through the environment.
_handed_over: Settings | None = None


def hand_over(settings: Settings | None) -> None:
    """Give ``app_factory`` in this process its settings (``wsq serve``, one worker)."""
    global _handed_over
    _handed_over = settings


def handed_over() -> Settings | None:
    return _handed_over


def app_factory() -> Starlette:
    """Entry point for uvicorn (``wsq.app:app_factory``), in every worker process: the settings
    handed over in memory (one worker), else those of the file ``WSQ_SETTINGS_FILE`` names
    (``wsq serve --workers N``), else loaded here."""
    _log_like_uvicorn()
    settings = _handed_over
    if settings is None:
        path = os.environ.get(ENV_SETTINGS_FILE)
        if path:
            with open(path, encoding="utf-8") as f:
                settings = settings_from_json(f.read())
        else:
            settings = load_settings()
    app = create_app(settings)
    # The serving process's collector, tuned for many sockets (wsq.gc_tuning); only here: an
    # application that embeds wsq through create_app keeps its own.
    tune_collector()
    return app
