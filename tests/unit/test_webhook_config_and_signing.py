"""wsq.webhooks: Standard Webhooks signatures, checked by the reference library
(``standardwebhooks``), and the ``[tenants.X] webhooks`` configuration."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from wsq.cli import describe_settings
from wsq.config import load_settings, settings_from_json, settings_to_json
from wsq.core.errors import ConfigError
from wsq.webhooks.events import event_body
from wsq.webhooks.signing import key_of, secret_problem, sign, signature_headers

# The test vector of the Standard Webhooks specification (and of its libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()


def test_the_signature_is_the_specifications_test_vector() -> None:
    assert sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, key_of(SPEC_SECRET)) == SPEC_SIGNATURE


def test_the_reference_library_accepts_ours_and_refuses_a_tampered_body() -> None:
    now = int(time.time())
    body = event_body("connection.opened", {"tenant": "acme", "sub": "alice"}, now)
    headers = signature_headers("msg_1", now, body, [key_of(NEW)])
    assert Webhook(NEW).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(NEW).verify(body.replace(b"alice", b"mallory"), headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(OLD).verify(body, headers)


def test_an_old_timestamp_is_refused_by_the_reference_library() -> None:
    then = int(time.time()) - 10 * 60  # the libraries allow five minutes
    body = b'{"type":"connection.closed"}'
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(NEW).verify(body, signature_headers("msg_2", then, body, [key_of(NEW)]))


def test_during_a_rotation_either_secret_verifies() -> None:
    now = int(time.time())
    body = b'{"type":"connection.opened"}'
    headers = signature_headers("msg_3", now, body, [key_of(OLD), key_of(NEW)])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(OLD).verify(body, headers) == {"type": "connection.opened"}
    assert Webhook(NEW).verify(body, headers) == {"type": "connection.opened"}


def test_the_event_body_has_the_standard_shape() -> None:
    body = event_body("connection.closed", {"reason": "client"}, 1_700_000_000.5)
    assert json.loads(body) == {
        "type": "connection.closed",
        "timestamp": "2023-11-14T22:13:20.500Z",
        "data": {"reason": "client"},
    }
    assert datetime.fromtimestamp(1_700_000_000.5, UTC).year == 2023


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "a secret must start with 'whsec_' followed by base64",
        ),
        ("whsec_not*base64", "the part after 'whsec_' is not base64"),
        (
            "whsec_" + base64.b64encode(b"k" * 8).decode(),
            "a secret's key must have 24 to 64 bytes, got 8",
        ),
        (SPEC_SECRET, None),
        (SPEC_SECRET.rstrip("="), None),
    ],
)
def test_secret_problems(secret: str, problem: str | None) -> None:
    assert secret_problem(secret) == problem


def _config(tmp_path: Path, hooks: str, sinks: str = "") -> Path:
    path = tmp_path / "wsq.toml"
    path.write_text(
        "[tenants.acme]\n"
        'keys = [{ alg = "HS256", secret = "acme-secret-acme-secret-acme-secret-0123" }]\n'
        f"webhooks = [{hooks}]\n"
        f"sinks = [{sinks}]\n"
    )
    return path


SINK = '{ url = "https://hooks.example/orders", addresses = ["orders", "orders"], secret_env = "HOOK" }'


def test_a_sink_is_read_shown_without_its_secret_and_round_trips(tmp_path: Path) -> None:
    config = _config(tmp_path, GOOD, SINK)
    settings = load_settings(config_path=str(config), environ={"HOOK": NEW})
    (sink,) = settings.tenants["acme"].sinks
    assert (sink.url, sink.addresses, sink.group, sink.secret) == (
        "https://hooks.example/orders",
        ("orders",),
        "webhook-sink",
        NEW,
    )
    assert settings_from_json(settings_to_json(settings)) == settings
    text = "\n".join(describe_settings(settings, "wsq.toml"))
    assert (
        "  sink https://hooks.example/orders: addresses orders in group webhook-sink; 1 secret; "
        "timeout_ms 5000, max_attempts 5, backoff_ms 500, max_addresses 64"
    ) in text
    assert NEW[6:] not in text


def test_a_sink_with_patterns_is_read_with_its_bounds(tmp_path: Path) -> None:
    sinks = (
        '{ url = "https://x", addresses = ["orders.*", "audit", "logs.>"], max_addresses = 5, '
        'discover_ms = 250, secret_env = "HOOK" }'
    )
    settings = load_settings(config_path=str(_config(tmp_path, GOOD, sinks)), environ={"HOOK": NEW})
    (sink,) = settings.tenants["acme"].sinks
    assert (sink.patterns, sink.literal) == (("orders.*", "logs.>"), ("audit",))
    assert (sink.max_addresses, sink.discover_ms) == (5, 250)
    assert settings_from_json(settings_to_json(settings)) == settings
    text = "\n".join(describe_settings(settings, "wsq.toml"))
    assert "max_addresses 5, discover_ms 250" in text
    assert "  webhooks: max_webhook_queue 10000, max_webhook_requests 8 (per process)" in text


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        (
            '{ url = "https://x", addresses = ["orders.>.eu"], secret_env = "HOOK" }',
            "tenants.acme.sinks[0].addresses: a string ('orders.>.eu') is not an address nor a",
        ),
        (
            '{ url = "https://x", addresses = [], secret_env = "HOOK" }',
            "tenants.acme.sinks[0]: 'addresses' must list 1 to 64 addresses",
        ),
        (
            '{ url = "https://x", addresses = ["a", "b"], max_addresses = 1, secret_env = "HOOK" }',
            "tenants.acme.sinks[0].max_addresses: is less than the addresses the sink lists",
        ),
        (
            '{ url = "https://x", addresses = ["a"], max_addresses = 1001, secret_env = "HOOK" }',
            "tenants.acme.sinks[0].max_addresses",
        ),
        (
            '{ url = "https://x", addresses = ["a"], discover_ms = 10, secret_env = "HOOK" }',
            "tenants.acme.sinks[0].discover_ms",
        ),
        (
            '{ url = "https://x", addresses = ["orders.*"], secret_env = "HOOK" }, '
            '{ url = "https://y", addresses = ["orders.eu"], secret_env = "HOOK" }',
            "tenants.acme.sinks[0].group: a sink with patterns needs a group no other sink uses",
        ),
        (
            f"{SINK}, {SINK}",
            "tenants.acme.sinks[1].group: another sink reads 'orders' in group 'webhook-sink'",
        ),
    ],
)
def test_bad_sinks_are_refused_by_name(tmp_path: Path, sinks: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=str(_config(tmp_path, GOOD, sinks)), environ={"HOOK": NEW})
    assert message in str(info.value)


GOOD = '{ url = "https://hooks.example/wsq", events = ["connection.opened"], secret_env = "HOOK" }'


def test_a_webhook_entry_is_read_with_its_defaults_and_round_trips(tmp_path: Path) -> None:
    settings = load_settings(
        config_path=str(_config(tmp_path, GOOD)), environ={"HOOK": f"{OLD} {NEW}"}
    )
    (hook,) = settings.tenants["acme"].webhooks
    assert (hook.url, hook.events, hook.secret) == (
        "https://hooks.example/wsq",
        ("connection.opened",),
        f"{OLD} {NEW}",
    )
    assert (hook.timeout_ms, hook.max_attempts, hook.backoff_ms, hook.max_queue) == (
        5000,
        5,
        500,
        1000,
    )
    assert settings_from_json(settings_to_json(settings)) == settings


def test_check_config_shows_a_webhook_and_never_its_secret(tmp_path: Path) -> None:
    settings = load_settings(
        config_path=str(_config(tmp_path, GOOD)), environ={"HOOK": f"{OLD} {NEW}"}
    )
    text = "\n".join(describe_settings(settings, "wsq.toml"))
    assert (
        "  webhook https://hooks.example/wsq: events connection.opened; 2 secrets; timeout_ms "
        "5000, max_attempts 5, backoff_ms 500, max_queue 1000"
    ) in text
    assert OLD[6:] not in text and NEW[6:] not in text


@pytest.mark.parametrize(
    ("hooks", "env", "message"),
    [
        (
            '{ url = "ftp://x", events = ["connection.opened"], secret_env = "HOOK" }',
            {"HOOK": NEW},
            "tenants.acme.webhooks[0].url: expected an http:// or https:// URL",
        ),
        (
            '{ url = "https://x", events = ["message.sent"], secret_env = "HOOK" }',
            {"HOOK": NEW},
            "tenants.acme.webhooks[0].events: unknown event a string ('message.sent'); known: "
            "connection.opened, connection.closed",
        ),
        (
            '{ url = "https://x", events = [], secret_env = "HOOK" }',
            {"HOOK": NEW},
            "tenants.acme.webhooks[0]: 'events' must list at least one of",
        ),
        (
            '{ url = "https://x", events = ["connection.opened"], secret_env = "HOOK" }',
            {},
            "tenants.acme.webhooks[0].secret_env: environment variable HOOK is not set or empty",
        ),
        (
            '{ url = "https://x", events = ["connection.opened"], secret_env = "HOOK" }',
            {"HOOK": f"{NEW} whsec_!!"},
            "tenants.acme.webhooks[0].secret_env: secret 2: the part after 'whsec_' is not base64",
        ),
        (
            '{ url = "https://x", events = ["connection.opened"] }',
            {},
            "tenants.acme.webhooks[0]: give exactly one of secret_env or secret",
        ),
        (
            '{ url = "https://x", events = ["connection.opened"], secret_env = "HOOK", retries = 3 }',
            {"HOOK": NEW},
            "tenants.acme.webhooks[0].retries: unknown key",
        ),
        (
            '{ url = "https://x", events = ["connection.opened"], secret_env = "HOOK", max_queue = 0 }',
            {"HOOK": NEW},
            "tenants.acme.webhooks[0].max_queue: must be between 1 and 100000, got 0",
        ),
    ],
)
def test_bad_webhook_entries_are_refused_by_name(
    tmp_path: Path, hooks: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=str(_config(tmp_path, hooks)), environ=env)
    assert message in str(info.value)
    assert NEW[6:] not in str(info.value)


def test_the_example_of_docs_webhooks_md_loads(tmp_path: Path) -> None:
    manual = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    example = manual.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "wsq.toml"
    path.write_text(example)
    env = {"ACME_SECRET": "acme-secret-acme-secret-acme-secret-0123", "ACME_WEBHOOK_SECRET": NEW}
    (hook,) = load_settings(config_path=str(path), environ=env).tenants["acme"].webhooks
    assert hook.events == ("connection.opened", "connection.closed")


def test_the_sink_example_of_docs_webhooks_md_loads(tmp_path: Path) -> None:
    manual = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    example = manual.split("## Message sinks", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "wsq.toml"
    path.write_text(example)
    env = {"ACME_SECRET": "acme-secret-acme-secret-acme-secret-0123", "ACME_WEBHOOK_SECRET": NEW}
    (sink,) = load_settings(config_path=str(path), environ=env).tenants["acme"].sinks
    assert sink.addresses == ("orders",)
