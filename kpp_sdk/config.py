"""Configuration with one precedence rule, everywhere:

    keyword arguments  >  environment  >  TOML profile file  >  defaults

Environment: ``KPP_API_TOKEN``, ``KPP_API_ENDPOINT``, ``KPP_PROFILE``, ``KPP_CONFIG_FILE``,
``KPP_TIMEOUT`` (seconds a request may take to answer, default 30), the job limits
``KPP_MAX_JOB_SECONDS`` / ``KPP_MAX_JOB_MEMORY`` (:mod:`kpp_sdk.limits`), and the cloud client's
retry and polling settings (:data:`CLIENT_SETTINGS`: ``KPP_CONNECT_TIMEOUT``,
``KPP_MAX_RETRIES``, ``KPP_BACKOFF_BASE``, ``KPP_BACKOFF_CAP``, ``KPP_LONG_POLL``,
``KPP_POLL_INTERVAL_MAX``, ``KPP_MAX_OUTAGE``). Every setting has the same name in the profile
file (lower case, without ``KPP_``) and as a keyword argument of ``get_device("cim.cloud", ...)``.
Profile file: ``$KPP_CONFIG_FILE`` or ``~/.config/kpp/config.toml``, with one table per profile::

    [default]
    endpoint = "http://127.0.0.1:8000"
    max_job_memory = "8GiB"      # local job limits (kpp_sdk.limits)
    max_job_seconds = 3600
    max_outage = 600             # the cloud client waits this long for a server that is down

    [profile.team]
    endpoint = "https://cim.example.org"
    token = "..."

Tokens are held in a :class:`Secret`, which never shows its value in a repr, str or log line.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "Secret", "load_config", "default_config_path", "mask", "available_cores",
           "CLIENT_SETTINGS"]

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"

#: The cloud client's retry and polling settings: name -> (default, type, what it is). Each is a
#: :class:`Config` field, the environment variable ``KPP_<NAME>`` and a profile-file key.
CLIENT_SETTINGS: dict[str, tuple[Any, type, str]] = {
    "connect_timeout": (5.0, float, "seconds to open a connection (at most the timeout)"),
    "max_retries": (5, int, "retries of a failed request (5xx, timeouts, dropped connections)"),
    "backoff_base": (0.1, float, "seconds before the first retry; doubles per retry"),
    "backoff_cap": (10.0, float, "longest wait between two retries, seconds"),
    "long_poll": (10.0, float, "seconds the server may hold a status request open"),
    "poll_interval_max": (2.0, float, "longest wait between two status polls, seconds"),
    "max_outage": (300.0, float, "seconds of failed polls after which a job's result raises"),
}
#: Settings for which 0 means something (no retries; plain polling instead of long polls).
ZERO_ALLOWED = frozenset({"max_retries", "long_poll"})


def available_cores() -> int:
    """CPU cores this process may run on (honours ``taskset``, unlike ``os.cpu_count``): the
    default thread count of the CPU devices and of ``kpp bench``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def mask(token: str | None) -> str:
    """A token as it may appear in output: never more than its last 4 characters."""
    if not token:
        return "<none>"
    return "****" + token[-4:] if len(token) >= 12 else "****"


class Secret:
    """A string that does not print itself. ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str):
            raise ConfigError("a token must be a string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling keeps the value (for process pools); printing does not
        return (Secret, (self._value,))


@dataclass(frozen=True)
class Config:
    """Resolved settings. ``sources`` records where each value came from (for ``kpp config``)."""

    endpoint: str = DEFAULT_ENDPOINT
    token: Secret | None = None
    profile: str = "default"
    timeout: float = 30.0
    #: Local job limits as written (resolved by :func:`kpp_sdk.limits.resolve_limits`).
    max_job_seconds: Any = None
    max_job_memory: Any = None
    #: The cloud client's settings (:data:`CLIENT_SETTINGS`).
    connect_timeout: float = 5.0
    max_retries: int = 5
    backoff_base: float = 0.1
    backoff_cap: float = 10.0
    long_poll: float = 10.0
    poll_interval_max: float = 2.0
    max_outage: float = 300.0
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)


def default_config_path() -> Path:
    env = os.environ.get("KPP_CONFIG_FILE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kpp" / "config.toml"


def _read_profile(path: Path, profile: str, explicit: bool) -> dict:
    if not path.is_file():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if profile == "default":
        section = data.get("default", {})
    else:
        section = data.get("profile", {}).get(profile)
        if section is None:
            known = ", ".join(["default", *sorted(data.get("profile", {}))])
            raise ConfigError(f"{path}: no profile {profile!r}; profiles there: {known}")
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: profile {profile!r} must be a table")
    known_keys = {f.name for f in fields(Config)} - {"sources", "profile"}
    unknown = set(section) - known_keys
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(unknown)} in profile {profile!r}; known: {sorted(known_keys)}"
        )
    return dict(section)


def load_config(*, endpoint: str | None = None, token: str | Secret | None = None,
                profile: str | None = None, timeout: float | None = None,
                config_file: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None, **client: Any) -> Config:
    """Resolve the configuration by the precedence in the module docstring. ``client`` takes
    the cloud client's settings (:data:`CLIENT_SETTINGS`) as keyword arguments (None: not
    given)."""
    unknown = sorted(set(client) - set(CLIENT_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; known: {sorted(CLIENT_SETTINGS)}")
    env = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    prof = profile or env.get("KPP_PROFILE") or "default"
    sources["profile"] = "argument" if profile else ("environment" if env.get("KPP_PROFILE") else "default")
    path = Path(config_file) if config_file else (
        Path(env["KPP_CONFIG_FILE"]) if env.get("KPP_CONFIG_FILE") else default_config_path()
    )
    from_file = _read_profile(path, prof, explicit=bool(config_file or env.get("KPP_CONFIG_FILE")))
    values: dict[str, Any] = {}
    for key, arg, env_key in (("endpoint", endpoint, "KPP_API_ENDPOINT"),
                              ("token", token, "KPP_API_TOKEN"),
                              ("timeout", timeout, "KPP_TIMEOUT"),
                              ("max_job_seconds", None, "KPP_MAX_JOB_SECONDS"),
                              ("max_job_memory", None, "KPP_MAX_JOB_MEMORY"),
                              *((k, client.get(k), f"KPP_{k.upper()}") for k in CLIENT_SETTINGS)):
        if arg is not None:
            values[key], sources[key] = arg, "argument"
        elif env.get(env_key):
            values[key], sources[key] = env[env_key], "environment"
        elif key in from_file:
            values[key], sources[key] = from_file[key], f"file {path}"
        else:
            sources[key] = "default"
    tok = values.get("token")
    if tok is not None and not isinstance(tok, Secret):
        tok = Secret(str(tok))
    try:
        tmo = float(values.get("timeout", Config.timeout))
    except (TypeError, ValueError):
        raise ConfigError(f"timeout must be a number of seconds, got {values.get('timeout')!r}") from None
    if tmo <= 0:
        raise ConfigError(f"timeout must be positive, got {tmo}")
    ep = str(values.get("endpoint", DEFAULT_ENDPOINT))
    if not ep.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint must start with http:// or https://, got {ep!r}")
    settings = {k: _client_setting(k, values.get(k, default), kind)
                for k, (default, kind, _) in CLIENT_SETTINGS.items()}
    return Config(endpoint=ep.rstrip("/"), token=tok, profile=prof, timeout=tmo,
                  max_job_seconds=values.get("max_job_seconds"),
                  max_job_memory=values.get("max_job_memory"), sources=sources, **settings)


def _client_setting(name: str, value: Any, kind: type) -> Any:
    try:
        v = kind(value) if not isinstance(value, bool) else None
        if kind is int and float(value) != v:
            v = None
    except (TypeError, ValueError):
        v = None
    if v is None or not math.isfinite(v) or v < 0 or (v == 0 and name not in ZERO_ALLOWED):
        what = "an integer >= 0" if kind is int else "a positive number of seconds"
        raise ConfigError(f"{name} must be {what}, got {value!r} (set as KPP_{name.upper()}, a "
                          "keyword argument or a profile-file key)")
    return v
