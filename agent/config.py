"""The agent's YAML configuration: pydantic models that carry their defaults and their rules.

Unknown keys are errors (`extra="forbid"`), and every problem is reported as
`<file>: <key path>: <what is wrong>`, e.g. `config/agent.yml: checks.0.interval: invalid duration 'abc'`.
The `checks:` entries are the check definitions of `protocol.checks`, the same the collector
hands out (wire-protocol.md, GET /api/v1/assignments).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import BeforeValidator, Field, PlainValidator, ValidationError, field_validator, model_validator

from protocol.checks import (
    Check,
    ConfigError,
    ConfigModel,
    Duration,
    HttpCheck,
    IcmpCheck,
    KeyRuleError,
    parse_checks,
    positive,
    problems_of,
    unique_names,
)
from protocol.durations import format_duration, parse_duration, parse_size
from protocol.wire import MAX_BATCH

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
# Overrides metrics.listen, so that several agents on one host can share one config file.
ENV_METRICS_LISTEN = "UPTIME_AGENT_METRICS_LISTEN"
OPTION_METRICS_LISTEN = "--metrics-listen"

Size = Annotated[int, BeforeValidator(parse_size)]

# Used in file names ({agent_id} in spool.path) and metric labels: keep it to a safe alphabet.
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --- sections -------------------------------------------------------------------------------


class AgentSection(ConfigModel):
    id: str | None = None
    # The agent's Ed25519 key that signs its batches (PEM, mode 0600), made at first start;
    # `{agent_id}` is replaced. Default: agent-{agent_id}.key in the spool's folder.
    key_file: str | None = None
    # The client of `http` checks: `lean` (agent/probers/http_lean.py, asyncio and httptools: the
    # same probe at a fraction of the CPU) or `aiohttp` (agent/probers/http.py). Journeys always use aiohttp.
    http_client: str = "lean"

    @field_validator("http_client")
    @classmethod
    def _http_client(cls, name: str) -> str:
        if name not in ("lean", "aiohttp"):
            raise ValueError(f"invalid http_client {name!r}: use lean (the default) or aiohttp")
        return name

    @field_validator("id")
    @classmethod
    def _id(cls, agent_id: str | None) -> str | None:
        if agent_id is not None and not AGENT_ID_RE.match(agent_id):
            raise ValueError(f"invalid agent id {agent_id!r}: use 1-64 of A-Z a-z 0-9 . _ -")
        return agent_id

    @field_validator("key_file")
    @classmethod
    def _key_file(cls, path: str | None) -> str | None:
        if path is None:
            return path
        if not path.strip() or "\0" in path:
            raise ValueError("must be the path of the agent's key file")
        try:
            path.format(agent_id="x")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"invalid path {path!r}: the only placeholder is {{agent_id}}") from None
        return path


class CollectorSection(ConfigModel):
    url: str
    token: str | None = None
    token_file: str | None = None
    batch_size: int = Field(500, ge=1, le=MAX_BATCH)
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
        return positive(value)

    @model_validator(mode="after")
    def _one_token_source(self) -> CollectorSection:
        if self.token is not None and self.token_file is not None:
            raise KeyRuleError(("token_file",), "give either collector.token or collector.token_file, not both")
        return self


class MetricsSection(ConfigModel):
    # "" disables the metrics server. `run --metrics-listen HOST:PORT`, else env
    # UPTIME_AGENT_METRICS_LISTEN, overrides it: for several agents on one host from one file.
    listen: str = "127.0.0.1:9101"

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


class SpoolSection(ConfigModel):
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
        return positive(value)


@dataclass(frozen=True)
class Spread:
    """`schedule.spread`: a fixed window (seconds) or a share of each check's interval."""

    seconds: float = 0.0
    fraction: float | None = None

    def window(self, interval: float, probe_seconds: float) -> float:
        """The window a check's offset falls in: the spread, but never so late in the slot that a
        probe started on time could not finish inside it (interval minus the probe's duration)."""
        wanted = self.fraction * interval if self.fraction is not None else self.seconds
        return max(0.0, min(wanted, interval - probe_seconds))

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction is not None else format_duration(self.seconds)


def _spread_duration_or_fraction(value: object) -> Spread:
    if isinstance(value, Spread):
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1].strip()
        try:
            percent = float(text)
        except ValueError:
            percent = math.nan
        if not math.isfinite(percent) or not 0 <= percent <= 100:
            raise ValueError(f"invalid spread {value!r}: use a duration (30s) or a percentage of the interval (0% to 100%)")
        return Spread(fraction=percent / 100)
    try:
        return Spread(seconds=parse_duration(value))
    except ValueError:
        raise ValueError(f"invalid spread {value!r}: use a duration (30s) or a percentage of the interval (0% to 100%)") from None


SpreadSetting = Annotated[Spread, PlainValidator(_spread_duration_or_fraction)]


class ScheduleSection(ConfigModel):
    # Each probe starts a random 0..jitter after its scheduled time; the same bound for all checks.
    # Unlike spread it is random per probe, so the agents no longer probe a check at one instant.
    jitter: Duration = 0.0
    # Where in its slot each check is probed: a duration (`30s`) or a percentage of the check's
    # interval (`50%`). Every check gets a fixed offset in [0, spread) from a hash of its name,
    # the same on every agent with the same spread, so the agents still probe it together; it is
    # capped at the check's interval minus its timeout so that a probe finishes in its slot. 0 (the
    # default): every check at the start of its slot, all of them due at the same instant.
    spread: SpreadSetting = Spread()
    # Most probes running at once; more that are due wait, and one that cannot start within
    # max_lateness of its scheduled time is reported as a missed slot (never as a failure).
    max_in_flight: int = Field(2000, ge=1)
    # How late after its scheduled time (slot + offset) a probe may still start; later, or past
    # the end of its slot, its slot is counted in uptime_agent_missed_slots_total instead.
    max_lateness: Duration = 1.0

    @field_validator("max_lateness")
    @classmethod
    def _max_lateness(cls, value: float) -> float:
        return positive(value)


class GuardSection(ConfigModel):
    """SSRF guard (HTTP, journey, TCP checks and a DNS check's server): on by default for the checks the
    collector assigns, off for the agent's own.

    ```yaml
    guard:
      block_private: false    # default: on for assigned checks, off for local `checks:`;
                              # true: on for both; false: off (internal monitoring)
      allow: [10.0.0.0/8]     # optional: networks exempted while it is on (metadata never is)
    ```

    On, HTTP checks never connect to private, loopback, link-local, multicast, reserved,
    unspecified or cloud metadata addresses. Checks that come from the collector (GET
    /api/v1/assignments) are written by whoever administers the collector, not by the agent's
    operator, so by default they cannot reach the network the agent runs in; checks in the
    agent's own file are its operator's and stay unguarded unless `block_private: true`. The
    section sits at the top level of the agent's own file on purpose: an assigned check cannot
    switch the protection off. When on, every address an HTTP check connects to is judged at
    connect time, after name resolution, and again on each redirect hop
    (agent/probers/guard.py); a check whose every address is refused fails with the reason
    `blocked`. ICMP checks are not affected.
    """

    block_private: bool | None = None  # None: on for assigned checks, off for local ones
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

    def applies(self, *, assigned: bool) -> bool:
        """Whether HTTP checks are guarded: as set, else only those the collector assigned."""
        return self.block_private if self.block_private is not None else assigned


class AgentConfig(ConfigModel):
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
            unique_names(self.checks, ("checks",))
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

    def key_path(self) -> Path:
        """The agent's signing key: agent.key_file, else agent-<id>.key beside the spool."""
        if self.agent.key_file:
            return Path(self.agent.key_file.format(agent_id=self.agent_id))
        return self.spool_path().parent / f"agent-{self.agent_id}.key"

    def chain_path(self) -> Path:
        """Where the hash of the last batch the collector acknowledged is kept: beside the spool,
        whose folder the agent writes anyway (the key's may be read-only)."""
        return self.spool_path().parent / f"chain-{self.agent_id}.json"


def override_metrics_listen(
    config: AgentConfig, listen: str | None = None, env: Mapping[str, str] | None = None
) -> AgentConfig:
    """metrics.listen from --metrics-listen (`listen`), else env UPTIME_AGENT_METRICS_LISTEN, else
    the file; checked by the file's rule, a problem named after where the value came from. An
    empty variable counts as unset (as the agent's other variables); an empty option turns the
    server off, as "" does in the file."""
    env = os.environ if env is None else env
    if listen is not None:
        value, where = listen, OPTION_METRICS_LISTEN
    elif env.get(ENV_METRICS_LISTEN):
        value, where = env[ENV_METRICS_LISTEN], f"env {ENV_METRICS_LISTEN}"
    else:
        return config
    try:
        section = config.metrics.model_validate({**config.metrics.model_dump(), "listen": value})
    except ValidationError as exc:
        raise ConfigError([(where, message) for _, message in problems_of(exc)]) from None
    return config.model_copy(update={"metrics": section})


def parse_config(data: Any) -> AgentConfig:
    """Validate a parsed YAML document; raise ConfigError naming the key paths."""
    if not isinstance(data, Mapping):
        raise ConfigError([("", "the config must be a mapping of sections (agent, collector, ...)")])
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_of(exc)) from None


def resolve(
    config: AgentConfig,
    *,
    agent_id: str | None = None,
    env: Mapping[str, str] | None = None,
    metrics_listen: str | None = None,
) -> AgentConfig:
    """Fill in what comes from outside the file, and require what a running agent needs.

    1. agent id: `agent_id` (the --id flag), else env UPTIME_AGENT_ID, else agent.id;
    2. token: env UPTIME_AGENT_TOKEN, else collector.token, else the contents of collector.token_file;
    3. both must then be set;
    4. metrics.listen: `metrics_listen` (--metrics-listen), else env UPTIME_AGENT_METRICS_LISTEN.
    """
    env = os.environ if env is None else env
    problems: list[tuple[str, str]] = []
    try:
        config = override_metrics_listen(config, metrics_listen, env)
    except ConfigError as exc:
        problems.extend(exc.problems)

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
    metrics_listen: str | None = None,
) -> AgentConfig:
    """Read, validate and resolve a config file for a running agent; raise ConfigError."""
    config = read_config_file(path)
    try:
        return resolve(config, agent_id=agent_id, env=env, metrics_listen=metrics_listen)
    except ConfigError as exc:
        raise exc.with_source(str(path)) from None

