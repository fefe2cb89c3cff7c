"""Writes docs/configuration.md from the configuration models themselves: every key of the
collector's and the agent's YAML, its type, its default and what it means (the comment beside
the field in the model, or the one just above it).

    python docs/config_reference.py > docs/configuration.md

A test runs it and fails when the file in the repository is not what it prints.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from agent.config import AgentConfig  # noqa: E402
from collector.config import CollectorConfig  # noqa: E402
from protocol import checks as check_models  # noqa: E402
from protocol.durations import format_duration  # noqa: E402

DURATION_HINT = "duration"


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """The comment on a field's line, or the comment lines just above it, by field name."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        tree = ast.parse(source)
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node in body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            line = lines[node.lineno - 1]
            text = ""
            if "#" in line and not line.strip().startswith("#"):
                text = line.split("#", 1)[1].strip()
            above = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            text = " ".join(part for part in (" ".join(above), text) if part)
            if text:
                out[node.target.id] = text.replace("|", "\\|")
    return out


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        if any(getattr(m, "func", None) is not None and "duration" in getattr(m.func, "__name__", "") for m in meta):
            return DURATION_HINT
        if any(getattr(m, "func", None) is not None and "size" in getattr(m.func, "__name__", "") for m in meta):
            return "size"
        return _type_name(base)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(names)
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _field_type(field) -> str:
    for meta in field.metadata:
        name = getattr(getattr(meta, "func", None), "__name__", "")
        if "duration" in name:
            return DURATION_HINT
        if "size" in name:
            return "size"
    return _type_name(field.annotation)


def _own_doc(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split()) if doc else ""


# Meanings of keys whose model has no comment for them (kept short; the README says more).
MEANING = {
    "listen.host": "Address the API listens on.",
    "listen.port": "Port the API listens on (0 picks a free one).",
    "database_url": "`sqlite+aiosqlite:///PATH` (relative to this file's folder) or `postgresql+asyncpg://USER@HOST/DB`.",
    "public_reads": "Outages, policies, reports, claims, status pages and /metrics readable without a token.",
    "admin_token": "Bearer token for admin actions (agents, checks, policies, maintenance); at least 16 characters.",
    "max_body_bytes": "Largest request body accepted, also after decompression.",
    "evaluation.interval": "How often outage rules are re-evaluated.",
    "rate_limit.burst": "Requests an agent may send at once before the rate applies.",
    "retention.interval": "How often old raw results are summarised.",
    "agents[].id": "The agent's id (1-64 of A-Z a-z 0-9 . _ -), as the agent's `agent.id`.",
    "agents[].token_sha256": "SHA-256 (hex) of the agent's token: what production configs give.",
    "checks[].name": "The check's name; also the name of its own policy.",
    "checks[].type": "Which prober runs it.",
    "checks[].interval": "Slot length: agents probe at every multiple of it since the epoch.",
    "checks[].outage.quorum": "How agents' verdicts make a round's: all, majority or k_of_n.",
    "checks[].outage.k": "For k_of_n: how many agents must fail.",
    "checks[].outage.min_reporting": "Fewest reporting agents for a verdict; fewer make the round UNKNOWN.",
    "checks[].outage.min_duration": "How long failed rounds must last to be a verified outage.",
    "policies[].preset": "A shipped contract preset (`uptime-collector presets`) or a policy YAML file.",
    "policies[].components": "The checks the policy's components are measured by, in the preset's order.",
    "policies[].target_percent": "Overrides the preset's availability target.",
    "policies[].commenced": "When the service commenced (RFC 3339): a partial first period.",
    "policies[].timezone": "Overrides the contract's time zone for periods and maintenance windows.",
    "notifications[].url": "Where the webhook is posted.",
    "notifications[].secret": "Key of the X-Uptime-Signature HMAC-SHA256 of each body.",
    "notifications[].format": "`json`, or `slack` (a text field for incoming webhooks).",
    "notifications[].events": "Which events are sent.",
    "notifications[].timeout": "How long one delivery attempt may take.",
    "agent.id": "This agent's id (or `--id`, or env UPTIME_AGENT_ID).",
    "collector.url": "The collector's base URL.",
    "collector.token": "This agent's token (or env UPTIME_AGENT_TOKEN).",
    "collector.token_file": "A file holding the token.",
    "collector.batch_size": "Most results per shipped batch.",
    "collector.flush_interval": "How often spooled results are shipped.",
    "collector.heartbeat_interval": "How often the agent reports liveness and clock offset.",
    "collector.fetch_checks": "Take the checks from the collector (GET /api/v1/assignments).",
    "collector.assignments_interval": "How often assignments are polled (with ETag).",
    "collector.request_timeout": "Timeout of one request to the collector.",
    "spool.path": "SQLite spool file; `{agent_id}` is replaced.",
    "spool.max_bytes": "Spool size bound; the oldest results are dropped past it (counted).",
    "spool.max_age": "Results older than this are dropped from the spool (counted).",
    "guard.allow": "Networks the guard lets through (CIDR), for internal monitoring.",
    "name": "The check's name.",
    "interval": "Slot length: probes run at every multiple of it since the epoch.",
    "timeout": "How long one probe may take; less than the interval.",
}


def _default(field, type_name: str) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "none"
    if type_name == DURATION_HINT and isinstance(value, (int, float)):
        return f"`{format_duration(value)}`"
    if value == [] or value == {}:
        return "empty"
    return f"`{value}`"


def _model_of(annotation) -> type[BaseModel] | None:
    """The section model behind a field (a model, or a list or optional of one)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _model_of(arg)
            if inner is not None:
                return inner
    return None


def rows(model: type[BaseModel], prefix: str = "", skip: frozenset[str] = frozenset()) -> list[str]:
    out = []
    comments = _comments(model)
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{field.alias or name}"
        type_name = _field_type(field)
        inner = _model_of(field.annotation)
        is_list = typing.get_origin(field.annotation) is list or (
            inner is not None and any(typing.get_origin(a) is list for a in typing.get_args(field.annotation)))
        if inner is not None:
            note = comments.get(name, "") or _own_doc(inner)
            out.append(f"| `{key}{'[]' if is_list else ''}` | {'list of entries' if is_list else 'section'} | | {note} |")
            if inner.__module__.startswith("protocol.checks"):
                continue  # the check fields have their own table
            out.extend(rows(inner, f"{key}{'[].' if is_list else '.'}"))
            continue
        meaning = comments.get(name) or MEANING.get(key.replace("[].", "[].")) or MEANING.get(name, "")
        if meaning.startswith("type:"):  # a linter's note, not a meaning
            meaning = MEANING.get(key, "")
        out.append(f"| `{key}` | {type_name} | {_default(field, type_name)} | {meaning} |")
    return out


def check_tables() -> list[str]:
    out = []
    for name in check_models.CHECK_TYPES:
        model = next(m for m in vars(check_models).values()
                     if isinstance(m, type) and issubclass(m, BaseModel)
                     and getattr(m.model_fields.get("type"), "annotation", None) is not None
                     and typing.get_args(m.model_fields["type"].annotation) == (name,))
        out += ["", f"### `type: {name}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out += rows(model, skip=frozenset({"type"}))
    return out


def render() -> str:
    head = [
        "# Configuration reference",
        "",
        "Generated from the configuration models (`python docs/config_reference.py > docs/configuration.md`);",
        "a test fails when this file is not current. Unknown keys are errors, and every error names its key.",
        "Durations are written `250ms`, `5s`, `2m`, `1h`, `1d` or as seconds; sizes as `512MiB`, `1GB` or bytes.",
        "",
        "## Collector (`uptime-collector serve --config FILE`)",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    body = rows(CollectorConfig)
    agent = ["", "## Agent (`uptime-agent run --config FILE`)", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    agent += rows(AgentConfig)
    checks = ["", "## Check fields", "",
              "The same in the collector's `checks[]` (besides `agents` and `outage`) and in an agent's own `checks[]`."]
    return "\n".join(head + body + agent + checks + check_tables()) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
