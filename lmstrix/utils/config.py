"""Public import path of ``Config``; it lives in :mod:`lmstrix.core.config`, beside the
facades that read it."""

from lmstrix.core.config import (
    APP_NAME,
    DEFAULT_BASE_URL,
    Config,
    DatabaseSettings,
    HostConfig,
    LMStudioSettings,
    OutputSettings,
    QueueSettings,
    RedisSettings,
    SafetySettings,
    Settings,
    default_config_path,
    default_data_dir,
    load_config,
    parse_hosts,
)

__all__ = [
    "APP_NAME",
    "DEFAULT_BASE_URL",
    "Config",
    "DatabaseSettings",
    "HostConfig",
    "LMStudioSettings",
    "OutputSettings",
    "QueueSettings",
    "RedisSettings",
    "SafetySettings",
    "Settings",
    "default_config_path",
    "default_data_dir",
    "load_config",
    "parse_hosts",
]
