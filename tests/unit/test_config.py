"""wsq.config: TOML parsing, precedence, validation, dev mode, JSON round trip."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from wsq.config import (
    BrokerConfig,
    KeyConfig,
    ServerConfig,
    Settings,
    TenantConfig,
    load_settings,
    settings_from_json,
    settings_to_json,
)
from wsq.core.errors import ConfigError
from wsq.keys import ALGORITHMS

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret-0123456789"


def _pem(key: object) -> str:
    public = key.public_key()  # type: ignore[attr-defined]
    data: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data.decode()


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec256_pem() -> str:
    return _pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def ec384_pem() -> str:
    return _pem(ec.generate_private_key(ec.SECP384R1()))


@pytest.fixture(scope="module")
def ed25519_pem() -> str:
    return _pem(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def ed448_pem() -> str:
    return _pem(ed448.Ed448PrivateKey.generate())


def write(tmp_path: Path, text: str, name: str = "wsq.toml") -> str:
    path = tmp_path / name
    path.write_text(dedent(text))
    return str(path)


def load(tmp_path: Path, text: str, **env: str) -> Settings:
    return load_settings(config_path=write(tmp_path, text), environ=env)


ACME = f"""
[tenants.acme]
keys = [{{ kid = "k1", alg = "HS256", secret = "{SECRET}" }}]
"""


# -- dev mode ---------------------------------------------------------------------------------


def test_no_config_is_dev_mode() -> None:
    s = load_settings(environ={})
    assert s.dev_mode is True
    assert list(s.tenants) == ["dev"]
    tenant = s.tenants["dev"]
    assert tenant.issuer == "dev"
    (key,) = tenant.keys
    assert key.alg == "HS256"
    assert key.kid == "dev"
    assert key.secret is not None and len(key.secret) >= 40
    assert key.public_key is None and key.jwks_url is None
    assert s.server == ServerConfig()
    assert s.broker == BrokerConfig(url="memory://")


def test_dev_secret_is_random_per_load() -> None:
    a = load_settings(environ={}).tenants["dev"].keys[0].secret
    b = load_settings(environ={}).tenants["dev"].keys[0].secret
    assert a != b


def test_dev_secret_from_environment() -> None:
    s = load_settings(environ={"WSQ_DEV_SECRET": SECRET})
    assert s.tenants["dev"].keys[0].secret == SECRET
    # An empty variable counts as unset.
    assert load_settings(environ={"WSQ_DEV_SECRET": ""}).tenants["dev"].keys[0].secret


def test_file_without_tenants_is_dev_mode(tmp_path: Path) -> None:
    s = load(tmp_path, "[server]\nport = 9000\n")
    assert s.dev_mode and list(s.tenants) == ["dev"]
    assert s.server.port == 9000
    s = load(tmp_path, "[tenants]\n")
    assert s.dev_mode


def test_configured_tenants_are_not_dev_mode(tmp_path: Path) -> None:
    s = load(tmp_path, ACME)
    assert s.dev_mode is False
    assert list(s.tenants) == ["acme"]


def test_default_environ_is_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WSQ_CONFIG", write(tmp_path, ACME))
    monkeypatch.setenv("WSQ_BROKER", "redis://localhost:6379/1")
    s = load_settings()
    assert list(s.tenants) == ["acme"]
    assert s.broker.url == "redis://localhost:6379/1"


# -- every field ------------------------------------------------------------------------------


def test_every_field(
    tmp_path: Path,
    rsa_pem: str,
    ec256_pem: str,
    ec384_pem: str,
    ed25519_pem: str,
    ed448_pem: str,
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ec.pem").write_text(ec256_pem)
    text = f"""
    [server]
    host = "0.0.0.0"
    port = 9001
    workers = 4
    idle_ms = 15000
    max_sessions = 10
    max_links_per_session = 20
    sender_credit = 64
    max_frame_bytes = 65536
    outbox_max_bytes = 131072
    open_timeout_ms = 5000
    node_id = "node-1"
    handshake_timeout_ms = 3000
    max_connections = 5000
    max_pending = 500
    max_pending_per_ip = 50
    trusted_proxies = ["10.0.0.0/8", " 192.0.2.1", "fd00::/8"]

    [broker]
    url = "redis://127.0.0.1:6379/0"
    quota_lease_ms = 10000

    [tenants.acme]
    issuer = "https://auth.acme.example"
    retention_max_len = 500
    retention_max_age_ms = 60000
    retention_max_bytes = 1048576
    dedup_window_ms = 0
    idle_expiry_ms = 3600000
    dead_letter = "dlq.acme"
    redelivery_delay_ms = 250
    max_deliveries = 5
    publish_rate = 12.5
    max_connections = 50
    max_links = 400
    max_addresses = 300
    max_groups = 4
    max_dedup_ids = 2000
    max_idempotency_keys = 100
    keys = [
      {{ kid = "h1", alg = "HS512", secret = "{SECRET}" }},
      {{ kid = "h2", alg = "HS384", secret_env = "ACME_SECRET" }},
      {{ kid = "r1", alg = "RS384", public_key = \"\"\"{rsa_pem}\"\"\" }},
      {{ kid = "e1", alg = "ES256", public_key_file = "keys/ec.pem" }},
      {{ kid = "e2", alg = "ES384", public_key = \"\"\"{ec384_pem}\"\"\" }},
      {{ kid = "d1", alg = "EdDSA", public_key = \"\"\"{ed25519_pem}\"\"\" }},
      {{ kid = "d2", alg = "EdDSA", public_key = \"\"\"{ed448_pem}\"\"\" }},
      {{ alg = "RS256", jwks_url = "https://auth.acme.example/.well-known/jwks.json" }},
    ]

    [tenants."beta.team"]
    publish_rate = 3

    [[tenants."beta.team".keys]]
    alg = "HS256"
    secret = "{SECRET}"
    """
    s = load(tmp_path, text, ACME_SECRET="from-the-environment-" + SECRET)
    assert s.dev_mode is False
    assert s.server == ServerConfig(
        host="0.0.0.0",
        port=9001,
        workers=4,
        idle_ms=15000,
        max_sessions=10,
        max_links_per_session=20,
        sender_credit=64,
        max_frame_bytes=65536,
        outbox_max_bytes=131072,
        open_timeout_ms=5000,
        node_id="node-1",
        handshake_timeout_ms=3000,
        max_connections=5000,
        max_pending=500,
        max_pending_per_ip=50,
        trusted_proxies=("10.0.0.0/8", "192.0.2.1", "fd00::/8"),
    )
    assert s.broker == BrokerConfig(url="redis://127.0.0.1:6379/0", quota_lease_ms=10000)
    assert list(s.tenants) == ["acme", "beta.team"]
    acme = s.tenants["acme"]
    assert acme == TenantConfig(
        name="acme",
        issuer="https://auth.acme.example",
        keys=(
            KeyConfig(alg="HS512", kid="h1", secret=SECRET),
            KeyConfig(alg="HS384", kid="h2", secret="from-the-environment-" + SECRET),
            KeyConfig(alg="RS384", kid="r1", public_key=rsa_pem),
            KeyConfig(alg="ES256", kid="e1", public_key=ec256_pem),
            KeyConfig(alg="ES384", kid="e2", public_key=ec384_pem),
            KeyConfig(alg="EdDSA", kid="d1", public_key=ed25519_pem),
            KeyConfig(alg="EdDSA", kid="d2", public_key=ed448_pem),
            KeyConfig(alg="RS256", jwks_url="https://auth.acme.example/.well-known/jwks.json"),
        ),
        retention_max_len=500,
        retention_max_age_ms=60000,
        retention_max_bytes=1048576,
        dedup_window_ms=0,
        idle_expiry_ms=3600000,
        dead_letter="dlq.acme",
        redelivery_delay_ms=250,
        max_deliveries=5,
        publish_rate=12.5,
        max_connections=50,
        max_links=400,
        max_addresses=300,
        max_groups=4,
        max_dedup_ids=2000,
        max_idempotency_keys=100,
    )
    assert (acme.storage.max_groups, acme.storage.max_dedup_ids) == (4, 2000)
    assert acme.storage.max_idempotency_keys == 100
    beta = s.tenants["beta.team"]
    assert beta.issuer == "beta.team"
    assert beta.keys == (KeyConfig(alg="HS256", secret=SECRET),)
    assert beta.publish_rate == 3.0 and isinstance(beta.publish_rate, float)
    assert beta.retention_max_len == TenantConfig("x", "x", ()).retention_max_len
    assert (beta.max_connections, beta.max_links, beta.max_addresses) == (1000, 10_000, 10_000)


def test_pending_bounds_default_to_at_most_max_connections(tmp_path: Path) -> None:
    server = load(tmp_path, "[server]\nmax_connections = 100").server
    assert (server.max_pending, server.max_pending_per_ip) == (100, 100)
    server = load(tmp_path, "[server]\nmax_pending = 30").server
    assert (server.max_connections, server.max_pending_per_ip) == (10_000, 30)


def test_pending_bytes_default_to_64_mib_an_eighth_per_source_or_what_frames_need(
    tmp_path: Path,
) -> None:
    mib = 1024 * 1024
    server = load(tmp_path, "").server
    assert (server.max_pending_bytes, server.max_pending_bytes_per_ip) == (64 * mib, 8 * mib)
    # 16 MiB frames: a client's first message may need 2 x 16 MiB + 512 KiB; 8 of that in all.
    frames = f"[server]\nmax_frame_bytes = {16 * mib}\noutbox_max_bytes = {16 * mib}"
    server = load(tmp_path, frames).server
    least = 32 * mib + 512 * 1024
    assert (server.max_pending_bytes, server.max_pending_bytes_per_ip) == (8 * least, least)
    # An eighth of the total, and never below the least (2.5 MiB for 1 MiB frames).
    server = load(tmp_path, f"[server]\nmax_pending_bytes = {16 * mib}").server
    assert (server.max_pending_bytes, server.max_pending_bytes_per_ip) == (16 * mib, 5 * mib // 2)
    server = load(tmp_path, f"[server]\nmax_pending_bytes = {40 * mib}").server
    assert server.max_pending_bytes_per_ip == 5 * mib


def test_contract_example(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """
        [server]
        idle_ms = 30000
        max_sessions = 1024
        max_frame_bytes = 1048576

        [broker]
        url = "redis://127.0.0.1:6379/0"

        [tenants.acme]
        issuer = "acme"
        keys = [ { kid = "k1", alg = "HS256", secret = "change-me" } ]
        """,
    )
    assert s.tenants["acme"].keys == (KeyConfig(alg="HS256", kid="k1", secret="change-me"),)


def test_every_algorithm_is_accepted(
    tmp_path: Path, rsa_pem: str, ec256_pem: str, ec384_pem: str, ed25519_pem: str
) -> None:
    material = {
        "HS": f'secret = "{SECRET}"',
        "RS": f'public_key = """{rsa_pem}"""',
        "ES256": f'public_key = """{ec256_pem}"""',
        "ES384": f'public_key = """{ec384_pem}"""',
        "EdDSA": f'public_key = """{ed25519_pem}"""',
    }
    for alg in ALGORITHMS:
        src = material.get(alg) or material[alg[:2]]
        s = load(tmp_path, f'[tenants.t]\nkeys = [{{ alg = "{alg}", {src} }}]\n')
        assert s.tenants["t"].keys[0].alg == alg


def test_public_key_file_relative_to_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rsa_pem: str
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rsa.pub").write_text(rsa_pem)
    (tmp_path / "abs.pub").write_text(rsa_pem)
    monkeypatch.chdir(tmp_path)  # elsewhere than the file's directory
    path = write(
        conf,
        f"""
        [tenants.t]
        keys = [
          {{ kid = "a", alg = "RS256", public_key_file = "rsa.pub" }},
          {{ kid = "b", alg = "RS512", public_key_file = "{tmp_path / "abs.pub"}" }},
        ]
        """,
    )
    keys = load_settings(config_path=path, environ={}).tenants["t"].keys
    assert [k.public_key for k in keys] == [rsa_pem, rsa_pem]
    assert all(k.secret is None and k.jwks_url is None for k in keys)


def test_secret_env(tmp_path: Path) -> None:
    text = '[tenants.t]\nkeys = [{ alg = "HS256", secret_env = "T_SECRET" }]\n'
    assert load(tmp_path, text, T_SECRET=SECRET).tenants["t"].keys[0].secret == SECRET
    with pytest.raises(
        ConfigError, match=r"tenants\.t\.keys\[0\]\.secret_env: .*T_SECRET is not set"
    ):
        load(tmp_path, text)
    with pytest.raises(ConfigError, match="T_SECRET is not set or empty"):
        load(tmp_path, text, T_SECRET="")


# -- precedence -------------------------------------------------------------------------------


FILE = (
    """
[server]
host = "10.0.0.1"
port = 9000
workers = 2
idle_ms = 20000

[broker]
url = "redis://file:6379/0"
"""
    + ACME
)


def test_file_alone(tmp_path: Path) -> None:
    s = load(tmp_path, FILE)
    assert (s.server.host, s.server.port, s.server.workers) == ("10.0.0.1", 9000, 2)
    assert s.broker.url == "redis://file:6379/0"


def test_environment_beats_file(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        FILE,
        WSQ_BROKER="redis://env:6379/1",
        WSQ_HOST="10.0.0.2",
        WSQ_PORT="9100",
        WSQ_WORKERS="3",
    )
    assert (s.server.host, s.server.port, s.server.workers) == ("10.0.0.2", 9100, 3)
    assert s.broker.url == "redis://env:6379/1"
    assert s.server.idle_ms == 20000


def test_overrides_beat_environment(tmp_path: Path) -> None:
    s = load_settings(
        config_path=write(tmp_path, FILE),
        environ={"WSQ_BROKER": "redis://env:6379/1", "WSQ_PORT": "9100", "WSQ_WORKERS": "3"},
        overrides={
            "host": "10.0.0.3",
            "port": 9200,
            "broker": "redis+cluster://flag:7000",
            "workers": 4,
            "idle_ms": 5000,
        },
    )
    assert (s.server.host, s.server.port, s.server.workers) == ("10.0.0.3", 9200, 4)
    assert s.server.idle_ms == 5000
    assert s.broker.url == "redis+cluster://flag:7000"


def test_none_overrides_and_empty_environment_are_ignored(tmp_path: Path) -> None:
    s = load_settings(
        config_path=write(tmp_path, FILE),
        environ={"WSQ_BROKER": "", "WSQ_PORT": ""},
        overrides={"host": None, "port": None, "broker": None, "workers": None},
    )
    assert (s.server.host, s.server.port, s.server.workers) == ("10.0.0.1", 9000, 2)
    assert s.broker.url == "redis://file:6379/0"


def test_wsq_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    other = write(tmp_path, "[server]\nport = 1234\n" + ACME, "other.toml")
    assert load_settings(environ={"WSQ_CONFIG": path}).server.port == 9000
    # An explicit path beats WSQ_CONFIG.
    assert load_settings(config_path=other, environ={"WSQ_CONFIG": path}).server.port == 1234


def test_environment_without_file() -> None:
    s = load_settings(environ={"WSQ_BROKER": "rediss://user:pw@host:6380/2", "WSQ_PORT": "80"})
    assert s.broker.url == "rediss://user:pw@host:6380/2"
    assert s.server.port == 80
    assert s.dev_mode


# -- validation -------------------------------------------------------------------------------


KEY = f'keys = [{{ alg = "HS256", secret = "{SECRET}" }}]'

INVALID: list[tuple[str, str]] = [
    # the file itself
    ("[server\nport = 1", r"invalid TOML"),
    ("color = 1", r"wsq\.toml: color: unknown key"),
    ("server = 1", r"wsq\.toml: server: expected a table, got an integer"),
    ("tenants = []", r"tenants: expected a table, got an array"),
    # server
    ("[server]\nprot = 1", r"server\.prot: unknown key; did you mean 'port'\?"),
    ('[server]\nport = "80"', r"server\.port: expected an integer, got a string \('80'\)"),
    ("[server]\nport = 0", r"server\.port: must be between 1 and 65535, got 0"),
    ("[server]\nport = 65536", r"server\.port: must be between 1 and 65535"),
    ("[server]\nport = 80.0", r"server\.port: expected an integer, got a float"),
    ("[server]\nport = true", r"server\.port: expected an integer, got a boolean"),
    ("[server]\nworkers = 0", r"server\.workers: must be between 1 and"),
    ('[server]\nhost = ""', r"server\.host: must not be empty"),
    ("[server]\nhost = 1", r"server\.host: expected a string"),
    ("[server]\nidle_ms = 999", r"server\.idle_ms: must be at least 1000, got 999"),
    ("[server]\nmax_sessions = 0", r"server\.max_sessions: must be at least 1"),
    ("[server]\nmax_links_per_session = -1", r"server\.max_links_per_session: must be at least 1"),
    ("[server]\nsender_credit = 0", r"server\.sender_credit: must be between 1 and 65536, got 0"),
    (
        "[server]\nsender_credit = 65537",
        r"server\.sender_credit: must be between 1 and 65536, got 65537",
    ),
    (
        "[server]\nmax_frame_bytes = 1023",
        r"server\.max_frame_bytes: must be between 1024 and 67108864",
    ),
    ("[server]\nmax_frame_bytes = 67108865", r"server\.max_frame_bytes: must be between 1024"),
    ("[server]\noutbox_max_bytes = 0", r"server\.outbox_max_bytes: must be at least 1"),
    (
        "[server]\nmax_frame_bytes = 2048\noutbox_max_bytes = 2047",
        r"server\.outbox_max_bytes: must be at least max_frame_bytes \(2048\)",
    ),
    ("[server]\nopen_timeout_ms = 10", r"server\.open_timeout_ms: must be at least 100"),
    ('[server]\nnode_id = "a b"', r"server\.node_id: must be 1 to 64 characters"),
    ('[server]\nnode_id = "%s"' % ("n" * 65), r"server\.node_id"),
    ("[server]\nworkers = 2", r"workers = 2 needs a shared broker: the memory:// broker"),
    ("[server]\nhandshake_timeout_ms = 99", r"server\.handshake_timeout_ms: must be between 100"),
    (
        "[server]\ndrain_timeout_ms = 499",
        r"server\.drain_timeout_ms: must be between 500 and 600000, got 499",
    ),
    (
        "[server]\ndrain_timeout_ms = 600001",
        r"server\.drain_timeout_ms: must be between 500 and 600000, got 600001",
    ),
    ('[server]\ndrain_timeout_ms = "8s"', r"server\.drain_timeout_ms: expected an integer"),
    ("[server]\nmax_connections = 0", r"server\.max_connections: must be at least 1"),
    (
        "[server]\nmax_connections = 10\nmax_pending = 11",
        r"server\.max_pending: must be at most max_connections \(10\), got 11",
    ),
    (
        "[server]\nmax_pending = 10\nmax_pending_per_ip = 11",
        r"server\.max_pending_per_ip: must be at most max_pending \(10\), got 11",
    ),
    (
        "[server]\nmax_pending_bytes = 2621439",
        r"server\.max_pending_bytes: must be at least 2 x max_frame_bytes \+ 512 KiB \(2621440 "
        r"with max_frame_bytes 1048576\): a client's largest first message must fit, got 2621439",
    ),
    (
        "[server]\nmax_frame_bytes = 4096\nmax_pending_bytes_per_ip = 532479",
        r"server\.max_pending_bytes_per_ip: must be at least 2 x max_frame_bytes \+ 512 KiB "
        r"\(532480 with max_frame_bytes 4096\)",
    ),
    (
        "[server]\nmax_pending_bytes = 4194304\nmax_pending_bytes_per_ip = 4194305",
        r"server\.max_pending_bytes_per_ip: must be at most max_pending_bytes \(4194304\), got "
        r"4194305",
    ),
    ('[server]\nmax_pending_bytes = "64M"', r"server\.max_pending_bytes: expected an integer"),
    ('[server]\ntrusted_proxies = "10.0.0.1"', r"server\.trusted_proxies: expected an array"),
    ("[server]\ntrusted_proxies = [1]", r"server\.trusted_proxies: \[0\]: expected a string"),
    (
        '[server]\ntrusted_proxies = ["10.0.0.1", "proxy.local"]',
        r"server\.trusted_proxies: \[1\]: 'proxy\.local' is not an IP address or a CIDR",
    ),
    (
        '[server]\nws_compression = "gzip"',
        r"server\.ws_compression: expected one of 'off', 'deflate', got 'gzip'",
    ),
    ("[server]\nws_compression = true", r"server\.ws_compression: expected a string, got a bool"),
    ('[server]\nws_compression = ""', r"server\.ws_compression: must not be empty"),
    # broker
    (
        '[broker]\nurl = "http://x"',
        r"broker\.url: unsupported broker URL 'http://x' \(scheme 'http://'\)",
    ),
    ('[broker]\nurl = "localhost:6379"', r"broker\.url: unsupported broker URL"),
    ('[broker]\nurl = "memory://x"', r"broker\.url: the memory broker takes no host"),
    ('[broker]\nurl = "redis://"', r"broker\.url: 'redis://' names no host"),
    ('[broker]\nurl = "redis://h:99999/0"', r"broker\.url: not a valid URL"),
    ('[broker]\nurl = "redis://h:6379/db"', r"broker\.url: .*database number"),
    ('[broker]\nurl = "redis+cluster://h:7000/3"', r"broker\.url: .*only database 0"),
    ("[broker]\nurl = 5", r"broker\.url: expected a string"),
    ('[broker]\nuri = "redis://h"', r"broker\.uri: unknown key; did you mean 'url'\?"),
    # tenants
    ("[tenants]\nacme = 1", r"tenants\.acme: expected a table, got an integer"),
    (f'[tenants."a b"]\n{KEY}', r"tenants\.'a b': a tenant name must be an address"),
    (f'[tenants."a..b"]\n{KEY}', r"a tenant name must be an address"),
    (f'[tenants."news.>"]\n{KEY}', r"a tenant name must be an address"),
    ("[tenants.acme]\n", r"tenants\.acme\.keys: a tenant needs at least one key"),
    ("[tenants.acme]\nkeys = []", r"tenants\.acme\.keys: a tenant needs at least one key"),
    ("[tenants.acme]\nkeys = {}", r"tenants\.acme\.keys: expected an array, got a table"),
    ("[tenants.acme]\nkeys = [1]", r"tenants\.acme\.keys\[0\]: expected a table, got an integer"),
    (f"[tenants.acme]\n{KEY}\nretention = 1", r"tenants\.acme\.retention: unknown key"),
    (f'[tenants.acme]\n{KEY}\nissuer = ""', r"tenants\.acme\.issuer: must not be empty"),
    (
        f"[tenants.acme]\n{KEY}\nretention_max_len = 0",
        r"tenants\.acme\.retention_max_len: must be at least 1",
    ),
    (
        f"[tenants.acme]\n{KEY}\nretention_max_age_ms = 0",
        r"retention_max_age_ms: must be at least 1",
    ),
    (
        f"[tenants.acme]\n{KEY}\nretention_max_bytes = 1023",
        r"tenants\.acme\.retention_max_bytes: must be at least 1024",
    ),
    (f"[tenants.acme]\n{KEY}\ndedup_window_ms = -1", r"dedup_window_ms: must be at least 0"),
    (f"[tenants.acme]\n{KEY}\nidle_expiry_ms = 10", r"idle_expiry_ms: must be at least 1000"),
    (
        f"[tenants.acme]\n{KEY}\nredelivery_delay_ms = -5",
        r"redelivery_delay_ms: must be at least 0",
    ),
    (
        f"[tenants.acme]\n{KEY}\nmax_deliveries = -1",
        r"max_deliveries: must be between 0 and 1000000",
    ),
    (
        f"[tenants.acme]\n{KEY}\nmax_deliveries = 1e3",
        r"max_deliveries: expected an integer",
    ),
    (
        f"[tenants.acme]\n{KEY}\npublish_rate = -1",
        r"publish_rate: must be a finite number of at least 0",
    ),
    (f"[tenants.acme]\n{KEY}\npublish_rate = inf", r"publish_rate: must be a finite number"),
    (f"[tenants.acme]\n{KEY}\npublish_rate = nan", r"publish_rate: must be a finite number"),
    (
        f'[tenants.acme]\n{KEY}\npublish_rate = "5"',
        r"publish_rate: expected a number, got a string",
    ),
    (
        f'[tenants.acme]\n{KEY}\ndead_letter = "dlq.*"',
        r"tenants\.acme\.dead_letter: 'dlq\.\*' is not an address",
    ),
    (f'[tenants.acme]\n{KEY}\ndead_letter = "a b"', r"dead_letter: 'a b' is not an address"),
    # quotas (docs/security.md, "Per-tenant quotas")
    (f"[tenants.acme]\n{KEY}\nmax_connections = 0", r"acme\.max_connections: must be at least 1"),
    (f"[tenants.acme]\n{KEY}\nmax_links = -1", r"tenants\.acme\.max_links: must be at least 1"),
    (f'[tenants.acme]\n{KEY}\nmax_addresses = "9"', r"max_addresses: expected an integer"),
    (f"[tenants.acme]\n{KEY}\nmax_groups = 0", r"tenants\.acme\.max_groups: must be at least 1"),
    (f"[tenants.acme]\n{KEY}\nmax_dedup_ids = 1.5", r"max_dedup_ids: expected an integer"),
    (f"[tenants.acme]\n{KEY}\nmax_idempotency_keys = 0", r"max_idempotency_keys: must be at"),
    (f"[tenants.acme]\n{KEY}\nmax_link = 5", r"max_link: unknown key; did you mean 'max_links'"),
    ("[broker]\nquota_lease_ms = 999", r"broker\.quota_lease_ms: must be between 1000 and"),
    ('[broker]\nquota_lease_ms = "5s"', r"broker\.quota_lease_ms: expected an integer"),
    (
        f'[tenants.a]\n{KEY}\n[tenants.b]\nissuer = "a"\n{KEY}',
        r"tenants\.b\.issuer: issuer 'a' is already the issuer of tenant 'a'",
    ),
    # keys
    ('[tenants.t]\nkeys = [{ secret = "x" }]', r"tenants\.t\.keys\[0\]: missing 'alg'"),
    (
        '[tenants.t]\nkeys = [{ alg = "HS999", secret = "x" }]',
        r"tenants\.t\.keys\[0\]\.alg: unknown algorithm 'HS999'; allowed: HS256, HS384",
    ),
    ('[tenants.t]\nkeys = [{ alg = "hs256", secret = "x" }]', r"did you mean 'HS256'\?"),
    ('[tenants.t]\nkeys = [{ alg = "none", secret = "x" }]', r"unknown algorithm 'none'"),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256" }]',
        r"tenants\.t\.keys\[0\]: no key material; HS256 needs secret or secret_env",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256" }]',
        r"no key material; RS256 needs public_key, public_key_file or jwks_url",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256", secret = "x", secret_env = "Y" }]',
        r"keys\[0\]: give exactly one of .*; found secret, secret_env",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", public_key = "x", jwks_url = "https://a/j" }]',
        r"found public_key, jwks_url",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256", jwks_url = "https://a/j" }]',
        r"keys\[0\]\.jwks_url: HS256 is an HMAC algorithm: it needs secret or secret_env",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256", public_key = "x" }]',
        r"keys\[0\]\.public_key: HS256 is an HMAC algorithm",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", secret = "x" }]',
        r"keys\[0\]\.secret: RS256 verifies with a public key",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "EdDSA", secret_env = "X" }]',
        r"EdDSA verifies with a public key",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256", secret = "" }]',
        r"keys\[0\]\.secret: must not be empty",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256", secret = 5 }]',
        r"keys\[0\]\.secret: expected a string",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256", secret = "-----BEGIN PUBLIC KEY-----" }]',
        r"secret: looks like a PEM key",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", public_key = "nope" }]',
        r"keys\[0\]\.public_key: is not a PEM public key",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", public_key = "-----BEGIN PRIVATE KEY-----" }]',
        r"public_key: holds a PRIVATE key",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", public_key = "-----BEGIN CERTIFICATE-----" }]',
        r"public_key: holds a certificate",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", jwks_url = "ftp://a/j" }]',
        r"jwks_url: expected an https:// URL",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", jwks_url = "https:///j" }]',
        r"jwks_url: expected an https:// URL",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", jwks_url = "https://a/j", x5c = 1 }]',
        r"keys\[0\]\.x5c: unknown key",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256", kid = "", secret = "x" }]',
        r"keys\[0\]\.kid: must not be empty",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "HS256", kid = 1, secret = "x" }]',
        r"keys\[0\]\.kid: expected a string",
    ),
    (
        '[tenants.t]\nkeys = [{ kid = "a", alg = "HS256", secret = "x" }, { kid = "a", alg = "HS384", secret = "y" }]',
        r"tenants\.t\.keys\[1\]\.kid: duplicate kid 'a' in tenant 't'",
    ),
    (
        '[tenants.t]\nkeys = [{ alg = "RS256", public_key_file = "missing.pem" }]',
        r"keys\[0\]\.public_key_file: cannot read '.*missing\.pem': No such file",
    ),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


def test_same_kid_in_two_tenants_is_fine(tmp_path: Path) -> None:
    key = f'keys = [{{ kid = "k", alg = "HS256", secret = "{SECRET}" }}]'
    s = load(tmp_path, f"[tenants.a]\n{key}\n[tenants.b]\n{key}\n")
    assert list(s.tenants) == ["a", "b"]


def test_key_type_must_match_algorithm(
    tmp_path: Path, rsa_pem: str, ec256_pem: str, ec384_pem: str, ed25519_pem: str
) -> None:
    cases = [
        ("RS256", ec256_pem, "RS256 needs an RSA public key, this is an EC key"),
        ("ES256", rsa_pem, "ES256 needs an EC public key, this is an RSA key"),
        ("ES256", ec384_pem, "ES256 needs a key on curve secp256r1, this one is on secp384r1"),
        ("ES384", ec256_pem, "ES384 needs a key on curve secp384r1"),
        ("EdDSA", rsa_pem, "EdDSA needs an Ed25519 or Ed448 public key, this is an RSA key"),
        ("RS512", ed25519_pem, "this is an Ed25519 key"),
    ]
    for alg, pem, message in cases:
        text = f'[tenants.t]\nkeys = [{{ alg = "{alg}", public_key = """{pem}""" }}]\n'
        with pytest.raises(ConfigError, match=message):
            load(tmp_path, text)


def test_short_rsa_key_is_refused(tmp_path: Path) -> None:
    pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ConfigError, match="the RSA key has 1024 bits; RS256 needs at least 2048"):
        load(tmp_path, f'[tenants.t]\nkeys = [{{ alg = "RS256", public_key = """{pem}""" }}]\n')


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml: configuration file not found"):
        load_settings(config_path="/nowhere.toml", environ={})
    with pytest.raises(ConfigError, match=r"nowhere\.toml: configuration file not found"):
        load_settings(environ={"WSQ_CONFIG": "/nowhere.toml"})


def test_directory_as_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(config_path=str(tmp_path), environ={})


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[server]\nhost = "\xff"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: "):
        load_settings(config_path=str(path), environ={})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WSQ_PORT": "eighty"}, r"WSQ_PORT: expected an integer, got 'eighty'"),
        ({"WSQ_PORT": "0"}, r"WSQ_PORT: must be between 1 and 65535, got 0"),
        ({"WSQ_WORKERS": "x"}, r"WSQ_WORKERS: expected an integer"),
        ({"WSQ_WORKERS": "0"}, r"WSQ_WORKERS: must be between 1"),
        ({"WSQ_BROKER": "kafka://x"}, r"WSQ_BROKER: unsupported broker URL 'kafka://x'"),
        ({"WSQ_WORKERS": "2"}, r"workers = 2 needs a shared broker"),
    ],
)
def test_invalid_environment(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70000}, r"port \(from the command line\): must be between 1 and 65535"),
        ({"port": "80"}, r"port \(from the command line\): expected an integer"),
        ({"workers": 0}, r"workers \(from the command line\): must be between 1"),
        ({"broker": "nats://x"}, r"broker \(from the command line\): unsupported broker URL"),
        ({"idle_ms": 1}, r"idle_ms \(from the command line\): must be at least 1000"),
        ({"colour": "red"}, r"colour \(from the command line\): unknown setting"),
        ({"workers": 2}, r"workers = 2 needs a shared broker: the memory:// broker"),
    ],
)
def test_invalid_overrides(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, overrides=overrides)


def test_workers_with_redis_is_fine() -> None:
    s = load_settings(environ={}, overrides={"workers": 8, "broker": "redis://h:6379"})
    assert s.server.workers == 8


def test_broker_urls_accepted() -> None:
    for url in (
        "memory://",
        "redis://localhost",
        "redis://localhost:6379",
        "redis://:pw@localhost:6379/15",
        "rediss://user:pw@redis.example:6380/0",
        "redis+cluster://10.0.0.1:7000",
        "redis+cluster://10.0.0.1:7000/",
        "redis://[::1]:6379/0",
    ):
        assert load_settings(environ={"WSQ_BROKER": url}).broker.url == url


# -- JSON round trip --------------------------------------------------------------------------


def test_json_round_trip_full(tmp_path: Path, rsa_pem: str, ed25519_pem: str) -> None:
    text = f"""
    [server]
    host = "::"
    port = 8443
    workers = 3
    node_id = "n1"

    [broker]
    url = "rediss://:p%40ss@redis:6380/2"

    [tenants.acme]
    issuer = "iss-acme"
    dead_letter = "dead.letters"
    publish_rate = 0.5
    dedup_window_ms = 0
    keys = [
      {{ kid = "h", alg = "HS256", secret_env = "S" }},
      {{ kid = "r", alg = "RS256", public_key = \"\"\"{rsa_pem}\"\"\" }},
      {{ alg = "ES256", jwks_url = "https://idp/jwks" }},
    ]

    [tenants.b]
    keys = [{{ alg = "EdDSA", public_key = \"\"\"{ed25519_pem}\"\"\" }}]
    """
    s = load(tmp_path, text, S=SECRET + "ünïcødé")
    text_json = settings_to_json(s)
    back = settings_from_json(text_json)
    assert back == s
    assert list(back.tenants) == list(s.tenants)
    assert settings_to_json(back) == text_json


def test_json_round_trip_dev_mode() -> None:
    s = load_settings(environ={})
    back = settings_from_json(settings_to_json(s))
    assert back == s
    assert back.dev_mode is True
    assert back.tenants["dev"].keys[0].secret == s.tenants["dev"].keys[0].secret


def test_json_round_trip_does_not_read_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load(tmp_path, '[tenants.t]\nkeys = [{ alg = "HS256", secret_env = "S" }]\n', S=SECRET)
    text = settings_to_json(s)
    assert "secret_env" not in text
    monkeypatch.setenv("WSQ_DEV_SECRET", "other")
    monkeypatch.setenv("WSQ_PORT", "1")
    assert settings_from_json(text) == s


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", r"resolved settings: invalid JSON"),
        ("[]", r"resolved settings: expected a JSON object, got an array"),
        ("{}", r"resolved settings: format: expected 'wsq.settings/1', got None"),
        ('{"format": "wsq.settings/1"}', r"resolved settings: tenants: no tenant"),
        (
            '{"format": "wsq.settings/1", "server": {"port": -1}}',
            r"resolved settings: server\.port: must be between",
        ),
        ('{"format": "wsq.settings/1", "extra": 1}', r"resolved settings: extra: unknown key"),
        ('{"format": "wsq.settings/1", "dev_mode": 1}', r"dev_mode: expected true or false"),
    ],
)
def test_json_invalid(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_json(text)


# -- ws_compression ---------------------------------------------------------------------------


def test_ws_compression(tmp_path: Path) -> None:
    assert load(tmp_path, ACME).server.ws_compression == ServerConfig().ws_compression
    for value in ("off", "deflate"):
        s = load(tmp_path, f'[server]\nws_compression = "{value}"\n' + ACME)
        assert s.server.ws_compression == value
        assert settings_from_json(settings_to_json(s)).server.ws_compression == value


# -- drain_timeout_ms -------------------------------------------------------------------------


def test_drain_timeout_ms(tmp_path: Path) -> None:
    assert load(tmp_path, ACME).server.drain_timeout_ms == 8000
    for value in (500, 30_000, 600_000):
        s = load(tmp_path, f"[server]\ndrain_timeout_ms = {value}\n" + ACME)
        assert s.server.drain_timeout_ms == value
        assert settings_from_json(settings_to_json(s)).server.drain_timeout_ms == value


# -- allowed_origins --------------------------------------------------------------------------


def test_allowed_origins_unset_is_same_host(tmp_path: Path) -> None:
    assert load(tmp_path, ACME).server.allowed_origins is None


def test_allowed_origins_are_normalized(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        '[server]\nallowed_origins = ["https://App.Example.com:443", "http://[::1]:8000", '
        '"https://app.example.com", "chrome-extension://abcdef"]\n' + ACME,
    )
    assert s.server.allowed_origins == (
        "https://app.example.com",
        "http://[::1]:8000",
        "chrome-extension://abcdef",
    )
    assert settings_from_json(settings_to_json(s)) == s


def test_allowed_origins_star_and_empty(tmp_path: Path) -> None:
    assert load(tmp_path, '[server]\nallowed_origins = ["*"]\n' + ACME).server.allowed_origins == (
        "*",
    )
    empty = load(tmp_path, "[server]\nallowed_origins = []\n" + ACME)
    assert empty.server.allowed_origins == ()
    assert settings_from_json(settings_to_json(empty)) == empty


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"https://a.example"', r"server\.allowed_origins: expected an array, got a string"),
        ("[1]", r"server\.allowed_origins\[0\]: expected a string, got an integer"),
        (
            '["https://a.example/"]',
            r"allowed_origins\[0\]: 'https://a.example/' is not an origin: an origin has no "
            r"path; write https://a\.example",
        ),
        ('["null"]', r"allowed_origins\[0\]: 'null' is not an origin"),
        ('["a.example"]', r"allowed_origins\[0\]: 'a\.example' is not an origin"),
        ('["https://a.example?x=1"]', r"is not an origin"),
        ('["https://user:pw@a.example"]', r"is not an origin"),
        ('["https://*.a.example"]', r"is not an origin"),
    ],
)
def test_allowed_origins_invalid(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, f"[server]\nallowed_origins = {value}\n" + ACME)
