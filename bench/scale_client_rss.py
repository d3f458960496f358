"""RSS per subscribed socket of the two candidate load generators of bench/scale.py: a Python
``websockets`` client (bench/idle_rss_client.py) and Node ``ws`` (bench/node/scale_client.mjs),
each at 1 and at 3,000 sockets against one ``wsq serve``: the difference over 2,999.

    .venv/bin/python bench/scale_client_rss.py
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from run import (  # noqa: E402  (bench/ is not a package)
    BENCH_TENANT_QUOTA,
    VENV_BIN,
    _wait_healthz,
    _wsq_env,
    _wsq_token,
    free_port,
    wait_port,
)


def rss(pid: int) -> int:
    """KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


tmp = Path(tempfile.mkdtemp())
env = _wsq_env()
cfg = tmp / "wsq.toml"
cfg.write_text(
    f'[server]\nmax_connections = 10000\n\n[tenants.dev]\nkeys = [{{ alg = "HS256", secret = "{env["WSQ_DEV_SECRET"]}" }}]\nmax_connections = {BENCH_TENANT_QUOTA}\nmax_links = {BENCH_TENANT_QUOTA}\n'
)
token = _wsq_token(env, config=cfg)
port = free_port()
srv = subprocess.Popen(
    [
        str(VENV_BIN / "wsq"),
        "serve",
        "--port",
        str(port),
        "--config",
        str(cfg),
        "--log-level",
        "warning",
    ],
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    wait_port(port, srv)
    _wait_healthz(port)
    out = {}
    for n in (1, 3000):
        p = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "idle_rss_client.py"),
                f"ws://127.0.0.1:{port}/ws",
                token,
                str(n),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        p.stdout.readline()
        time.sleep(1)
        out[("py", n)] = rss(p.pid)
        p.stdin.close()
        p.wait()
        spec = dict(
            url=f"ws://127.0.0.1:{port}/ws",
            token=token,
            address="bench.scale",
            count=n,
            source="127.0.0.9",
            first_port=30000,
            concurrency=50,
            heartbeat_ms=10000,
        )
        q = subprocess.Popen(
            ["node", str(BENCH / "node" / "scale_client.mjs"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=BENCH / "node",
        )
        q.stdout.readline()
        q.stdin.write("connect\n")
        q.stdin.flush()
        q.stdout.readline()
        time.sleep(1)
        out[("node", n)] = rss(q.pid)
        q.stdin.write("stop\n")
        q.stdin.flush()
        q.wait()
    for k in ("py", "node"):
        print(
            k,
            "KiB per socket (3000 vs 1):",
            round((out[(k, 3000)] - out[(k, 1)]) / 2999, 2),
            "base KiB",
            out[(k, 1)],
        )
finally:
    srv.terminate()
    srv.wait()
