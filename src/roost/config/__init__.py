"""Configuration: roost.toml sections declared as pydantic models, loaded with helpful errors.

Feature modules declare their own section next to their code::

    class Options(ModuleOptions):
        domain: str = Field("conference.localhost", description="Where rooms live.")

    register_section("muc", Options)

and read it with ``config.module_options("muc", Options)``.
"""

from roost.config.loader import CONFIG_ENV_VAR, ConfigError, ConfigProblem, load_config
from roost.config.schema import (
    CORE_SECTIONS,
    C2SSection,
    Config,
    ConfigPath,
    ListenSection,
    LogSection,
    ModuleOptions,
    ServerSection,
    StorageSection,
    TLSSection,
    parse_address,
    register_section,
    registered_sections,
    unregister_section,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "CORE_SECTIONS",
    "C2SSection",
    "Config",
    "ConfigError",
    "ConfigPath",
    "ConfigProblem",
    "ListenSection",
    "LogSection",
    "ModuleOptions",
    "ServerSection",
    "StorageSection",
    "TLSSection",
    "load_config",
    "parse_address",
    "register_section",
    "registered_sections",
    "unregister_section",
]
