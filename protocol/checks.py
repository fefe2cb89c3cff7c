"""Check definitions: what a check is, as the collector hands it to agents
(GET /api/v1/assignments, wire-protocol.md) and as an agent's own `checks:` lists it.

pydantic models carry their defaults and their rules; unknown keys are errors (`extra="forbid"`),
and every problem is a (key path, message) pair, e.g. `checks.0.interval: invalid duration 'abc'`.
Both the agent and the collector validate a check with `parse_checks`, so that an agent accepts
whatever the collector accepted.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocol.durations import format_duration, parse_duration

__all__ = [
    "CHECK_TYPES",
    "ConfigModel",
    "Check",
    "ConfigError",
    "Duration",
    "HttpCheck",
    "IcmpCheck",
    "KeyRuleError",
    "parse_checks",
    "positive",
    "problems_of",
    "unique_names",
]

Duration = Annotated[float, BeforeValidator(parse_duration)]

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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


class ConfigModel(BaseModel):
    """Frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {format_duration(value)}")
    return value


class _CheckBase(ConfigModel):
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
        return positive(interval)

    @field_validator("timeout", check_fields=False)
    @classmethod
    def _timeout_below_interval(cls, timeout: float, info) -> float:
        positive(timeout)
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
        return positive(value)

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


def unique_names(checks: Sequence[HttpCheck | IcmpCheck], prefix: tuple = ()) -> None:
    first_seen: dict[str, int] = {}
    for index, check in enumerate(checks):
        if check.name in first_seen:
            raise KeyRuleError(
                (*prefix, index, "name"),
                f"duplicate check name {check.name!r} (first used by {'.'.join(map(str, (*prefix, first_seen[check.name])))})",
            )
        first_seen[check.name] = index


class _CheckList(ConfigModel):
    checks: list[Check]

    @model_validator(mode="after")
    def _unique(self) -> _CheckList:
        unique_names(self.checks, ("checks",))
        return self


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


def problems_of(exc: ValidationError) -> list[tuple[str, str]]:
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


def parse_checks(data: Any) -> list[HttpCheck | IcmpCheck]:
    """Validate a list of check objects (assignments from the collector, or a config's checks:)."""
    try:
        return _CheckList.model_validate({"checks": data}).checks
    except ValidationError as exc:
        raise ConfigError(problems_of(exc)) from None
