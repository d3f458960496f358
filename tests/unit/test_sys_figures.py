"""``$sys.`` addresses, the ``ops`` right and its settings, and the figures' messages
(wsq.sys_stats), without sockets."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent
from typing import Any

import jwt
import pytest

from wsq.auth import mint_token
from wsq.auth.rights import Principal, Rights, parse_rights
from wsq.config import TenantConfig, load_settings
from wsq.config.settings import KeyConfig
from wsq.core.addresses import SYS_TENANT, is_sys_address, is_valid_address
from wsq.core.errors import ConfigError, Unauthorized
from wsq.core.policy import SYS_POLICY
from wsq.protocol.state import Link, Role
from wsq.sys_stats import MAX_SNAPSHOT_BYTES, SysStatsPublisher, may_receive, stats_subject

SECRET = "unit-secret-unit-secret-unit-secret-0001"


def tenant(ops: bool) -> TenantConfig:
    return TenantConfig(
        name="t", issuer="t", keys=(KeyConfig(alg="HS256", secret=SECRET),), ops=ops
    )


def link(role: Role = Role.RECEIVER, mode: str = "copy") -> Link:
    item = Link.__new__(Link)
    item.role = role
    item.mode = mode
    return item


def principal(ops: bool) -> Principal:
    return Principal("t", "alice", 0, Rights.of(subscribe=[">"], ops=ops))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$sys.stats", True),
        ("$sys.a.b-c_d", True),
        ("$sys.", False),
        ("$sys", False),
        ("$sys.*", False),
        ("$sys.>", False),
        ("$other.stats", False),
        ("sys.stats", False),
        ("$sys." + "a" * 255, True),
        ("$sys." + "a" * 256, False),
        (None, False),
    ],
)
def test_sys_addresses(value: object, expected: bool) -> None:
    assert is_sys_address(value) is expected
    assert not is_valid_address(value) or not expected  # never a tenant's address too


def test_only_a_copy_receiver_with_ops_of_an_ops_tenant_may_receive() -> None:
    tenants = {"t": tenant(ops=True)}
    assert may_receive(link(), principal(True), tenants)
    assert not may_receive(link(), principal(False), tenants)
    assert not may_receive(link(), principal(True), {"t": tenant(ops=False)})
    assert not may_receive(link(), principal(True), {})
    assert not may_receive(link(Role.SENDER), principal(True), tenants)
    assert not may_receive(link(mode="move"), principal(True), tenants)


def test_the_ops_claim_is_a_boolean() -> None:
    assert parse_rights({"ops": True}).ops is True
    assert parse_rights({}).ops is False
    assert parse_rights(None).ops is False
    for bad in ("true", 1, [], {}):
        with pytest.raises(Unauthorized, match=r'"wsq.ops" must be a boolean'):
            parse_rights({"ops": bad})


def test_a_minted_token_carries_ops_only_when_asked() -> None:
    with_ops = jwt.decode(mint_token(tenant(True), "a", ops=True), SECRET, algorithms=["HS256"])
    without = jwt.decode(mint_token(tenant(True), "a"), SECRET, algorithms=["HS256"])
    assert with_ops["wsq"] == {"publish": [], "subscribe": [], "ops": True}
    assert without["wsq"] == {"publish": [], "subscribe": []}


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "wsq.toml"
    path.write_text(dedent(text))
    return load_settings(config_path=str(path), environ={})


TENANT = f"""
[tenants.t]
keys = [{{ alg = "HS256", secret = "{SECRET}" }}]
"""


def test_ops_and_stats_interval_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, TENANT)
    assert settings.tenants["t"].ops is False
    assert settings.server.stats_interval_ms == 1000
    settings = load(tmp_path, "[server]\nstats_interval_ms = 0\n" + TENANT + "ops = true\n")
    assert settings.tenants["t"].ops is True
    assert settings.server.stats_interval_ms == 0
    assert settings.storage_policies().of(SYS_TENANT) == SYS_POLICY
    assert load_settings(environ={}).tenants["dev"].ops is True  # development mode watches


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nstats_interval_ms = 50\n" + TENANT, "0 \\(off\\) or at least 100, got 50"),
        ("[server]\nstats_interval_ms = 60001\n" + TENANT, "stats_interval_ms"),
        ("[server]\nstats_interval_ms = -1\n" + TENANT, "stats_interval_ms"),
        (TENANT + 'ops = "yes"\n', "ops"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


@pytest.mark.parametrize(
    ("node", "subject"),
    [("wsq-1a2b", "wsq-1a2b"), ("host:8000/x", "host-8000-x"), ("..", "node"), ("", "node")],
)
def test_the_subject_is_always_an_address(node: str, subject: str) -> None:
    assert stats_subject(node) == subject
    assert is_valid_address(stats_subject(node))


def test_a_snapshot_is_one_json_message_bounded_in_bytes() -> None:
    figures: dict[str, Any] = {"connections": 3}
    publisher = SysStatsPublisher(None, "n1", lambda: figures)  # type: ignore[arg-type]
    message = publisher.message()
    body = json.loads(message.body)
    assert body["node"] == "n1" and body["connections"] == 3 and isinstance(body["time"], float)
    assert message.subject == "n1" and message.publisher == "n1"
    assert message.content_type == "application/json"
    figures["tenants"] = {f"t{i}": {"connections": i} for i in range(20_000)}
    message = publisher.message()
    assert len(message.body) < 200
    body = json.loads(message.body)
    assert body["truncated"] > MAX_SNAPSHOT_BYTES
    assert set(body) == {"node", "time", "truncated"}
