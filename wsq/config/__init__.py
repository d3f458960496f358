"""Settings: one frozen object built from TOML, environment and CLI flags.

``settings`` holds the dataclasses (the whole configuration surface) and the names of the
environment variables; ``loading`` resolves file < environment < flags into one ``Settings``;
``table`` reads a TOML table strictly.
"""

from wsq.config.loading import (
    broker_scheme,
    load_settings,
    settings_from_json,
    settings_to_json,
)
from wsq.config.settings import (
    BROKER_SCHEMES,
    DEV_KID,
    DEV_TENANT,
    ENV_BROKER,
    ENV_CONFIG,
    ENV_DEV_SECRET,
    ENV_HOST,
    ENV_PORT,
    ENV_RESOLVED_SETTINGS,
    ENV_WORKERS,
    MAX_FRAME_BYTES,
    MIN_FRAME_BYTES,
    MIN_IDLE_MS,
    MIN_OPEN_TIMEOUT_MS,
    BrokerConfig,
    KeyConfig,
    ServerConfig,
    Settings,
    TenantConfig,
)

__all__ = [
    "BROKER_SCHEMES",
    "DEV_KID",
    "DEV_TENANT",
    "ENV_BROKER",
    "ENV_CONFIG",
    "ENV_DEV_SECRET",
    "ENV_HOST",
    "ENV_PORT",
    "ENV_RESOLVED_SETTINGS",
    "ENV_WORKERS",
    "MAX_FRAME_BYTES",
    "MIN_FRAME_BYTES",
    "MIN_IDLE_MS",
    "MIN_OPEN_TIMEOUT_MS",
    "BrokerConfig",
    "KeyConfig",
    "ServerConfig",
    "Settings",
    "TenantConfig",
    "broker_scheme",
    "load_settings",
    "settings_from_json",
    "settings_to_json",
]
