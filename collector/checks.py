"""The check set and the contract policies: provisioned from the config file, changeable through
the admin API (issue 4, "Central check distribution"; "Admin actions ... change checks, policies").

A check given through the API is validated exactly as one in the config file: the collector's
CheckEntry, then the agent's own check model (agents must accept what they are handed), then the
references (assigned agents exist; a contract policy's intervals still fit its components).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from pydantic import ValidationError

from collector.config import CheckEntry, CollectorConfig, ConfigError, PolicyEntry
from collector.db import Check, ContractPolicy
from collector.errors import describe
from collector.rules.policy import Policy, PolicyError, check_intervals, load_policy


class CheckError(Exception):
    """A check the collector refuses; the message names the field (`url: ...`)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class CheckSet:
    """The checks in force, and the removed ones whose late results are still accepted."""

    active: dict[str, CheckEntry]
    removed: dict[str, tuple[CheckEntry, datetime]]
    source: dict[str, str]  # name -> "config" | "api"
    updated: dict[str, datetime]


def config_hash(entry: CheckEntry | PolicyEntry) -> str:
    return hashlib.sha256(json.dumps(entry_json(entry), sort_keys=True).encode()).hexdigest()


# How the status page shows an entry; left out of the stored entry while unset, so that an entry
# written before these existed keeps its hash.
_PRESENTATION_FIELDS = ("display_name", "group", "status_page")


def entry_json(entry: CheckEntry | PolicyEntry) -> dict[str, Any]:
    data = entry.model_dump(mode="json")
    data.update(entry.model_extra or {})
    for key in _PRESENTATION_FIELDS:
        if key in data and data[key] == type(entry).model_fields[key].default:
            del data[key]
    return data


def row_of(entry: CheckEntry, config: CollectorConfig) -> dict[str, Any]:
    """The database row of a check (without config_hash: the caller decides its provenance)."""
    return {"name": entry.name, "type": entry.type, "interval_seconds": entry.interval,
            "spec": entry.prober_spec(), "agents": config.agents_of(entry), "entry": entry_json(entry)}


def provisioned_rows(config: CollectorConfig) -> list[dict[str, Any]]:
    return [dict(row_of(c, config), config_hash=config_hash(c)) for c in config.checks]


def entry_of(row: Check) -> CheckEntry:
    if row.entry is not None:
        return CheckEntry.model_validate(row.entry)
    # a row written before checks had entries (migration 0004): rebuilt from what agents receive
    return CheckEntry.model_validate({**row.spec, "agents": row.agents})


def check_set(rows: Iterable[Check]) -> CheckSet:
    active: dict[str, CheckEntry] = {}
    removed: dict[str, tuple[CheckEntry, datetime]] = {}
    source: dict[str, str] = {}
    updated: dict[str, datetime] = {}
    for row in rows:
        entry = entry_of(row)
        if row.removed_at is None:
            active[row.name] = entry
        else:
            removed[row.name] = (entry, row.removed_at)
        source[row.name] = "api" if row.config_hash is None and row.entry is not None else "config"
        updated[row.name] = row.updated_at
    return CheckSet(active, removed, source, updated)


def parse_check(name: str, data: Any, *, agents: Iterable[str]) -> CheckEntry:
    """A check from an API request body; `name` comes from the path."""
    if not isinstance(data, dict):
        raise CheckError("body: expected a JSON object describing the check")
    if "name" in data and data["name"] != name:
        raise CheckError(f"name: {data['name']!r} differs from the name in the path ({name!r})")
    try:
        entry = CheckEntry.model_validate({**data, "name": name})
    except ValidationError as err:
        raise CheckError(describe(err)) from None
    from protocol.checks import ConfigError as AgentConfigError
    from protocol.checks import parse_checks

    try:
        parse_checks([entry.prober_spec()])
    except AgentConfigError as err:
        raise CheckError("; ".join(f"{path.removeprefix('checks.0').lstrip('.') or 'body'}: {message}"
                                   for path, message in err.problems)) from None
    known = set(agents)
    for i, agent in enumerate(entry.agents or []):
        if agent not in known:
            raise CheckError(f"agents[{i}]: unknown agent {agent!r} (agents: {', '.join(sorted(known)) or 'none'})")
    return entry


def check_policies_allow(entry: CheckEntry, contracts: Iterable[Policy], checks: dict[str, CheckEntry]) -> None:
    """A contract policy's components must keep intervals its rule can use (e.g. a 6-minute poll
    contract cannot be fed by a check that runs every 10 minutes)."""
    for policy in contracts:
        if entry.name not in policy.components:
            continue
        intervals = {c: (entry.interval if c == entry.name else checks[c].interval)
                     for c in policy.components if c in checks or c == entry.name}
        try:
            check_intervals(policy, intervals)
        except PolicyError as err:
            raise CheckError(f"interval: policy {policy.name!r}: {err}", 409) from None


# --- contract policies ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicySet:
    active: dict[str, PolicyEntry]
    source: dict[str, str]


def provisioned_policy_rows(config: CollectorConfig) -> list[dict[str, Any]]:
    return [{"name": p.name, "entry": entry_json(p), "config_hash": config_hash(p)} for p in config.policies]


def policy_set(rows: Iterable[ContractPolicy]) -> PolicySet:
    active = {r.name: PolicyEntry.model_validate(r.entry) for r in rows if r.removed_at is None and r.entry is not None}
    source = {r.name: ("api" if r.config_hash is None else "config") for r in rows}
    return PolicySet(active, source)


def policy_for_entry(entry: PolicyEntry, checks: dict[str, CheckEntry], index: int) -> Policy:
    overrides: dict[str, Any] = {"name": entry.name}
    for key in ("components", "target_percent", "commenced", "timezone"):
        value = getattr(entry, key)
        if value is not None:
            overrides[key] = value
    try:
        policy = load_policy(entry.preset, **overrides)
    except PolicyError as err:
        raise ConfigError(f"policies.{index}: {err}") from None
    missing = [c for c in policy.components if c not in checks]
    if missing:
        raise ConfigError(
            f"policies.{index}.components: {', '.join(missing)} not among the configured checks "
            f"({', '.join(checks) or 'none'}); name the checks after the components or set components:"
        )
    try:
        check_intervals(policy, {c: checks[c].interval for c in policy.components})
    except PolicyError as err:
        raise ConfigError(f"policies.{index}: {err}") from None
    return policy


def parse_policy(name: str, data: Any, *, checks: dict[str, CheckEntry]) -> tuple[PolicyEntry, Policy]:
    """A contract policy from an API request body: a preset applied to checks in force, with the
    same checks as the config file's `policies:` entries get."""
    if not isinstance(data, dict):
        raise CheckError("body: expected a JSON object describing the policy")
    if "name" in data and data["name"] != name:
        raise CheckError(f"name: {data['name']!r} differs from the name in the path ({name!r})")
    if name in checks:
        raise CheckError(f"name: {name!r} is already the name of a check (every check is a policy of its own)")
    try:
        entry = PolicyEntry.model_validate({**data, "name": name})
    except ValidationError as err:
        raise CheckError(describe(err)) from None
    from collector.rules.policy import list_presets  # noqa: PLC0415

    if entry.preset not in list_presets():
        # only the shipped presets: a request must not make the collector read files of its host
        raise CheckError(f"preset: unknown preset {entry.preset!r} (presets: {', '.join(list_presets())})")
    try:
        policy = policy_for_entry(entry, checks, 0)
    except ConfigError as err:
        raise CheckError(str(err).removeprefix("policies.0.").removeprefix("policies.0: ")) from None
    return entry, policy
