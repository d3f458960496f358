"""AMQP 1.0 over WebSocket with rhea, the standard protocol's client for Node and browsers,
against a real ``wsq serve`` (amqp_rhea.test.mjs under ``node --test``): feeds, queues,
interop with wsq.v1 and the HTTP bridge on the same address, refused tokens and rights."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from wsq_harness import SECRET_ACME, serve_config

from wsq.auth import mint_token
from wsq.config import KeyConfig, TenantConfig

HERE = Path(__file__).parent
ACME = TenantConfig(name="acme", issuer="acme", keys=(KeyConfig(alg="HS256", secret=SECRET_ACME),))


def node() -> str:
    found = shutil.which("node")
    if found is None or not (HERE / "node_modules" / "rhea").is_dir():
        why = "node is not installed" if found is None else "tests/e2e: npm ci has not run"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} (required in CI)")
        pytest.skip(why)
    return found


def config(path: Path) -> Path:
    path.write_text(
        '[server]\nnode_id = "amqp-1"\n'
        '[tenants.acme]\nissuer = "acme"\ndedup_window_ms = 60000\nredelivery_delay_ms = 100\n'
        f'keys = [{{ alg = "HS256", secret = "{SECRET_ACME}" }}]\n'
    )
    return path


def run_node_tests(script: str, served_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "WSQ_HTTP": served_url,
        "WSQ_TOKEN": mint_token(ACME, "alice", publish=(">",), subscribe=(">",)),
        "WSQ_TOKEN_NEWS": mint_token(ACME, "bob", subscribe=("news.>",)),
        "WSQ_SECRET": SECRET_ACME,
    }
    done = subprocess.run(
        [node(), "--test", "--test-reporter=tap", script],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout


def test_rhea_over_amqp_websocket(tmp_path: Path) -> None:
    with serve_config(config(tmp_path / "wsq.toml")) as served:
        run_node_tests("amqp_rhea.test.mjs", served.url, tmp_path)


def test_rhea_browser_build_in_chromium(tmp_path: Path) -> None:
    if not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (required in CI)")
        pytest.skip("chromium is not installed")
    token = mint_token(ACME, "browser", publish=("browser.>",), subscribe=("browser.>",))
    with serve_config(config(tmp_path / "wsq.toml")) as served:
        done = subprocess.run(
            [node(), "amqp_browser.mjs", served.url, token],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rhea in Chromium over amqp: sent, received, consumed, refused" in done.stdout
