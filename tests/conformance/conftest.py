"""The ``broker`` fixture of the conformance suite: one run per broker implementation.

Every test of this directory runs once per entry of ``BROKER_FACTORIES``. A factory takes the
``Settings`` (the ``broker_settings`` fixture, which a test module overrides with the tenants it
needs) and gives an async context manager yielding a started broker, closed on exit.

The "redis" entry uses a real ``redis-server`` started once per session on a free port, in a
temporary directory, without persistence (never the machine's own Redis). When the binary is
missing the Redis runs are skipped, except in CI (``CI=true``) where that is a failure. Tests use
fresh addresses (the ``address`` fixture), so the shared server needs no cleanup between tests.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from wsq.broker.base import Broker
from wsq.broker.memory import MemoryBroker
from wsq.broker.redis import RedisBroker
from wsq.config import BrokerConfig, Settings

BrokerFactory = Callable[[Settings], AbstractAsyncContextManager[Broker]]


@asynccontextmanager
async def memory_broker(settings: Settings) -> AsyncIterator[Broker]:
    broker = MemoryBroker(settings)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_redis_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway ``redis-server`` on a free port; answers (process, redis:// URL)."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (required in CI)")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [
            *(exe, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
            *("--dir", str(workdir), "--logfile", str(workdir / "redis.log")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"redis-server did not start on port {port}")
        time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


#: The URL of this session's test Redis (set by the ``redis_server`` fixture).
REDIS_URL: list[str] = []


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    REDIS_URL[:] = [url]
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@asynccontextmanager
async def redis_broker(settings: Settings) -> AsyncIterator[Broker]:
    [url] = REDIS_URL
    broker = RedisBroker(dataclasses.replace(settings, broker=BrokerConfig(url=url)))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


#: One entry per broker implementation.
BROKER_FACTORIES: dict[str, BrokerFactory] = {
    "memory": memory_broker,
    "redis": redis_broker,
}


@pytest.fixture(params=sorted(BROKER_FACTORIES))
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "redis":
        request.getfixturevalue("redis_server")
    return kind


@pytest.fixture
def broker_settings() -> Settings:
    """The settings brokers are built with; test modules override it with their tenants."""
    return Settings()


@pytest.fixture
async def make_broker(broker_kind: str) -> AsyncIterator[Callable[[Settings], Awaitable[Broker]]]:
    """Build brokers of the kind under test (another process's view, other settings, ...)."""
    async with AsyncExitStack() as stack:

        async def make(settings: Settings) -> Broker:
            return await stack.enter_async_context(BROKER_FACTORIES[broker_kind](settings))

        yield make


@pytest.fixture
async def broker(
    make_broker: Callable[[Settings], Awaitable[Broker]], broker_settings: Settings
) -> Broker:
    return await make_broker(broker_settings)


@pytest.fixture
def address() -> str:
    """An address no other test uses."""
    return f"conf.{uuid.uuid4().hex[:16]}"
