"""Policies: what a contract measures and how (components, round rule, target, maintenance
kinds, credit and claim rules), validated with pydantic and loaded from YAML presets.

A policy file is either a preset shipped in `collector/presets/<name>.yml` (usable by name from any
directory) or a YAML file of its own, which may start from a preset (`preset: nexon-vision`) and
override keys. Mappings are merged key by key; a key set to null is removed (falls back to its
default; `maintenance: {emergency: null}` removes that kind).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .durations import format_duration, parse_duration

__all__ = [
    "PolicyError", "Quorum", "LocalWindow", "MaintenanceKind", "Band", "NoCredit", "TieredPercentCredit",
    "HalfDayPerStartedHourCredit", "DayPerOutageDayCredit", "PerOutageIncrementCredit", "ProRataCredit",
    "Credit", "ClaimRule", "Policy", "load_policy", "list_presets", "check_intervals",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class PolicyError(ValueError):
    """A policy (or an input judged against it) is wrong; the message names the key or file."""


def _duration(value: object) -> float:
    if value is None:
        raise ValueError("a duration is required here")
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quorum(_Strict):
    """How agents' verdicts in one slot make a component's verdict (issue 3, "Round verdict")."""
    mode: Literal["all", "majority", "k_of_n"]
    min_reporting: int = Field(1, ge=1)
    k: int | None = Field(None, ge=1)
    expected_agents: int | None = Field(None, ge=1)
    agents: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Quorum":
        if self.mode == "k_of_n" and self.k is None:
            raise ValueError("mode k_of_n needs `k`")
        if self.agents is not None:
            if not self.agents:
                raise ValueError("`agents` is empty; leave it out to use the agents that report")
            if len(set(self.agents)) != len(self.agents):
                raise ValueError("`agents` lists an agent twice")
            if self.expected_agents is not None and self.expected_agents != len(self.agents):
                raise ValueError(f"`expected_agents` is {self.expected_agents} but `agents` lists {len(self.agents)}")
        n = len(self.agents) if self.agents is not None else self.expected_agents
        if self.k is not None and n is not None and self.k > n:
            raise ValueError(f"`k` ({self.k}) is larger than the number of expected agents ({n})")
        return self


class LocalWindow(_Strict):
    """A daily local-time window [start, end); end <= start means it crosses midnight.
    `days` are the weekdays on which the window opens (mon..sun); none = every day."""
    start: str
    end: str
    days: list[str] | None = None

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not isinstance(value, str) or not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a local time HH:MM (00:00 to 23:59)")
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        days = []
        for day in value:
            short = str(day).strip().lower()[:3]
            if short not in WEEKDAYS or str(day).strip().lower() not in (short, _full(short)):
                raise ValueError(f"{day!r} is not a weekday (mon, tue, wed, thu, fri, sat, sun)")
            days.append(short)
        if not days:
            raise ValueError("`days` is empty; leave it out for every day")
        return days

    @model_validator(mode="after")
    def _not_empty(self) -> "LocalWindow":
        if self.start == self.end:
            raise ValueError("window start equals its end; leave `window` out for any time of day")
        return self

    def minutes_of_day(self) -> tuple[int, int]:
        sh, sm = map(int, self.start.split(":"))
        eh, em = map(int, self.end.split(":"))
        return sh * 60 + sm, eh * 60 + em


def _full(short: str) -> str:
    return {"mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday",
            "fri": "friday", "sat": "saturday", "sun": "sunday"}[short]


def _after_start(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() == "any":
        return "any"
    try:
        return _duration(value)
    except ValueError as err:
        raise ValueError(f"{err} (give a duration such as 24h, or any for no limit)") from None


# How long after its start an announcement may still be recorded: a duration, or "any" (no limit).
AfterStart = Annotated[Union[Literal["any"], float], BeforeValidator(_after_start)]


class MaintenanceKind(_Strict):
    """One kind of maintenance a contract accepts, and the rules an announcement must keep.

    Notice is judged from when the collector recorded the announcement (`recorded_at`), or from
    the operator's stated earlier time where the policy says `trust_stated_notice`:
      min_notice                 at least this long before the start (when it is required:
                                 only for announcements longer than `notice_required_over`, if set);
      notice_after_start_within  a contract that allows notice after the fact: the announcement may
                                 be recorded up to this long after the start ("any": no limit);
      otherwise                  no later than the start (maintenance that needs no minimum notice
                                 is still announced before it happens).
    Contested readings of a contract's table are options with a default:
      over_max_continuous        what an announcement longer than `max_continuous` excludes:
                                 `up_to_max` (from its start until max_continuous has passed) or
                                 `nothing`."""
    min_notice: Duration = 0.0
    notice_required_over: Duration | None = None
    notice_after_start_within: AfterStart | None = None
    window: LocalWindow | None = None
    max_continuous: Duration | None = None
    over_max_continuous: Literal["up_to_max", "nothing"] = "up_to_max"
    monthly_budget: Duration | None = None
    note: str = ""

    @model_validator(mode="after")
    def _notice_rules(self) -> "MaintenanceKind":
        if self.notice_after_start_within is not None and self.min_notice > 0:
            raise ValueError("notice_after_start_within allows notice after the start, so min_notice must be 0 "
                             f"(it is {format_duration(self.min_notice)})")
        return self


class Band(_Strict):
    """A credit band: `percent` credit when availability >= `at_least` (None = any lower value)."""
    at_least: float | None
    percent: float = Field(ge=0)


class NoCredit(_Strict):
    type: Literal["none"]
    note: str = ""


class TieredPercentCredit(_Strict):
    """Numezis §7: a percentage of the month's fees by availability band, below `guaranteed_percent`."""
    type: Literal["tiered_percent"]
    bands: list[Band] = Field(default_factory=lambda: [
        Band(at_least=95.0, percent=10.0), Band(at_least=90.0, percent=25.0), Band(at_least=None, percent=50.0)])
    note: str = ""

    @field_validator("bands")
    @classmethod
    def _ordered(cls, bands: list[Band]) -> list[Band]:
        if not bands:
            raise ValueError("at least one band is needed")
        floors = [b.at_least for b in bands]
        if any(f is None for f in floors[:-1]):
            raise ValueError("only the last band may leave `at_least` out")
        numbers = [f for f in floors if f is not None]
        if numbers != sorted(numbers, reverse=True):
            raise ValueError("bands must be listed from the highest `at_least` down")
        return bands


class HalfDayPerStartedHourCredit(_Strict):
    """Haivision VCMS §5: half a day of fees per hour of Downtime or fraction, at most one month."""
    type: Literal["half_day_per_started_hour"]
    days_per_started_hour: float = Field(0.5, gt=0)
    note: str = ""


class DayPerOutageDayCredit(_Strict):
    """Haivision Streaming §7-8: one day of fees per local day with an Outage, at most `max_days`."""
    type: Literal["day_per_outage_day"]
    max_days: int = Field(30, ge=0)
    note: str = ""


class PerOutageIncrementCredit(_Strict):
    """Nexcess: `percent_per_increment` for each complete `increment` of each outage, capped."""
    type: Literal["per_outage_increment"]
    increment: Duration = 900.0
    percent_per_increment: float = Field(5.0, ge=0)
    max_percent: float = Field(100.0, ge=0)
    note: str = ""

    @field_validator("increment")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("increment must be longer than 0")
        return value


class ProRataCredit(_Strict):
    """NexGen §3(c)-(d) and §4: rebate N / T of the fees, capped; termination after bad months."""
    type: Literal["pro_rata"]
    max_percent: float = Field(100.0, ge=0)
    termination_after_months: int | None = Field(3, ge=1)
    note: str = ""


Credit = Annotated[
    Union[NoCredit, TieredPercentCredit, HalfDayPerStartedHourCredit, DayPerOutageDayCredit,
          PerOutageIncrementCredit, ProRataCredit],
    Field(discriminator="type"),
]
_CREDIT_TAGS = ("none", "tiered_percent", "half_day_per_started_hour", "day_per_outage_day",
                "per_outage_increment", "pro_rata")


class ClaimRule(_Strict):
    """By when a credit must be claimed: `days` after the period ends (calendar or business
    days, local), or after the outage ends; `none` when the contract names no deadline."""
    type: Literal["none", "after_period_calendar_days", "after_period_business_days", "after_outage_end"] = "none"
    days: int | None = Field(None, ge=0)
    note: str = ""

    @model_validator(mode="after")
    def _days(self) -> "ClaimRule":
        if self.type != "none" and self.days is None:
            raise ValueError(f"claim type {self.type} needs `days`")
        return self


class Policy(_Strict):
    """One measured service under one contract."""
    name: str = Field(min_length=1)
    description: str = ""
    components: list[str] = Field(min_length=1)
    interval: Duration
    quorum: Quorum
    compose: Literal["any", "all"] = "any"
    min_duration: Duration = 0.0
    timezone: str = "UTC"
    target_percent: float | None = Field(None, ge=0, le=100)
    guaranteed_percent: float | None = Field(None, ge=0, le=100)
    requires_target: bool = False
    commenced: datetime | None = None
    maintenance: dict[str, MaintenanceKind] = Field(default_factory=dict)
    # Whether an operator's stated announcement time (earlier than the collector recorded it, e.g.
    # an email sent before) counts for notice. Off by default: a stated time is not evidence the
    # monitor holds, and back-dating it would turn a missed month into a met one.
    trust_stated_notice: bool = False
    # Whether a DEGRADED round (the quorum saw the service up but slower than its checks'
    # degraded_after) counts as down for outages. Off by default: most contracts count only
    # unavailability; one whose downtime includes service that "does not meet the defined
    # operating criteria" (Numezis SaaS SLA §1) turns it on.
    degraded_counts_as_down: bool = False
    credit: Credit = Field(default_factory=lambda: NoCredit(type="none"))
    claim: ClaimRule = Field(default_factory=ClaimRule)

    @field_validator("components")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a component is listed twice")
        if any(not c for c in value):
            raise ValueError("a component name is empty")
        return value

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("interval must be longer than 0")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Zurich)") from None
        return value

    @field_validator("commenced")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("commenced needs a UTC offset (e.g. 2026-10-15T09:00:00Z)")
        return value.astimezone(timezone.utc)

    @model_validator(mode="after")
    def _cross_field(self) -> "Policy":
        if isinstance(self.credit, TieredPercentCredit) and self.guaranteed_percent is None:
            raise ValueError("credit type tiered_percent needs `guaranteed_percent`")
        if self.claim.type == "after_outage_end" and not isinstance(self.credit, PerOutageIncrementCredit):
            raise ValueError("claim type after_outage_end goes with credit type per_outage_increment")
        return self

    # -- derived -------------------------------------------------------------------------
    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def content_hash(self) -> str:
        """The rule version: sha256 of the policy's canonical JSON, first 16 hex digits."""
        data = self.model_dump(mode="json")
        if not data["degraded_counts_as_down"]:
            # its default changes nothing that was judged before it existed: a policy without it
            # keeps its rule version (stored windows, exported evidence bundles)
            del data["degraded_counts_as_down"]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def with_overrides(self, **overrides: Any) -> "Policy":
        """A copy with keys replaced (mappings merged key by key; None removes a key)."""
        if not overrides:
            return self
        data = _merge(self.model_dump(mode="python"), overrides)
        return _validate(data, f"policy '{self.name}' with overrides")

    def require_target(self) -> float | None:
        """The target; a PolicyError when the preset lost it and nobody set it."""
        if self.target_percent is None and self.requires_target:
            raise PolicyError(
                f"policy '{self.name}': the contract page lost the availability number this policy "
                "needs, so there is no target to measure against; set `target_percent` (for example a "
                f"YAML file with `preset: {self.name}` and `target_percent: 99.9`)")
        return self.target_percent


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def _loc(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    # pydantic puts the union tag into the path ("credit.pro_rata.max_percent"): drop it
    if len(parts) >= 2 and parts[0] == "credit" and parts[1] in _CREDIT_TAGS:
        del parts[1]
    return ".".join(parts) or "(top level)"


def _validate(data: Any, source: str) -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy must be a YAML mapping of keys, not {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msg = msg.removeprefix("Value error, ")
            lines.append(f"{_loc(err['loc'])}: {msg}")
        raise PolicyError(f"{source}: " + "; ".join(lines)) from None


def _presets_dir():
    return resources.files("collector") / "presets"


def list_presets() -> list[str]:
    """The names of the shipped presets."""
    return sorted(p.name[:-4] for p in _presets_dir().iterdir() if p.name.endswith(".yml"))


def _read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{source}{where}: not valid YAML: {problem}") from None


def _preset_data(name: str) -> dict:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name or ""):
        raise PolicyError(f"unknown preset {name!r}; presets: {', '.join(list_presets())}")
    # a copy: callers merge into it, and the parsed preset is shared by every policy using it
    return copy.deepcopy(_parsed_preset(name))


@functools.lru_cache(maxsize=None)
def _parsed_preset(name: str) -> dict:
    """A shipped preset, parsed once per process: a collector with thousands of contract
    policies would otherwise spend most of its start-up parsing the same YAML again."""
    resource = _presets_dir() / f"{name}.yml"
    if not resource.is_file():
        raise PolicyError(f"unknown preset {name!r}; presets: {', '.join(list_presets())}")
    data = _read_yaml(resource.read_text(encoding="utf-8"), f"preset {name}")
    if not isinstance(data, dict):
        raise PolicyError(f"preset {name}: not a mapping")
    return data


def load_policy(name_or_path: str | Path, **overrides: Any) -> Policy:
    """A preset by name (`nexon-vision`) or a YAML policy file, with keyword overrides applied.

    1. A path that exists, or that ends in .yml/.yaml, is read as a file; anything else is a preset.
    2. A file may name `preset:` to start from; its other keys override the preset's.
    3. Keyword overrides are applied last, then the result is validated as a whole.
    """
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yml", ".yaml") or path.is_file() or "/" in text:
        source = text
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{source}: cannot read policy file: {exc.strerror or exc}") from None
        data = _read_yaml(raw, source)
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: a policy must be a YAML mapping of keys")
        if "preset" in data:
            preset = data.pop("preset")
            if not isinstance(preset, str):
                raise PolicyError(f"{source}: preset: must be a preset name ({', '.join(list_presets())})")
            try:
                base = _preset_data(preset)
            except PolicyError as exc:
                raise PolicyError(f"{source}: preset: {exc}") from None
            data = _merge(base, data)
    else:
        source = f"preset {text}"
        data = _preset_data(text)
    if overrides:
        data = _merge(data, overrides)
        source += " with overrides"
    return _validate(data, source)


def check_intervals(policy: Policy, intervals_by_check: dict[str, float]) -> None:
    """Refuse a policy whose components are probed at different intervals (issue 3: "Components of
    one policy share one interval"). Checks that are not components are ignored."""
    found = {c: float(intervals_by_check[c]) for c in policy.components if c in intervals_by_check}
    if not found:
        return
    if len(set(found.values())) > 1 or any(v != policy.interval for v in found.values()):
        listed = ", ".join(f"{c} every {format_duration(v)}" for c, v in found.items())
        raise PolicyError(
            f"policy '{policy.name}' mixes intervals: its components must all be probed every "
            f"{format_duration(policy.interval)} (the policy's interval), but: {listed}")
