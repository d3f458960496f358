"""wsq.cli: serve (without starting a server), token, check-config, python -m wsq."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import uvicorn

from wsq import __version__, app
from wsq.accesslog import log_config
from wsq.cli import FD_SPARE, _raise_fd_limit, main, wsq_command
from wsq.config import ServerConfig, Settings, settings_from_json
from wsq.config.summary import redact_url

SECRET = "a-long-enough-shared-secret-for-hs256-0123456789"
ENV_VARS = (
    "WSQ_CONFIG",
    "WSQ_BROKER",
    "WSQ_HOST",
    "WSQ_PORT",
    "WSQ_WORKERS",
    "WSQ_DEV_SECRET",
    "WSQ_SETTINGS_FILE",
)


@pytest.fixture(autouse=True)
def clean_environment() -> Iterator[None]:
    """No WSQ_* from outside; whatever the command sets is undone afterwards (and the settings
    it handed over to the app factory)."""
    saved = dict(os.environ)
    for name in ENV_VARS:
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)
    app.hand_over(None)


def resolved() -> Settings:
    """The settings `wsq serve` handed over to the app factory: in memory (one worker) or in the
    file WSQ_SETTINGS_FILE names (workers)."""
    path = os.environ.get("WSQ_SETTINGS_FILE")
    if path:
        return settings_from_json(Path(path).read_text())
    settings = app.handed_over()
    assert settings is not None
    return settings


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_run(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return calls


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "wsq.toml"
    path.write_text(
        f"""
[server]
port = 9000
max_frame_bytes = 65536

[broker]
url = "redis://:hunter2@127.0.0.1:6379/0"

[tenants.acme]
issuer = "acme-issuer"
keys = [
  {{ kid = "k1", alg = "HS256", secret = "{SECRET}" }},
  {{ kid = "k2", alg = "HS512", secret = "{SECRET * 2}" }},
  {{ kid = "j", alg = "RS256", jwks_url = "https://idp.example/jwks" }},
]

[tenants.pub]
keys = [{{ kid = "j", alg = "RS256", jwks_url = "https://idp.example/jwks" }}]
"""
    )
    return str(path)


# -- serve ------------------------------------------------------------------------------------


def test_serve_refuses_workers_on_memory(
    capsys: pytest.CaptureFixture[str], uvicorn_calls: list[Any]
) -> None:
    assert main(["serve", "--workers", "2"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("wsq: error: ")
    assert "memory://" in err and "one process" in err and "redis://" in err
    assert out == ""
    assert uvicorn_calls == []
    assert "WSQ_SETTINGS_FILE" not in os.environ and app.handed_over() is None


def test_serve_refuses_workers_on_memory_from_environment(
    capsys: pytest.CaptureFixture[str], uvicorn_calls: list[Any]
) -> None:
    os.environ["WSQ_WORKERS"] = "3"
    assert main(["serve"]) == 2
    assert "shared broker" in capsys.readouterr().err
    assert uvicorn_calls == []


def test_serve_runs_uvicorn(
    config: str, capsys: pytest.CaptureFixture[str], uvicorn_calls: list[Any]
) -> None:
    code = main(
        [
            "serve",
            "--config",
            config,
            "--host",
            "0.0.0.0",
            "--port",
            "9100",
            "--workers",
            "3",
            "--log-level",
            "warning",
        ]
    )
    assert code == 0
    ((args, kwargs),) = uvicorn_calls
    assert args == ("wsq.app:app_factory",)
    loop = kwargs.pop("loop")
    assert loop in ("uvloop", "asyncio")
    assert kwargs == {
        "factory": True,
        "host": "0.0.0.0",
        "port": 9100,
        "workers": 3,
        "ws": "wsq.ws_protocol:WebSocketProtocol",
        # websockets refuses (and stops inflating) a message past max_frame_bytes.
        "ws_max_size": 65536,
        "ws_per_message_deflate": ServerConfig().ws_compression == "deflate",
        "ws_ping_interval": None,
        "ws_ping_timeout": None,
        "log_level": "warning",
        "log_config": log_config(),
        "lifespan": "on",
        # drain_timeout_ms 8000: uvicorn's share of the drain is 20 %, 1.6 s exactly.
        "timeout_graceful_shutdown": 1.6,
        "http": "wsq.http_protocol:HTTPProtocol",
        "proxy_headers": True,
        "forwarded_allow_ips": ["127.0.0.1", "::1"],
        # a busy worker is not killed (and its sockets dropped) after uvicorn's 5 s
        "timeout_worker_healthcheck": 30,
    }
    assert app.handed_over() is None  # three workers: in a file
    resolved = settings_from_json(Path(os.environ["WSQ_SETTINGS_FILE"]).read_text())
    assert resolved.server.port == 9100 and resolved.server.workers == 3
    assert resolved.broker.url == "redis://:hunter2@127.0.0.1:6379/0"
    assert resolved.tenants["acme"].issuer == "acme-issuer"
    assert not resolved.dev_mode
    out, err = capsys.readouterr()
    # Not dev mode: no secret anywhere on the terminal.
    assert SECRET not in out + err and "hunter2" not in out + err


def test_serve_hands_workers_their_settings_in_a_private_file_not_the_environment(
    tmp_path: Path, uvicorn_calls: list[Any]
) -> None:
    path = tmp_path / "wsq.toml"
    path.write_text(
        f'[tenants.acme]\nkeys = [{{ alg = "HS256", secret = "{SECRET}" }},\n'
        '  { kid = "e", alg = "HS256", secret_env = "ACME_E_SECRET" }]\n'
    )
    env_secret = "from-the-environment-" + SECRET
    os.environ["ACME_E_SECRET"] = env_secret
    os.environ["WSQ_BROKER"] = "redis://:hunter2@127.0.0.1:6379/0"
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 0
    assert len(uvicorn_calls) == 1
    # What the workers will inherit: a path, no secret.
    assert "ACME_E_SECRET" not in os.environ and "WSQ_BROKER" not in os.environ
    environment = "\0".join(f"{k}={v}" for k, v in os.environ.items())
    for secret in (SECRET, env_secret, "hunter2"):
        assert secret not in environment
    file = Path(os.environ["WSQ_SETTINGS_FILE"])
    assert file.stat().st_mode & 0o777 == 0o600
    assert file.parent.stat().st_mode & 0o777 == 0o700
    settings = settings_from_json(file.read_text())
    assert [key.secret for key in settings.tenants["acme"].keys] == [SECRET, env_secret]
    assert settings.broker.url == "redis://:hunter2@127.0.0.1:6379/0"


def test_webhook_secrets_leave_the_workers_environment(
    tmp_path: Path, uvicorn_calls: list[Any]
) -> None:
    hook = "whsec_" + "d2Vib29rLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"
    rotated = "whsec_" + "cm90YXRlZC1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="
    path = tmp_path / "wsq.toml"
    path.write_text(
        f'[tenants.acme]\nkeys = [{{ alg = "HS256", secret = "{SECRET}" }}]\n'
        'webhooks = [{ url = "https://x.example/h", events = ["connection.opened"], '
        'secret_env = "HOOK_PAIR" }]\n'
        'sinks = [{ url = "https://x.example/s", addresses = ["a"], secret_env = "SINK_ONE" }]\n'
    )
    os.environ["HOOK_PAIR"] = f"{hook} {rotated}"
    os.environ["SINK_ONE"] = hook
    args = ["--workers", "2", "--broker", "redis://127.0.0.1:6379/0"]  # never connected
    assert main(["serve", "--config", str(path), *args]) == 0
    assert "HOOK_PAIR" not in os.environ and "SINK_ONE" not in os.environ
    environment = "\0".join(f"{k}={v}" for k, v in os.environ.items())
    assert hook[6:] not in environment and rotated[6:] not in environment


def test_serve_hands_one_worker_its_settings_in_memory(
    config: str, uvicorn_calls: list[Any]
) -> None:
    os.environ["WSQ_DEV_SECRET"] = SECRET  # ignored with a config; a secret all the same
    assert main(["serve", "--config", config, "--broker", "redis://127.0.0.1:6379/0"]) == 0
    assert "WSQ_SETTINGS_FILE" not in os.environ
    assert resolved().tenants["acme"].keys[0].secret == SECRET
    assert SECRET not in os.environ.values()


def test_serve_broker_flag_beats_environment(
    config: str, uvicorn_calls: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ["WSQ_BROKER"] = "redis://env:6379/0"
    assert main(["serve", "--config", config, "--broker", "redis+cluster://flag:7000"]) == 0
    assert resolved().broker.url == "redis+cluster://flag:7000"
    assert uvicorn_calls[0][1]["log_level"] == "info"


def test_serve_uses_wsq_config(config: str, uvicorn_calls: list[Any]) -> None:
    os.environ["WSQ_CONFIG"] = config
    assert main(["serve"]) == 0
    assert uvicorn_calls[0][1]["port"] == 9000


def test_serve_dev_mode_banner(
    capsys: pytest.CaptureFixture[str], uvicorn_calls: list[Any]
) -> None:
    assert main(["serve", "--port", "8123"]) == 0
    out, _ = capsys.readouterr()
    settings = resolved()
    assert settings.dev_mode
    secret = settings.tenants["dev"].keys[0].secret
    assert secret is not None
    assert secret not in os.environ.values()
    assert "DEVELOPMENT MODE" in out
    assert secret in out
    assert "http://127.0.0.1:8123/" in out
    assert "ws://127.0.0.1:8123/ws" in out
    token = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("token"))
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["iss"] == "dev"
    assert claims["wsq"] == {"publish": [">"], "subscribe": [">"], "ops": True}
    assert 24 * 3600 - 60 <= claims["exp"] - time.time() <= 24 * 3600 + 60
    assert jwt.get_unverified_header(token)["kid"] == "dev"


def test_serve_dev_mode_banner_names_a_wsq_command_that_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uvicorn_calls: list[Any]
) -> None:
    assert main(["serve"]) == 0
    out, _ = capsys.readouterr()
    secret = resolved().tenants["dev"].keys[0].secret
    assert secret is not None
    lines = out.splitlines()
    export = next(line for line in lines if "export WSQ_DEV_SECRET=" in line).split("with: ")[1]
    assert export == f"export WSQ_DEV_SECRET={secret}"
    then = next(line for line in lines if line.strip().startswith("then:"))
    command = then.split("then:", 1)[1].strip()
    # Under pytest no `wsq` script runs this: the banner says `<this python> -m wsq token`.
    assert command.startswith(f"{shlex.quote(sys.executable)} -m wsq token --tenant dev ")
    # Both lines as printed, in a shell of their own (another terminal, another directory).
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    done = subprocess.run(
        f"{export}\n{command}",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["wsq"]["subscribe"] == ["chat.>"]


@pytest.mark.parametrize(
    ("on_path", "in_venv", "expected"),
    [
        (False, False, "path"),  # not on PATH: its absolute path
        (True, False, "wsq"),  # installed on PATH: plain `wsq`
        # a virtualenv's bin is on PATH only where it is activated: its absolute path
        (True, True, "path"),
    ],
)
def test_wsq_command_for_a_wsq_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_path: bool, in_venv: bool, expected: str
) -> None:
    prefix = tmp_path / "some dir"
    script = prefix / "bin" / "wsq"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(prefix)
    monkeypatch.setattr(sys, "argv", ["bin/wsq", "serve"])
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin" if on_path else "/usr/bin:/bin")
    monkeypatch.setattr(sys, "prefix", str(prefix) if in_venv else sys.base_prefix)
    want = "wsq" if expected == "wsq" else f"'{script}'"  # quoted: the path has a space
    assert wsq_command() == want


def test_wsq_command_for_python_dash_m(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/src/wsq/__main__.py", "serve"])
    assert wsq_command() == f"{shlex.quote(sys.executable)} -m wsq"


def test_serve_dev_mode_keeps_given_secret(
    capsys: pytest.CaptureFixture[str], uvicorn_calls: list[Any]
) -> None:
    os.environ["WSQ_DEV_SECRET"] = SECRET
    assert main(["serve", "--host", "::"]) == 0
    out, _ = capsys.readouterr()
    assert SECRET in out
    assert "http://[::1]:8000/" in out
    assert resolved().tenants["dev"].keys[0].secret == SECRET


def test_serve_invalid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uvicorn_calls: list[Any]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nidle_ms = 10\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsq: error: ")
    assert "server.idle_ms: must be at least 1000" in err
    assert uvicorn_calls == []


def test_serve_bad_port_flag(capsys: pytest.CaptureFixture[str], uvicorn_calls: list[Any]) -> None:
    assert main(["serve", "--port", "0"]) == 2
    assert "port (from the command line): must be between 1 and 65535" in capsys.readouterr().err
    assert main(["serve", "--port", "x"]) == 2  # argparse: not an int
    assert uvicorn_calls == []


# -- token ------------------------------------------------------------------------------------


def test_token(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "token",
            "--config",
            config,
            "--tenant",
            "acme",
            "--sub",
            "alice",
            "--publish",
            "chat.>",
            "--subscribe",
            "chat.*",
            "--subscribe",
            "user.alice",
            "--ttl",
            "600",
        ]
    )
    assert code == 0
    out, err = capsys.readouterr()
    assert err == ""
    token = out.strip()
    assert out == token + "\n"  # the token and nothing else
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["iss"] == "acme-issuer"
    assert claims["sub"] == "alice"
    assert claims["wsq"] == {"publish": ["chat.>"], "subscribe": ["chat.*", "user.alice"]}
    assert claims["exp"] == claims["iat"] + 600
    assert time.time() - 60 <= claims["iat"] <= time.time()
    assert jwt.get_unverified_header(token)["kid"] == "k1"


def test_token_with_kid(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["token", "--config", config, "--tenant", "acme", "--sub", "bob", "--kid", "k2"]
    assert main(argv) == 0
    token = capsys.readouterr().out.strip()
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("HS512", "k2")
    claims = jwt.decode(token, SECRET * 2, algorithms=["HS512"])
    assert claims["sub"] == "bob"
    # No --publish / --subscribe: no rights.
    assert claims["wsq"] == {"publish": [], "subscribe": []}


def test_token_dev_mode(capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["WSQ_DEV_SECRET"] = SECRET
    assert main(["token", "--tenant", "dev", "--sub", "dev-user", "--subscribe", ">"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["iss"] == "dev" and claims["sub"] == "dev-user"
    assert claims["wsq"]["subscribe"] == [">"]


def test_token_dev_mode_needs_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--tenant", "dev", "--sub", "x"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("wsq: error: ")
    assert "WSQ_DEV_SECRET" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--tenant", "nope", "--sub", "x"],
            "--tenant: unknown tenant 'nope' (configured: 'acme', 'pub')",
        ),
        (["--tenant", "acme", "--sub", ""], "--sub: must not be empty"),
        (
            ["--tenant", "acme", "--sub", "x", "--publish", "a..b"],
            "--publish: 'a..b' is not a pattern",
        ),
        (
            ["--tenant", "acme", "--sub", "x", "--subscribe", "a.>.b"],
            "--subscribe: 'a.>.b' is not a pattern",
        ),
        (["--tenant", "acme", "--sub", "x", "--ttl", "0"], "--ttl: must be at least 1 second"),
        (
            ["--tenant", "acme", "--sub", "x", "--kid", "zz"],
            "tenant 'acme' has no key with kid 'zz'",
        ),
        (
            ["--tenant", "acme", "--sub", "x", "--kid", "j"],
            "key 'j' has a secret to sign with; public keys",
        ),
        (["--tenant", "pub", "--sub", "x"], "tenant 'pub': none of its keys has a secret"),
    ],
)
def test_token_errors(
    config: str, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["token", "--config", config, *extra]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("wsq: error: ")
    assert message in err


def test_token_requires_tenant_and_sub(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--sub", "x"]) == 2
    assert "--tenant" in capsys.readouterr().err
    assert main(["token", "--tenant", "dev"]) == 2
    assert "--sub" in capsys.readouterr().err


def test_serve_raises_the_open_file_limit_up_to_the_hard_limit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import resource

    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 1 << 20))
    monkeypatch.setattr(resource, "setrlimit", lambda _which, limits: set_to.append(limits))
    _raise_fd_limit(ServerConfig(max_connections=5000))
    assert set_to == [(5000 + 16 + FD_SPARE, 1 << 20)]
    assert capsys.readouterr().err == ""


def test_serve_warns_when_the_hard_open_file_limit_is_below_max_connections(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import resource

    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda _which, limits: set_to.append(limits))
    _raise_fd_limit(ServerConfig(max_connections=10_000))
    assert set_to == [(4096, 4096)]
    err = capsys.readouterr().err
    assert err.startswith("wsq: warning: the open-file limit is 4096, below max_connections")
    assert "ulimit -n" in err


# -- check-config -----------------------------------------------------------------------------


def test_check_config_ok(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", config]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"configuration: {config}" in out
    assert "  handshake_timeout_ms 5000, max_connections 10000, max_pending 2048, " in out
    assert "  max_pending_bytes 67108864, max_pending_bytes_per_ip 8388608\n" in out
    assert "  trusted_proxies 127.0.0.1, ::1" in out
    assert "tenant acme: issuer 'acme-issuer'" in out
    assert "key 'k1': HS256, shared secret" in out
    assert "key 'j': RS256, JWKS https://idp.example/jwks" in out
    assert "broker: redis://:***@127.0.0.1:6379/0" in out
    assert "max_deliveries 0 (no limit)" in out
    assert (
        "  quotas: max_connections 1000, max_links 10000, max_addresses 10000; per address "
        "max_groups 32, max_dedup_ids 10000, max_idempotency_keys 1000" in out
    )
    assert "  presence: max_presence_members 10000; per address max_members_per_address 1000" in out
    assert ", quota_lease_ms 30000" in out
    assert "configuration OK" in out
    assert SECRET not in out and "hunter2" not in out


def test_check_config_warns_about_short_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wsq.toml"
    path.write_text(
        '[tenants.acme]\nkeys = [ { kid = "k1", alg = "HS256", secret = "change-me" },\n'
        '  { kid = "k2", alg = "RS256", jwks_url = "http://idp/jwks" } ]\n'
    )
    os.environ["WSQ_CONFIG"] = str(path)
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert f"configuration: {path}" in out
    assert "warning: tenant 'acme' key k1: the HS256 secret has 9 bytes" in out
    assert "warning: tenant 'acme' key k2: the JWKS is fetched over plain http" in out
    assert "change-me" not in out


@pytest.mark.parametrize("setting, offer_accepted", [("off", False), ("deflate", True)])
def test_serve_gives_uvicorn_ws_compression(
    tmp_path: Path, uvicorn_calls: list[Any], setting: str, offer_accepted: bool
) -> None:
    path = tmp_path / "wsq.toml"
    path.write_text(
        f'[server]\nws_compression = "{setting}"\n'
        f'[tenants.acme]\nkeys = [{{ alg = "HS256", secret = "{SECRET}" }}]\n'
    )
    assert main(["serve", "--config", str(path)]) == 0
    ((_args, kwargs),) = uvicorn_calls
    assert kwargs["ws_per_message_deflate"] is offer_accepted


def check_config_out(tmp_path: Path, capsys: pytest.CaptureFixture[str], server: str) -> str:
    """What ``wsq check-config`` prints for a file with ``server`` in [server] and one tenant."""
    path = tmp_path / "wsq.toml"
    path.write_text(
        f'[server]\n{server}\n[tenants.acme]\nkeys = [{{ alg = "HS256", secret = "{SECRET}" }}]\n'
    )
    assert main(["check-config", "--config", str(path)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "setting, shown",
    [
        ("off", "  ws_compression off (permessage-deflate declined)"),
        ("deflate", "  ws_compression deflate (permessage-deflate accepted when offered)"),
    ],
)
def test_check_config_shows_ws_compression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, shown: str
) -> None:
    assert shown in check_config_out(tmp_path, capsys, f'ws_compression = "{setting}"')


def test_check_config_shows_drain_timeout_ms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = check_config_out(tmp_path, capsys, "drain_timeout_ms = 2500")
    assert "  drain_timeout_ms 2500 (on SIGTERM: clients told wsq:going-away" in out


def test_check_config_shows_allowed_origins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = check_config_out(
        tmp_path,
        capsys,
        'allowed_origins = ["https://App.example.com:443", "http://localhost:3000"]',
    )
    assert "allowed_origins https://app.example.com, http://localhost:3000" in out
    assert main(["check-config"]) == 0
    assert "allowed_origins (unset: pages of the gateway's own host" in capsys.readouterr().out


def test_check_config_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wsq.toml"
    path.write_text('[tenants.acme]\nkeys = [{ alg = "HS1", secret = "x" }]\n')
    assert main(["check-config", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("wsq: error: ")
    assert "tenants.acme.keys[0].alg: unknown algorithm 'HS1'" in err


def test_check_config_dev_mode(capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["WSQ_DEV_SECRET"] = SECRET
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "development mode" in out
    assert "no file" in out
    assert SECRET not in out


# -- misc -------------------------------------------------------------------------------------


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: wsq" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"wsq {__version__}"


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("rediss://user:pw@h:6380") == "rediss://user:***@h:6380"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("memory://") == "memory://"


def test_python_dash_m(tmp_path: Path) -> None:
    path = tmp_path / "wsq.toml"
    path.write_text("[server]\nport = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSQ_")}
    done = subprocess.run(
        [sys.executable, "-m", "wsq", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "wsq: error: " in done.stderr and "server.port" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "wsq", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and __version__ in done.stdout


def test_check_config_warns_about_webhooks_to_internal_addresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wsq.toml"
    hook = '{{ url = "{}", events = ["connection.opened"], secret = "{}" }}'
    secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    urls = (
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8000/metrics",
        "http://[::1]/x",
        "https://hooks.example/wsq",
    )
    hooks = ", ".join(hook.format(u, secret) for u in urls)
    key = '{ kid = "k1", alg = "HS256", secret = "' + "s" * 40 + '" }'
    path.write_text(f"[tenants.acme]\nkeys = [ {key} ]\nwebhooks = [ {hooks} ]\n")
    os.environ["WSQ_CONFIG"] = str(path)
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert f"webhook {urls[0]}: its host is a link-local address" in out
    assert f"webhook {urls[1]}: its host is a loopback address" in out
    assert f"webhook {urls[2]}: its host is a loopback address" in out
    assert "hooks.example/wsq: its host" not in out
    assert "configuration OK" in out
