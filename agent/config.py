"""The agent's YAML configuration: pydantic models that carry their defaults and their rules.

Unknown keys are errors (`extra="forbid"`), and every problem is reported as
`<file>: <key path>: <what is wrong>`, e.g. `config/agent.yml: checks.0.interval: invalid duration 'abc'`.
The `checks:` entries use the same schema as the collector's assignments (wire-protocol.md,
GET /api/v1/assignments), so `parse_checks` serves both.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.durations import format_duration, parse_duration, parse_size

__all__ = [
    "AgentConfig",
    "Check",
    "ConfigError",
    "GuardSection",
    "HttpCheck",
    "IcmpCheck",
    "load_config",
    "parse_checks",
    "resolve",
]

ENV_AGENT_ID = "UPTIME_AGENT_ID"
ENV_TOKEN = "UPTIME_AGENT_TOKEN"

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Used in file names ({agent_id} in spool.path) and metric labels: keep it to a safe alphabet.
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyRuleError(ValueError):
    """A rule broken by a key below the validated model: `path` is relative to the model."""

    def __init__(self, path: Sequence[str | int], message: str):
        super().__init__(message)
        self.path = tuple(path)


class ConfigError(Exception):
    """One or more configuration problems, each a (key path, message) pair."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(
            f"{prefix}{path}: {message}" if path else f"{prefix}{message}"
            for path, message in self.problems
        )

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(self.problems, source)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {format_duration(value)}")
    return value


# --- checks ---------------------------------------------------------------------------------


class _CheckBase(_Model):
    name: str
    interval: Duration = 60.0

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name or name != name.strip():
            raise ValueError(f"invalid check name {name!r}: must be non-empty without surrounding spaces")
        if len(name) > 200 or any(ord(c) < 32 for c in name):
            raise ValueError(f"invalid check name {name!r}: at most 200 printable characters")
        return name

    @field_validator("interval")
    @classmethod
    def _interval(cls, interval: float) -> float:
        return _positive(interval)

    @field_validator("timeout", check_fields=False)
    @classmethod
    def _timeout_below_interval(cls, timeout: float, info) -> float:
        _positive(timeout)
        interval = info.data.get("interval")
        if interval is not None and timeout >= interval:
            raise ValueError(
                f"timeout {format_duration(timeout)} must be less than interval {format_duration(interval)}"
            )
        return timeout


class HttpCheck(_CheckBase):
    # `type` first among the type-specific fields so messages about it come early; `interval`
    # is declared (in the base) before `timeout`, which the timeout rule relies on.
    type: Literal["http"]
    url: str
    method: str = "GET"
    timeout: Duration = 5.0
    expected_status: list[int] | None = None  # None: any 2xx
    body_match: str | None = None
    tls_verify: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"invalid url {url!r}: scheme must be http or https")
        if not parts.hostname:
            raise ValueError(f"invalid url {url!r}: no host")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError(f"invalid url {url!r}: bad port") from None
        return url

    @field_validator("method")
    @classmethod
    def _method(cls, method: str) -> str:
        if method.upper() not in HTTP_METHODS:
            raise ValueError(f"unsupported method {method!r} (one of {', '.join(HTTP_METHODS)})")
        return method.upper()

    @field_validator("expected_status")
    @classmethod
    def _expected_status(cls, codes: list[int] | None) -> list[int] | None:
        if codes is None:
            return None
        if not codes:
            raise ValueError("must list at least one status code (leave it out to accept any 2xx)")
        for code in codes:
            if not 100 <= code <= 599:
                raise ValueError(f"invalid status code {code}: must be 100-599")
        return codes

    @field_validator("body_match")
    @classmethod
    def _body_match(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
        return pattern

    def accepts_status(self, status: int) -> bool:
        if self.expected_status is None:
            return 200 <= status <= 299
        return status in self.expected_status


class IcmpCheck(_CheckBase):
    type: Literal["icmp"]
    host: str
    count: int = Field(3, ge=1, le=100)
    ping_interval: Duration = 0.2
    timeout: Duration = 2.0  # per echo request: how long to wait for its reply

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        if not host.strip():
            raise ValueError("must not be empty")
        return host.strip()

    @field_validator("ping_interval")
    @classmethod
    def _ping_interval(cls, value: float) -> float:
        return _positive(value)

    @model_validator(mode="after")
    def _fits_in_interval(self) -> IcmpCheck:
        # A probe must end before the next slot starts, or slots would pile up.
        if self.worst_case_seconds() >= self.interval:
            raise KeyRuleError(
                ("count",),
                f"{self.count} pings take up to {format_duration(self.worst_case_seconds())} "
                f"((count - 1) x ping_interval + count x timeout), must be less than interval "
                f"{format_duration(self.interval)}",
            )
        return self

    def worst_case_seconds(self) -> float:
        return (self.count - 1) * self.ping_interval + self.count * self.timeout


Check = Annotated[Union[HttpCheck, IcmpCheck], Field(discriminator="type")]
CHECK_TYPES = ("http", "icmp")


def _unique_names(checks: Sequence[HttpCheck | IcmpCheck], prefix: tuple = ()) -> None:
    first_seen: dict[str, int] = {}
    for index, check in enumerate(checks):
        if check.name in first_seen:
            raise KeyRuleError(
                (*prefix, index, "name"),
                f"duplicate check name {check.name!r} (first used by {'.'.join(map(str, (*prefix, first_seen[check.name])))})",
            )
        first_seen[check.name] = index


class _CheckList(_Model):
    checks: list[Check]

    @model_validator(mode="after")
    def _unique(self) -> _CheckList:
        _unique_names(self.checks, ("checks",))
        return self


# --- sections -------------------------------------------------------------------------------


class AgentSection(_Model):
    id: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, agent_id: str | None) -> str | None:
        if agent_id is not None and not AGENT_ID_RE.match(agent_id):
            raise ValueError(f"invalid agent id {agent_id!r}: use 1-64 of A-Z a-z 0-9 . _ -")
        return agent_id


class CollectorSection(_Model):
    url: str
    token: str | None = None
    token_file: str | None = None
    batch_size: int = Field(500, ge=1, le=10_000)
    flush_interval: Duration = 1.0
    heartbeat_interval: Duration = 15.0
    fetch_checks: bool = True
    assignments_interval: Duration = 30.0
    request_timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid url {url!r}: must be http(s)://host[:port]")
        return url.rstrip("/")

    @field_validator("flush_interval", "heartbeat_interval", "assignments_interval", "request_timeout")
    @classmethod
    def _durations(cls, value: float) -> float:
        return _positive(value)

    @model_validator(mode="after")
    def _one_token_source(self) -> CollectorSection:
        if self.token is not None and self.token_file is not None:
            raise KeyRuleError(("token_file",), "give either collector.token or collector.token_file, not both")
        return self


class MetricsSection(_Model):
    listen: str = "127.0.0.1:9101"  # "" disables the metrics server

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        if listen == "":
            return listen
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"invalid listen address {listen!r}: use host:port (port 0 picks a free port)")
        return listen

    def host_port(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class SpoolSection(_Model):
    path: str = "./data/spool-{agent_id}.sqlite"
    max_bytes: Size = 512 * 1024**2
    max_age: Duration = 7 * 86400.0

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.strip():
            raise ValueError("must not be empty")
        try:
            path.format(agent_id="x")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"invalid path {path!r}: the only placeholder is {{agent_id}}") from None
        return path

    @field_validator("max_bytes")
    @classmethod
    def _max_bytes(cls, value: int) -> int:
        if value < 64 * 1024:
            raise ValueError(f"must be at least 64KB, got {value} bytes")
        return value

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, value: float) -> float:
        return _positive(value)


class ScheduleSection(_Model):
    # Each probe starts a random 0..jitter after its aligned slot; the same bound for all checks.
    jitter: Duration = 0.0


class GuardSection(_Model):
    """SSRF guard for hosted use (issue 4, "Hostile input"): off by default.

    ```yaml
    guard:
      block_private: true     # HTTP checks never connect to private, loopback, link-local,
                              # multicast, reserved, unspecified or cloud metadata addresses
      allow: [203.0.113.0/24] # optional: networks exempted (metadata addresses never are)
    ```

    It sits at the top level of the agent's own file on purpose: checks may come from the
    collector (GET /api/v1/assignments), and an assigned check must not be able to switch off
    the protection of the network the agent runs in. When on, every address an HTTP check
    connects to is judged at connect time, after name resolution, and again on each redirect
    hop (agent/probers/guard.py); a check whose every address is refused fails with the reason
    `blocked`. ICMP checks are not affected.
    """

    block_private: bool = False
    allow: list[str] = Field(default_factory=list)

    @field_validator("allow")
    @classmethod
    def _networks(cls, allow: list[str]) -> list[str]:
        import ipaddress

        for index, text in enumerate(allow):
            try:
                ipaddress.ip_network(str(text), strict=False)
            except ValueError:
                raise KeyRuleError((index,), f"invalid network {text!r}: use an address or CIDR, e.g. 10.1.2.0/24") from None
        return allow

    def networks(self) -> tuple:
        import ipaddress

        return tuple(ipaddress.ip_network(str(text), strict=False) for text in self.allow)


class AgentConfig(_Model):
    agent: AgentSection = Field(default_factory=AgentSection)
    collector: CollectorSection
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    spool: SpoolSection = Field(default_factory=SpoolSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    guard: GuardSection = Field(default_factory=GuardSection)
    checks: list[Check] | None = None  # None or empty: fetch them from the collector

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # A YAML section whose keys are all commented out parses as null: read it as "defaults".
        if isinstance(data, Mapping):
            data = {
                key: {} if value is None and key in ("agent", "metrics", "spool", "schedule", "guard") else value
                for key, value in data.items()
            }
        return data

    @model_validator(mode="after")
    def _rules(self) -> AgentConfig:
        if self.checks:
            _unique_names(self.checks, ("checks",))
        elif not self.collector.fetch_checks:
            raise KeyRuleError(
                ("checks",), "no checks: list local checks or set collector.fetch_checks: true"
            )
        for index, check in enumerate(self.checks or ()):
            if self.schedule.jitter + check.timeout >= check.interval:
                raise KeyRuleError(
                    ("schedule", "jitter"),
                    f"jitter {format_duration(self.schedule.jitter)} + timeout "
                    f"{format_duration(check.timeout)} of checks.{index} must be less than its "
                    f"interval {format_duration(check.interval)}",
                )
        return self

    @property
    def agent_id(self) -> str:
        if not self.agent.id:
            raise ConfigError([("agent.id", f"not set: give agent.id, --id or env {ENV_AGENT_ID}")])
        return self.agent.id

    @property
    def local_checks(self) -> bool:
        return bool(self.checks)

    def spool_path(self) -> Path:
        return Path(self.spool.path.format(agent_id=self.agent_id))


# --- errors and loading ---------------------------------------------------------------------


def _message(error: Mapping[str, Any]) -> tuple[tuple, str]:
    """(extra path, message) for one pydantic error, in our words."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, KeyRuleError):
        return cause.path, str(cause)
    if isinstance(cause, Exception):
        return (), str(cause)
    if kind == "extra_forbidden":
        return (), "unknown key"
    if kind == "missing":
        return (), "required key missing"
    if kind == "union_tag_invalid":
        return ("type",), f"unknown check type {ctx.get('tag')!r} (one of {', '.join(CHECK_TYPES)})"
    if kind == "union_tag_not_found":
        return ("type",), f"required key missing (one of {', '.join(CHECK_TYPES)})"
    if kind == "literal_error":
        return (), f"{error['msg'].lower()}, got {error.get('input')!r}"
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None and "input" in error:
        return (), f"{_lower_first(error['msg'])}, got {value!r}"
    return (), _lower_first(error["msg"])


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors():
        # The discriminated union puts the tag ("http") into the location: drop it, it is no key.
        loc = [
            part
            for i, part in enumerate(error["loc"])
            if not (part in CHECK_TYPES and i > 0 and isinstance(error["loc"][i - 1], int))
        ]
        extra, message = _message(error)
        path = ".".join(str(part) for part in (*loc, *extra))
        problems.append((path, message))
    return problems


def parse_config(data: Any) -> AgentConfig:
    """Validate a parsed YAML document; raise ConfigError naming the key paths."""
    if not isinstance(data, Mapping):
        raise ConfigError([("", "the config must be a mapping of sections (agent, collector, ...)")])
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def parse_checks(data: Any) -> list[HttpCheck | IcmpCheck]:
    """Validate a list of check objects (assignments from the collector, or a config's checks:)."""
    try:
        return _CheckList.model_validate({"checks": data}).checks
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def resolve(
    config: AgentConfig,
    *,
    agent_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Fill in what comes from outside the file, and require what a running agent needs.

    1. agent id: `agent_id` (the --id flag), else env UPTIME_AGENT_ID, else agent.id;
    2. token: env UPTIME_AGENT_TOKEN, else collector.token, else the contents of collector.token_file;
    3. both must then be set.
    """
    env = os.environ if env is None else env
    problems: list[tuple[str, str]] = []

    new_id = agent_id or env.get(ENV_AGENT_ID) or config.agent.id
    if not new_id:
        problems.append(("agent.id", f"not set: give agent.id, --id or env {ENV_AGENT_ID}"))
    elif not AGENT_ID_RE.match(new_id):
        problems.append(("agent.id", f"invalid agent id {new_id!r}: use 1-64 of A-Z a-z 0-9 . _ -"))

    token = env.get(ENV_TOKEN) or config.collector.token
    if not token and config.collector.token_file:
        try:
            token = Path(config.collector.token_file).read_text().strip()
        except OSError as exc:
            problems.append(
                ("collector.token_file", f"cannot read {config.collector.token_file!r}: {exc.strerror}")
            )
        else:
            if not token:
                problems.append(("collector.token_file", f"{config.collector.token_file!r} is empty"))
    if not token and not config.collector.token_file:
        problems.append(
            ("collector.token", f"not set: give collector.token, collector.token_file or env {ENV_TOKEN}")
        )
    if problems:
        raise ConfigError(problems)
    return config.model_copy(
        update={
            "agent": config.agent.model_copy(update={"id": new_id}),
            "collector": config.collector.model_copy(update={"token": token, "token_file": None}),
        }
    )


def read_config_file(path: str | os.PathLike) -> AgentConfig:
    """Parse and validate a YAML file, without the outside overrides; errors name the file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([("", f"cannot read: {exc.strerror}")], source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"invalid YAML{at}: {problem}")], source) from None
    try:
        return parse_config(data if data is not None else {})
    except ConfigError as exc:
        raise exc.with_source(source) from None


def load_config(
    path: str | os.PathLike,
    *,
    agent_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Read, validate and resolve a config file for a running agent; raise ConfigError."""
    config = read_config_file(path)
    try:
        return resolve(config, agent_id=agent_id, env=env)
    except ConfigError as exc:
        raise exc.with_source(str(path)) from None

