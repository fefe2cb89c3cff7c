"""Collector configuration: one YAML file, validated whole at start.

Defaults and validation live with the types (as blackbox_exporter's config.go); unknown keys are
errors, and every error names the key path, so a typo never silently becomes a default.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

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

from protocol.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]

AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CHECK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class ConfigError(Exception):
    """A configuration the collector refuses to start with; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentEntry(_Strict):
    id: str = Field(pattern=AGENT_ID_PATTERN)
    # A plaintext token is for local setups and the demo; production configs give the hash only.
    token: str | None = Field(default=None, min_length=16)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # The agent's Ed25519 public key, "ed25519:<base64 of 32 bytes>" (docs/evidence.md, "Keys"),
    # registered and logged at start. Replacing it registers the new key; the old one stays
    # registered, so the batches it signed stay verifiable.
    public_key: str | None = None
    # Refuse this agent's unsigned batches; unset: evidence.require_signatures decides.
    require_signatures: bool | None = None

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from evidence.keys import BadKey, parse_public_key
        try:
            parse_public_key(v, "public_key")
        except BadKey as err:
            raise ValueError(str(err).removeprefix("public_key: ")) from None
        return v

    @model_validator(mode="after")
    def _one_token(self) -> "AgentEntry":
        if self.token and self.token_sha256:
            raise ValueError("give either token or token_sha256, not both")
        return self

    @property
    def token_hash(self) -> str | None:
        if self.token:
            return hash_token(self.token)
        return self.token_sha256


class OutageRule(_Strict):
    """A check's own outage rule: a round FAILED when the quorum failed, a window when long enough."""

    quorum: Literal["all", "majority", "k_of_n"] = "all"
    k: int | None = Field(default=None, ge=1)
    min_reporting: int = Field(default=1, ge=1)
    min_duration: Duration = 0.0

    @model_validator(mode="after")
    def _k_needed(self) -> "OutageRule":
        if self.quorum == "k_of_n" and self.k is None:
            raise ValueError("quorum k_of_n needs k")
        return self


# A check's fields that only the collector reads; an agent receives the rest.
COLLECTOR_ONLY_FIELDS = ("agents", "outage", "display_name", "group", "status_page")


class CheckEntry(BaseModel):
    """A check as the collector knows it. Prober fields (url, host, ...) are validated by the
    agent's own check model, so both sides accept exactly the same checks."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=CHECK_NAME_PATTERN)
    type: str  # one of protocol.checks.CHECK_TYPES; the prober's own model validates the rest
    interval: Duration
    agents: list[str] | None = None  # None: every configured agent
    outage: OutageRule = OutageRule()
    # the name the status page shows (default: the check's name)
    display_name: str | None = Field(default=None, min_length=1, max_length=100)
    # services with the same group are shown together on the status page, as their worst member
    group: str | None = Field(default=None, min_length=1, max_length=100)
    # a service of its own on the status page: true, false, or unset (yes unless a contract policy has it as a component)
    status_page: bool | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        from protocol.checks import CHECK_TYPES

        if v not in CHECK_TYPES:
            raise ValueError(f"unknown check type {v!r} (one of {', '.join(CHECK_TYPES)})")
        return v

    @field_validator("interval")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("interval must be positive")
        return v

    def prober_spec(self) -> dict[str, Any]:
        """The check as an agent receives it (GET /api/v1/assignments)."""
        spec = self.model_dump(mode="json", exclude=set(COLLECTOR_ONLY_FIELDS))
        spec.update(self.model_extra or {})
        return spec


class PolicyEntry(_Strict):
    """A contract policy evaluated live: a preset (or policy file) applied to configured checks."""

    name: str = Field(pattern=CHECK_NAME_PATTERN)
    preset: str
    components: list[str] | None = None
    target_percent: float | None = Field(default=None, gt=0, le=100)
    commenced: str | None = None
    timezone: str | None = None
    # the name the status page shows (default: the policy's name)
    display_name: str | None = Field(default=None, min_length=1, max_length=100)
    # services with the same group are shown together on the status page, as their worst member
    group: str | None = Field(default=None, min_length=1, max_length=100)
    # false leaves the service off the status page (its reports, API and badges stay)
    status_page: bool = True


NOTIFICATION_EVENTS = ("outage.verified", "outage.resolved", "maintenance.started", "maintenance.ended", "budget.threshold")


class NotificationSink(_Strict):
    """A notification receiver: a signed webhook (`kind: webhook`, bodies signed with HMAC-SHA256
    under `secret`), or Apprise URLs (`kind: apprise`: email, ntfy, PagerDuty, Teams, ...)."""

    name: str = Field(pattern=AGENT_ID_PATTERN)  # The notifier's name, as `notify test NAME` takes it.
    # `webhook`: a signed JSON POST to `url`; `apprise`: a message for people to each of `urls`.
    kind: Literal["webhook", "apprise"] = "webhook"
    # kind webhook: where the webhook is posted.
    url: str | None = Field(default=None, pattern=r"^https?://")
    # kind webhook: key of the X-Uptime-Signature HMAC-SHA256 of each body.
    secret: str | None = Field(default=None, min_length=16)
    # kind webhook: `json`, or `slack` (a text field for incoming webhooks).
    format: Literal["json", "slack"] = "json"
    # kind apprise: Apprise URLs (mailto://, ntfy://, pagerduty://, json://, ...); never shown
    # with their passwords or tokens.
    urls: list[str] = []
    events: list[Literal[NOTIFICATION_EVENTS]] = list(NOTIFICATION_EVENTS)  # type: ignore[valid-type]
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "NotificationSink":
        given = self.model_fields_set
        if self.kind == "webhook":
            for key in ("url", "secret"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: required for kind webhook")
            if self.urls:
                raise ValueError("urls: only for kind apprise (a webhook has one url)")
        else:
            for key in ("url", "secret", "format"):
                if key in given:
                    raise ValueError(f"{key}: only for kind webhook (give Apprise URLs as urls)")
            if not self.urls:
                raise ValueError("urls: kind apprise needs at least one Apprise URL")
            for i, url in enumerate(self.urls):
                problem = apprise_url_problem(url)
                if problem:
                    raise ValueError(f"urls.{i}: {problem}")
        return self


class _Mute(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def apprise_url_problem(url: str) -> str | None:
    """Why Apprise cannot use this URL (naming only its scheme), or None."""
    if "://" not in url:
        return "not an Apprise URL (write e.g. mailto://, ntfy://, pagerduty://, json://)"
    scheme = url.split("://", 1)[0]
    from apprise import Apprise  # only for configs that use it: loading its plugins takes a while

    # Apprise logs a URL it cannot read as written, password and all: not while checking one
    quiet = logging.getLogger("apprise")
    mute = _Mute()
    quiet.addFilter(mute)
    try:
        instance = Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:  # noqa: BLE001
        instance = None
    finally:
        quiet.removeFilter(mute)
    if not instance:
        return f"Apprise cannot use this {scheme}:// URL (unknown scheme, or a required part is missing or invalid)"
    return None


class Evaluation(_Strict):
    interval: Duration = 1.0
    # How long after a slot ends the collector waits for late reports before a missing agent
    # makes the round UNKNOWN. Later results still arrive and re-evaluate the round.
    grace: Duration = 5.0
    # How often the month-to-date report of every policy is recomputed (gauges, budget alerts,
    # maintenance notifications).
    status_interval: Duration = 30.0
    # Shares of the month's downtime budget at which a budget.threshold notification is sent.
    budget_thresholds: list[float] = Field(default=[0.5, 0.8, 1.0])
    # Policies are split into this many shards, each evaluated by one collector at a time (the
    # holder of its lease), so that several collectors on one database share the evaluation.
    # Every collector on a database must use the same number.
    shards: int = Field(default=16, ge=1, le=1024)


class RateLimit(_Strict):
    # An agent ships a batch about once a second and a heartbeat every few; 20/s with a burst of
    # 100 leaves room for a spool replay after an outage while stopping a flood.
    requests_per_second: float = Field(default=20.0, gt=0)
    burst: int = Field(default=100, ge=1)


class PublicRateLimit(RateLimit):
    # Reports, claims and status pages computed for anonymous readers, per client address: a
    # person browsing, or a script fetching a year of reports, stays under it; a flood gets 429.
    requests_per_second: float = Field(default=5.0, gt=0)
    burst: int = Field(default=20, ge=1)


class AuthFailureLimit(RateLimit):
    # Wrong tokens per client address: past the burst, one more try each 1/rate seconds, so
    # guessing a token (or the admin token) is slowed to a crawl.
    requests_per_second: float = Field(default=1.0, gt=0)
    burst: int = Field(default=10, ge=1)


class Retention(_Strict):
    # Raw results are summarised per round and deleted after this long; summaries and windows are
    # kept for good. It must exceed ingest.max_result_age, so that no late result can arrive for
    # a slot that was already summarised.
    raw: Duration = 90 * 86400.0
    interval: Duration = 600.0


class Ingest(_Strict):
    # Results older than this are refused: nothing evaluates them any more, and a wildly old
    # timestamp is likelier a broken clock than a replay (the agent spool keeps 7 days by default).
    max_result_age: Duration = 35 * 86400.0
    # A slot further in the future than this means the agent's clock runs ahead.
    max_future_skew: Duration = 30.0


class Evidence(_Strict):
    # Refuse unsigned batches of every agent (an agent's own require_signatures overrides it).
    require_signatures: bool = False
    # The collector's Ed25519 key that signs the log's checkpoints: made on first start (mode
    # 0600, docs/evidence.md "Keys"). Collectors sharing one database share one log, so give them
    # the same key file. Relative paths are read from the config file's folder; unset, it is
    # `log.key` beside a SQLite database, else `data/log.key`.
    log_key_file: str | None = None
    # The log's name in its checkpoints and verifier key (C2SP signed-note key name: no spaces,
    # no "+"); unset: the host of public_url followed by "/log", else "uptime-collector/log".
    origin: str | None = Field(default=None, pattern=r"^[!-*,-~]{1,200}$")


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class CollectorConfig(_Strict):
    listen: Listen = Listen()
    database_url: str = "sqlite+aiosqlite:///data/collector.sqlite"
    public_reads: bool = True
    admin_token: str | None = Field(default=None, min_length=16)
    # The address people reach the collector at, for links in notifications.
    public_url: str = Field(default="", pattern=r"^(https?://.*)?$")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    evaluation: Evaluation = Evaluation()
    rate_limit: RateLimit = RateLimit()
    public_rate_limit: PublicRateLimit = PublicRateLimit()
    auth_failure_limit: AuthFailureLimit = AuthFailureLimit()
    ingest: Ingest = Ingest()
    evidence: Evidence = Evidence()
    retention: Retention = Retention()
    # Each evaluation shard is judged by one replica at a time: the holder of its lease, renewed
    # every evaluation tick; another replica takes it over once it expires (several collectors,
    # one database). At least three evaluation intervals.
    lease_ttl: Duration = 10.0
    # An agent whose clock is off by more than this is flagged (metric and agents list): its slots
    # would not line up with the other vantage points', and the contracts' rounds need every
    # agent to probe at the same moment.
    max_clock_offset: Duration = 2.0
    agents: list[AgentEntry] = []
    checks: list[CheckEntry] = []
    policies: list[PolicyEntry] = []
    notifications: list[NotificationSink] = []

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        # Only the drivers the package installs: anything else would fail deep in SQLAlchemy.
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme == "sqlite":
            raise ValueError(f"{url!r}: write sqlite+aiosqlite:///PATH (the collector uses the asyncio driver)")
        if scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
            rest = url.split("://", 1)[1]
            raise ValueError(f"write postgresql+asyncpg://{rest.split('@')[-1] if '@' in rest else rest} "
                             "(with your user and password; the collector uses the asyncpg driver)")
        if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(f"unsupported database {scheme or url!r}: use sqlite+aiosqlite:///PATH or "
                             "postgresql+asyncpg://USER@HOST/DATABASE")
        return url

    @model_validator(mode="after")
    def _cross_references(self) -> "CollectorConfig":
        agent_ids = [a.id for a in self.agents]
        _unique(agent_ids, "agents", "id")
        _unique([c.name for c in self.checks], "checks", "name")
        _unique([p.name for p in self.policies], "policies", "name")
        check_names = {c.name for c in self.checks}
        for i, p in enumerate(self.policies):
            if p.name in check_names:
                # every check is also evaluated as a policy of its own name
                raise ValueError(f"policies.{i}.name: {p.name!r} is already the name of a check")
        _unique([n.name for n in self.notifications], "notifications", "name")
        if self.retention.raw <= self.ingest.max_result_age:
            raise ValueError("retention.raw: must be longer than ingest.max_result_age, or a late result "
                             "could arrive for a slot already summarised")
        for i, check in enumerate(self.checks):
            for agent in check.agents or []:
                if agent not in agent_ids:
                    raise ValueError(f"checks.{i}.agents: unknown agent {agent!r} (agents: {', '.join(agent_ids) or 'none'})")
        return self

    def requires_signature(self, agent_id: str) -> bool:
        """Whether the agent's batches must be signed: its own setting, else the global one."""
        for a in self.agents:
            if a.id == agent_id and a.require_signatures is not None:
                return a.require_signatures
        return self.evidence.require_signatures

    def agents_of(self, check: CheckEntry) -> list[str]:
        return list(check.agents) if check.agents is not None else [a.id for a in self.agents]


def _unique(names: list[str], section: str, key: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{section}.{i}.{key}: duplicate {name!r}")
        seen.add(name)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def admin_token_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison; bytes, because compare_digest refuses a str with characters
    outside ASCII (a stray "é" in a header must be a 401, not a 500)."""
    return bool(expected and given) and hmac.compare_digest(given.encode(), expected.encode())


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        # cross-field rules name their own key path in the message
        lines.append(f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> CollectorConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = CollectorConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err)) from None
    _validate_prober_specs(config, source)
    return config


def _validate_prober_specs(config: CollectorConfig, source: str) -> None:
    """Agents must accept what the collector hands them, so both validate with the agent's model."""
    from protocol.checks import ConfigError as AgentConfigError
    from protocol.checks import parse_checks

    for i, check in enumerate(config.checks):
        try:
            parse_checks([check.prober_spec()])
        except AgentConfigError as err:
            lines = []
            for path, message in err.problems:
                path = path.removeprefix("checks.0").lstrip(".")
                lines.append(f"{source}: checks.{i}{'.' + path if path else ''}: {message}")
            raise ConfigError("\n".join(lines)) from None


def load_config(path: str | os.PathLike[str]) -> CollectorConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(f"{p}: cannot read config: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{p}: {where}not valid YAML: {getattr(err, 'problem', err)}") from None
    return anchored(parse_config(data, str(p)), p.parent)


def anchored(config: CollectorConfig, folder: Path) -> CollectorConfig:
    """The config with a relative SQLite path resolved against the config file's folder, so that
    `report --config` run from another folder reads the same database as `serve`."""
    key_file = config.evidence.log_key_file
    if key_file and not Path(key_file).is_absolute():
        config = config.model_copy(update={"evidence": config.evidence.model_copy(
            update={"log_key_file": str((folder / key_file).resolve())})})
    prefix = "sqlite+aiosqlite:///"
    url = config.database_url
    if not url.startswith(prefix):
        return config
    path, sep, query = url[len(prefix):].partition("?")
    if not path or path == ":memory:" or path.startswith("/") or path.startswith("file:"):
        return config
    return config.model_copy(update={"database_url": f"{prefix}{(folder / path).resolve()}{sep}{query}"})
