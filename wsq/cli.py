"""The ``wsq`` command: ``serve``, ``token``, ``check-config`` (contract section 8).

Exit codes: 0 success; 2 a configuration or usage error (``wsq: error: ...`` on stderr);
``check-config`` answers 1 for an invalid configuration.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import ipaddress
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from wsq import __version__
from wsq.config import (
    KeyConfig,
    ServerConfig,
    Settings,
    TenantConfig,
    load_settings,
    settings_to_json,
)
from wsq.config.settings import (
    DEV_TENANT,
    ENV_BROKER,
    ENV_CONFIG,
    ENV_DEV_SECRET,
    ENV_SETTINGS_FILE,
    LOG_FORMATS,
)
from wsq.config.summary import describe_settings
from wsq.core.addresses import is_valid_pattern
from wsq.core.errors import ConfigError
from wsq.keys import HMAC_MIN_BYTES

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEV_TOKEN_TTL_S = 24 * 3600
DEFAULT_TOKEN_TTL_S = 3600
#: The application factory uvicorn imports in every worker; it takes the settings _hand_over
#: gave it (in memory, or in the file WSQ_SETTINGS_FILE names).
APP_FACTORY = "wsq.app:app_factory"

Handler = Callable[[argparse.Namespace], int]


def _error(message: str) -> None:
    print(f"wsq: error: {message}", file=sys.stderr, flush=True)


def _out(line: str = "") -> None:
    print(line, flush=True)


# -- helpers ---------------------------------------------------------------------------------


def _browser_host(host: str) -> str:
    """The host part of a URL a browser on this machine can open for a bind address."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def wsq_command() -> str:
    """How to run this ``wsq`` again, as a shell command that works as printed in another
    terminal, from any directory: ``wsq`` when that is the one on PATH (and not from a
    virtualenv, whose bin is on PATH only where it is activated), else this script's absolute
    path (``/src/wsq/.venv/bin/wsq`` for ``scripts/run``), else ``<this python> -m wsq``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "wsq" and os.path.isfile(argv0):
        script = os.path.abspath(argv0)
        on_path = shutil.which("wsq")
        venv_bin = sys.prefix != sys.base_prefix and os.path.realpath(
            os.path.dirname(script)
        ) == os.path.realpath(os.path.join(sys.prefix, "bin"))
        if on_path is not None and not venv_bin and os.path.samefile(on_path, script):
            return "wsq"
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m wsq"


def _event_loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def _mint(
    tenant: TenantConfig,
    sub: str,
    *,
    publish: Sequence[str],
    subscribe: Sequence[str],
    ttl_s: int,
    kid: str | None,
    ops: bool = False,
) -> str:
    from wsq.auth import mint_token

    return mint_token(
        tenant,
        sub,
        publish=list(publish),
        subscribe=list(subscribe),
        ops=ops,
        ttl_s=ttl_s,
        kid=kid,
    )


# -- serve -----------------------------------------------------------------------------------


def _print_dev_banner(settings: Settings) -> None:
    tenant = settings.tenants[DEV_TENANT]
    key = tenant.keys[0]
    assert key.secret is not None
    token = _mint(
        tenant,
        "dev",
        publish=[">"],
        subscribe=[">"],
        ops=True,
        ttl_s=DEV_TOKEN_TTL_S,
        kid=key.kid,
    )
    host = _browser_host(settings.server.host)
    port = settings.server.port
    for line in (
        "",
        "wsq: DEVELOPMENT MODE: no tenant is configured, serving the development tenant "
        f'"{DEV_TENANT}".',
        "     Not for production: configure tenants in a TOML file (--config or WSQ_CONFIG).",
        "",
        f'  tenant   {DEV_TENANT} (issuer "{tenant.issuer}", key "{key.kid}", {key.alg})',
        f"  secret   {key.secret}",
        f"  token    {token}",
        f'           (sub "dev", publish and subscribe ">", ops, valid {DEV_TOKEN_TTL_S // 3600} h)',
        f"  demo     http://{host}:{port}/",
        f"  ops      http://{host}:{port}/ops",
        f"  socket   ws://{host}:{port}/ws",
        "",
        f"  Keep this secret across restarts, and mint more tokens, with: export {ENV_DEV_SECRET}="
        f"{key.secret}",
        f"  then: {wsq_command()} token --tenant {DEV_TENANT} --sub alice --subscribe 'chat.>'",
        "",
    ):
        _out(line)


def _secrets_of(settings: Settings) -> set[str]:
    keys = {key.secret for t in settings.tenants.values() for key in t.keys if key.secret}
    entries = [h.secret for t in settings.tenants.values() for h in t.webhooks]
    entries += [s.secret for t in settings.tenants.values() for s in t.sinks]
    # A rotation's variable holds several, space-separated: the whole value and each one.
    hooks = set(entries) | {one for secret in entries for one in secret.split()}
    return keys | hooks


def _hand_over(settings: Settings) -> None:
    """Give the resolved settings to ``wsq.app:app_factory`` without a secret in the environment
    of any process we start: one worker takes them in memory; N workers (separate processes)
    from a file that only this user can read (0600, in a fresh 0700 directory), which the
    workers' environment names by path and which goes when ``wsq serve`` exits (it stays while
    the server runs: uvicorn starts a worker again when one dies). Variables that hold a key's
    secret (``secret_env``, WSQ_DEV_SECRET) or the broker's password leave this process's
    environment, so that the workers do not inherit them: they do not need them."""
    secrets = _secrets_of(settings)
    for name, value in list(os.environ.items()):
        if value in secrets or (name == ENV_BROKER and urlsplit(value).password):
            del os.environ[name]
    if settings.server.workers == 1:
        from wsq import app

        app.hand_over(settings)
        return
    directory = tempfile.mkdtemp(prefix="wsq-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = os.path.join(directory, "settings.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(settings_to_json(settings))
    os.environ[ENV_SETTINGS_FILE] = path


def _metrics_dir() -> None:
    """``--workers N``: the workers' /metrics figures meet in a private directory (0700, made
    here, removed when ``wsq serve`` exits), which prometheus-client's multiprocess mode finds
    through ``PROMETHEUS_MULTIPROC_DIR`` in the workers' environment (wsq.metrics)."""
    directory = tempfile.mkdtemp(prefix="wsq-metrics-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        config_path=args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "broker": args.broker,
            "workers": args.workers,
            "log_format": args.log_format,
        },
    )
    # load_settings refuses it already; kept here so that the promise does not hang on that.
    if settings.server.workers > 1 and settings.broker.url.startswith("memory:"):
        raise ConfigError(
            "--workers > 1 needs a shared broker: the memory:// broker is one process; "
            "use redis://host:6379/0"
        )
    if settings.dev_mode:
        _print_dev_banner(settings)
    _hand_over(settings)
    if settings.server.workers > 1:
        _metrics_dir()

    import uvicorn

    from wsq.accesslog import log_config
    from wsq.drain import DrainPlan
    from wsq.http_protocol import HTTP_PROTOCOL
    from wsq.ws_protocol import uvicorn_options

    server = settings.server
    _raise_fd_limit(server)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        # wsq's WebSocket protocol, max_frame_bytes, ws_compression, no pings.
        **uvicorn_options(server),
        log_level=args.log_level,
        # uvicorn's own, printing request paths without their query strings (wsq.accesslog).
        log_config=log_config(server.log_format, access_log=server.access_log),
        lifespan="on",
        # The drain's share for requests in flight after SIGTERM (wsq.drain). uvicorn annotates
        # it int but hands it to asyncio.timeout(), which takes float seconds: whole seconds
        # would overrun a short drain_timeout_ms (0.5 s -> 1 s, then the backstop's exit 70).
        timeout_graceful_shutdown=DrainPlan.of(server.drain_timeout_ms).server_s,  # type: ignore[arg-type]
        loop=_event_loop(),
        # h11 with a deadline and bounds before authentication (wsq.http_protocol).
        http=HTTP_PROTOCOL,
        proxy_headers=True,
        forwarded_allow_ips=list(server.trusted_proxies),
        # --workers N: how long a worker may take to answer the supervisor's health check
        # before it is killed and replaced (its sockets dropped). uvicorn's 5 s killed a worker
        # holding 8,000 sockets in the scale scenario on a loaded machine (docs/performance.md,
        # "Scale"): a slow worker serves its sockets late; a killed one loses them all.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )
    return 0


#: Seconds a worker may take to answer uvicorn's supervisor before it is killed (``--workers``).
WORKER_HEALTHCHECK_S = 30


#: File descriptors a process needs beside its connections: listeners, Redis, files, logs.
FD_SPARE = 256


def _raise_fd_limit(server: ServerConfig) -> None:
    """Raise the soft limit on open files to what ``max_connections`` needs, up to the hard
    limit; warn when even that is short: past it accept() fails, for /healthz too."""
    try:
        import resource
    except ImportError:  # not on Linux or macOS
        return
    from wsq.admission import HEADROOM

    need = server.max_connections + 2 * HEADROOM + FD_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and soft < need:
        target = need if hard == unlimited else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != unlimited and soft < need:
        print(
            f"wsq: warning: the open-file limit is {soft}, below max_connections "
            f"({server.max_connections}) + {need - server.max_connections}: past it no "
            "connection is accepted, /healthz included; raise it (ulimit -n, systemd "
            "LimitNOFILE=) or lower [server] max_connections (docs/security.md)",
            file=sys.stderr,
            flush=True,
        )


# -- token -----------------------------------------------------------------------------------


def _signing_keys(tenant: TenantConfig, kid: str | None) -> list[KeyConfig]:
    if kid is not None and all(key.kid != kid for key in tenant.keys):
        kids = ", ".join(repr(key.kid) for key in tenant.keys if key.kid is not None) or "none"
        raise ConfigError(f"tenant {tenant.name!r} has no key with kid {kid!r} (kids: {kids})")
    return [
        key for key in tenant.keys if key.secret is not None and (kid is None or key.kid == kid)
    ]


def _token(args: argparse.Namespace) -> int:
    settings = load_settings(config_path=args.config)
    if settings.dev_mode and not os.environ.get(ENV_DEV_SECRET):
        raise ConfigError(
            "no configuration (--config or WSQ_CONFIG) and no WSQ_DEV_SECRET: the development "
            f"tenant {DEV_TENANT!r} gets a random secret at each start of `wsq serve`; set "
            f"{ENV_DEV_SECRET} to the secret it printed to mint tokens it accepts"
        )
    tenant = settings.tenants.get(args.tenant)
    if tenant is None:
        known = ", ".join(repr(name) for name in settings.tenants)
        raise ConfigError(f"--tenant: unknown tenant {args.tenant!r} (configured: {known})")
    if not args.sub:
        raise ConfigError("--sub: must not be empty")
    publish: list[str] = args.publish or []
    subscribe: list[str] = args.subscribe or []
    for flag, patterns in (("--publish", publish), ("--subscribe", subscribe)):
        for pattern in patterns:
            if not is_valid_pattern(pattern):
                raise ConfigError(
                    f"{flag}: {pattern!r} is not a pattern (dot-separated tokens of "
                    "A-Z a-z 0-9 _ -, '*' for one token, a final '>' for one or more)"
                )
    if args.ttl < 1:
        raise ConfigError(f"--ttl: must be at least 1 second, got {args.ttl}")
    if args.ops and not tenant.ops:
        raise ConfigError(
            f"--ops: tenant {tenant.name!r} may not grant the operator right; set ops = true in "
            f"[tenants.{tenant.name}] first"
        )
    if not _signing_keys(tenant, args.kid):
        which = f"key {args.kid!r}" if args.kid is not None else "none of its keys"
        raise ConfigError(
            f"tenant {tenant.name!r}: {which} has a secret to sign with; public keys and JWKS "
            "only verify, so mint its tokens where the private key is"
        )
    try:
        token = _mint(
            tenant,
            args.sub,
            publish=publish,
            subscribe=subscribe,
            ops=args.ops,
            ttl_s=args.ttl,
            kid=args.kid,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    _out(token)
    return 0


# -- check-config ----------------------------------------------------------------------------


def _warnings(settings: Settings) -> list[str]:
    found: list[str] = []
    for tenant in settings.tenants.values():
        for key in tenant.keys:
            name = f"tenant {tenant.name!r} key {key.kid or '(no kid)'}"
            if key.secret is not None:
                size, want = len(key.secret.encode()), HMAC_MIN_BYTES[key.alg]
                if size < want:
                    found.append(
                        f"{name}: the {key.alg} secret has {size} bytes, RFC 7518 asks for at "
                        f"least {want} (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                    )
            if key.jwks_url is not None and urlsplit(key.jwks_url).scheme == "http":
                found.append(f"{name}: the JWKS is fetched over plain http, use https")
        for kind, entries in (("webhook", tenant.webhooks), ("sink", tenant.sinks)):
            for entry in entries:
                inner = _internal_host(entry.url)
                if inner is not None:
                    found.append(
                        f"tenant {tenant.name!r} {kind} {entry.url}: its host is {inner}; "
                        "wsq will POST there (docs/security.md, Known limits)"
                    )
    return found


def _internal_host(url: str) -> str | None:
    """What kind of internal address ``url``'s host is literally (a name is not resolved: an
    egress filter is the real defence), or None."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "localhost"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    for kind in ("loopback", "link_local", "private", "unspecified", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    return None


def _check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(config_path=args.config)
    except ConfigError as e:
        _error(str(e))
        return 1
    source = args.config if args.config is not None else (os.environ.get(ENV_CONFIG) or None)
    for line in describe_settings(settings, source):
        _out(line)
    for warning in _warnings(settings):
        _out(f"warning: {warning}")
    _out("configuration OK")
    return 0


# -- the parser and main ---------------------------------------------------------------------


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML configuration file (default: ${ENV_CONFIG}; none: development mode)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsq", description="wsq: a WebSocket push gateway for browsers (wsq.v1)."
    )
    parser.add_argument("--version", action="version", version=f"wsq {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Flags override the file and the environment "
        "(WSQ_CONFIG, WSQ_BROKER, WSQ_HOST, WSQ_PORT, WSQ_WORKERS).",
    )
    _add_config(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument(
        "--broker",
        metavar="URL",
        help="memory:// (default, one process), redis://host:6379/0, rediss://..., "
        "redis+cluster://host:7000",
    )
    serve.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (more than 1 needs Redis)"
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info", metavar="LEVEL")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        metavar="FORMAT",
        help="text (default) or json: one JSON object per line ([server] log_format)",
    )
    serve.set_defaults(handler=_serve)

    token = commands.add_parser(
        "token",
        help="mint a token for a tenant with a shared secret",
        description="Mint a JWT for a tenant and print it (and only it).",
    )
    _add_config(token)
    token.add_argument("--tenant", required=True, metavar="NAME")
    token.add_argument("--sub", required=True, metavar="SUB", help="the subject (sub claim)")
    token.add_argument(
        "--publish", action="append", metavar="PATTERN", help="publish right (repeatable)"
    )
    token.add_argument(
        "--subscribe", action="append", metavar="PATTERN", help="subscribe right (repeatable)"
    )
    token.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_TOKEN_TTL_S,
        metavar="SECONDS",
        help=f"lifetime (default {DEFAULT_TOKEN_TTL_S})",
    )
    token.add_argument("--kid", help="the key to sign with, where the tenant has several")
    token.add_argument(
        "--ops",
        action="store_true",
        help="the operator right: the gateway's figures on $sys.stats (/ops); the tenant needs "
        "ops = true",
    )
    token.set_defaults(handler=_token)

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and summarise it",
        description="Load and validate the configuration, print a summary without secrets; "
        "exit 0 when valid, 1 when not.",
    )
    _add_config(check)
    check.set_defaults(handler=_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as e:
        _error(str(e))
        return 2
