"""The HTTP fallback in real headless Chromium with ``window.WebSocket`` removed, through a real
HAProxy (round robin, no sticky sessions) in front of two real ``wsq serve`` processes on one
Redis: the JS client falls back by itself and passes its round-trip, resume and move-mode
scenarios (http_fallback.mjs); POSTs that HAProxy sent to the node not holding their stream
reached it through the broker."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
from wsq_harness import SECRET_ACME, HAProxy, RedisServer, serve_config

from wsq.auth import mint_token
from wsq.config import load_settings

HERE = Path(__file__).parent


def _config(path: Path, redis_url: str, node_id: str) -> Path:
    path.write_text(
        f'[server]\nnode_id = "{node_id}"\n'
        f'[broker]\nurl = "{redis_url}"\n'
        f'[tenants.acme]\nissuer = "acme"\n'
        f'keys = [{{ alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
    )
    return path


def _posts(base: str, outcome: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    found = re.search(rf'^wsq_stream_posts_total\{{outcome="{outcome}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_chromium_without_websocket_through_haproxy(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis") as redis:
        one = _config(tmp_path / "one.toml", redis.url, "gw-one")
        two = _config(tmp_path / "two.toml", redis.url, "gw-two")
        tenant = load_settings(config_path=str(one)).tenants["acme"]
        token = mint_token(
            tenant, "browser", publish=("browser.>",), subscribe=("browser.>",), ttl_s=600
        )
        with serve_config(one) as g1, serve_config(two) as g2:
            # Checked once a second: a slow /readyz while Chromium starts must not take both out.
            servers = {"one": g1.port, "two": g2.port}
            with HAProxy(tmp_path, servers, check_inter_ms=1000) as proxy:
                proc = await asyncio.create_subprocess_exec(
                    "node",
                    str(HERE / "http_fallback.mjs"),
                    proxy.http,
                    token,
                    cwd=HERE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                out, _ = await asyncio.wait_for(proc.communicate(), 120)
                assert proc.returncode == 0, out.decode()
                assert b"round trip, resume, move mode over HTTP" in out, out.decode()
                # No sticky sessions: some POSTs went to the node without their stream.
                relayed = _posts(g1.url, "relayed") + _posts(g2.url, "relayed")
                assert relayed > 0
                assert _posts(g1.url, "taken") + _posts(g2.url, "taken") > 0
