"""Settings: one frozen object built from TOML, environment and CLI flags.

``settings`` holds the dataclasses (the whole configuration surface) and the names of the
environment variables; ``loading`` resolves file < environment < flags into one ``Settings``;
``table`` reads a TOML table strictly.
"""

from wsq.config.loading import broker_scheme, load_settings, settings_from_json, settings_to_json
from wsq.config.settings import BrokerConfig, KeyConfig, ServerConfig, Settings, TenantConfig

__all__ = [
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
