"""The Starlette application: routes, static pages, and the lifespan that owns the broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wsq import bridge, js_client
from wsq.admission import STATE_KEY, Admission, parse_networks
from wsq.auth import mint_token
from wsq.broker.base import Broker
from wsq.config import Settings, load_settings, settings_from_json
from wsq.config.settings import ENV_SETTINGS_FILE
from wsq.core.errors import ConfigError
from wsq.endpoint import WebSocketEndpoint
from wsq.gateway import Gateway
from wsq.metrics import CONTENT_TYPE, Metrics, allowed
from wsq.node import Node
from wsq.origins import is_local_host, is_local_origin
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


def _drain_before_exit_signals(gateway: Gateway, readiness: Readiness) -> Callable[[], None]:
    """On SIGTERM / SIGINT, tell every client ``wsq:going-away`` before the server shuts down.

    uvicorn's own shutdown closes WebSockets (code 1012) before the app hears of it, so the app
    puts a loop-level handler in front of uvicorn's: drain first, then hand the signal on. Only
    where uvicorn installed a handler (the main thread of a serving process). Answers a
    function that puts things back.
    """
    loop = asyncio.get_running_loop()
    installed: list[tuple[int, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def on_signal(sig: int = sig, previous: Any = previous) -> None:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)  # a second signal goes straight to uvicorn
            readiness.set_draining(True)  # /readyz: take this node out of the load balancer
            task = loop.create_task(gateway.drain())
            task.add_done_callback(lambda _task: previous(sig, None))

        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append((sig, previous))

    def restore() -> None:
        for sig, previous in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous)

    return restore


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
        restore = _drain_before_exit_signals(gateway, readiness)
        figures.start()
        try:
            # The lifespan state is where wsq.http_protocol finds the admission.
            yield {STATE_KEY: admission}
        finally:
            restore()
            readiness.set_started(False)
            await metrics.stop()
            await figures.close()
            await gateway.drain()
            await node.hub.close()
            await broker.close()
            await node.auth.aclose()

    async def healthz(request: Request) -> Response:
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

    async def dev_token(request: Request) -> Response:
        """Development mode only: a token for the demo page, to clients on this machine (a dev
        gateway bound to 0.0.0.0 must not hand full rights to the network), asking by a local
        name from a local page or none: a page of another site that rebinds its own DNS name to
        127.0.0.1 reaches us with its own Host and Origin (DNS rebinding), and gets nothing."""
        client = request.client.host if request.client else ""
        refusal = None
        if client not in ("127.0.0.1", "::1", "localhost"):
            refusal = "loopback only"
        elif not is_local_host(request.headers.get("host")):
            refusal = "only for Host localhost, 127.0.0.1 or [::1]"
        elif not is_local_origin(request.headers.get("origin")):
            refusal = "only for pages of localhost, 127.0.0.1 or [::1]"
        if refusal is not None:
            return JSONResponse(
                {"error": {"condition": "wsq:forbidden", "description": refusal}},
                status_code=403,
            )
        tenant = settings.tenants["dev"]
        sub = request.query_params.get("sub", "demo")[:64] or "demo"
        token = mint_token(tenant, sub, publish=[">"], subscribe=[">"], ops=True, ttl_s=3600)
        return JSONResponse({"token": token, "tenant": "dev", "sub": sub})

    routes: list[Route | Mount] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *([Route("/metrics", metrics_page)] if metrics_allow else []),
        *js_client.routes(JS_CLIENT.parent),  # /wsq-client.js and /wsq-client/<module>.js
        # Before the static pages: every /v1 path answers in the bridge's JSON shape.
        Mount("/v1", routes=bridge.routes(), middleware=bridge.cors_middleware(gateway.origins)),
    ]
    if settings.dev_mode:
        routes.append(Route("/dev/token", dev_token))
    if STATIC_DIR.is_dir():
        routes.append(Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static"))
    # /ws is served in front of the router: see wsq.endpoint.WebSocketEndpoint.
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: bridge.http_exception},
        middleware=[Middleware(WebSocketEndpoint, gateway=gateway)],
    )
    app.state.node = node
    app.state.gateway = gateway
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
    return create_app(settings)
