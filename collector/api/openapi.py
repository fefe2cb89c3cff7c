"""The OpenAPI description of the collector's API, served at GET /api/v1/openapi.json.

Request bodies' schemas come from the same pydantic models that validate the requests, so the
description cannot drift from what the collector accepts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from collector.config import CheckEntry, PolicyEntry
from protocol.wire import Heartbeat, ResultBatch

from .incidents import IncidentIn, LinksIn, PostmortemIn, UpdateIn
from .maintenance import CancelIn, MaintenanceIn, OccurrenceCancelIn, SeriesIn

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "Missing, unknown or revoked token", 403: "Token of another agent",
            404: "Unknown policy, check, agent, maintenance announcement or incident", 409: "Conflicts with a contract policy, an announcement already cancelled, or an incident already resolved or with a post-mortem link (the message says which)", 413: "Body too large", 422: "A field is invalid (the message names it)",
            429: "Rate limited", 503: "Database unavailable"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def build_spec() -> dict[str, Any]:
    components: dict[str, Any] = {}
    batch = _schema(ResultBatch, components)
    beat = _schema(Heartbeat, components)
    maintenance = _schema(MaintenanceIn, components)
    cancel = _schema(CancelIn, components)
    series_in = _schema(SeriesIn, components)
    occurrence_cancel = _schema(OccurrenceCancelIn, components)
    series_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    incident_in = _schema(IncidentIn, components)
    update_in = _schema(UpdateIn, components)
    links_in = _schema(LinksIn, components)
    postmortem_in = _schema(PostmortemIn, components)
    incident_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    check = _schema(CheckEntry, components)
    policy_in = _schema(PolicyEntry, components)
    policy_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    check_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    agent_name = {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}
    public_key = {"type": "string", "pattern": "^ed25519:[A-Za-z0-9+/]{43}=$",
                  "description": "Ed25519 public key, ed25519:<base64 of 32 bytes>"}

    def log_param(name: str, required: bool) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required,
                "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}

    agent_auth = [{"agentToken": []}]
    admin_auth = [{"adminToken": []}]
    ts = {"type": "string", "format": "date-time"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "uptime-verifier collector", "version": "1",
                 "description": "Ingest of probe results, verified outage windows, SLA reports and claim checks."},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "agentToken": {"type": "http", "scheme": "bearer", "description": "An agent's own token"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "The collector's admin token"},
            },
        },
        "paths": {
            "/api/v1/results": {"post": {
                "summary": "Submit a batch of probe results (acknowledged only after commit; idempotent by result id)",
                "security": agent_auth,
                "parameters": [{"name": "Uptime-Batch-Signature", "in": "header", "required": False,
                                "description": "The agent's Ed25519 signature of the batch's statement "
                                               "(docs/evidence.md): key=<8 hex key id>, prev=<64 hex | none>, "
                                               "sig=<base64 of 64 bytes>; required where require_signatures is set "
                                               "(401 without it, 422 when it does not verify)",
                                "schema": {"type": "string",
                                           "pattern": "^key=[0-9a-f]{8}, prev=([0-9a-f]{64}|none), sig=[A-Za-z0-9+/]{86}==$"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": batch}}},
                "responses": {"200": _json("Stored", {"type": "object", "properties": {
                    "accepted": {"type": "integer"}, "duplicates": {"type": "integer"}}}),
                    **_errors(400, 401, 403, 413, 422, 429, 503)},
            }},
            "/api/v1/heartbeat": {"post": {
                "summary": "Liveness and clock offset of an agent", "security": agent_auth,
                "requestBody": {"required": True, "content": {"application/json": {"schema": beat}}},
                "responses": {"200": _json("Server time", {"type": "object", "properties": {"server_time": ts}}),
                              **_errors(400, 401, 403, 422, 429, 503)},
            }},
            "/api/v1/assignments": {"get": {
                "summary": "The calling agent's checks", "security": agent_auth,
                "parameters": [{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}],
                "responses": {"200": _json("Checks"), "304": {"description": "Unchanged"}, **_errors(401, 429, 503)},
            }},
            "/api/v1/status": {"get": {
                "summary": "Each service's current state (up, degraded, failing, outage, maintenance, unknown) and since when",
                "responses": {"200": _json("States", {
                    "type": "object", "required": ["generated_at", "all_up", "counts", "services"],
                    "properties": {
                        "generated_at": ts, "all_up": {"type": "boolean"}, "counts": {"type": "object"},
                        "services": {"type": "array", "items": {
                            "type": "object", "required": ["name", "state", "since"],
                            "properties": {"name": {"type": "string"},
                                           "display_name": {"type": "string"},
                                           "group": {"type": ["string", "null"]},
                                           "state": {"enum": ["up", "degraded", "failing", "outage", "maintenance", "unknown"]},
                                           "since": {"type": ["string", "null"], "format": "date-time"},
                                           "page": {"type": "string", "description": "the service's own page"},
                                           "component_states": {"type": "array", "items": {
                                               "type": "object", "properties": {
                                                   "name": {"type": "string"}, "display_name": {"type": "string"},
                                                   "state": {"enum": ["up", "degraded", "failing", "outage",
                                                                      "maintenance", "unknown"]},
                                                   "since": {"type": ["string", "null"], "format": "date-time"}}}}}}}}}),
                    **_errors(401, 503)},
            }},
            "/api/v1/outages": {"get": {
                "summary": "Verified outage windows with their evidence",
                "parameters": [
                    {"name": "policy", "in": "query", "schema": {"type": "string"}},
                    {"name": "since", "in": "query", "schema": ts},
                    {"name": "until", "in": "query", "schema": ts},
                    {"name": "open", "in": "query", "schema": {"type": "boolean"}},
                ],
                "responses": {"200": _json("Windows"), **_errors(400, 401, 404, 503)},
            }},
            "/api/v1/policies": {"get": {"summary": "Configured policies", "responses": {"200": _json("Policies"), **_errors(401, 503)}}},
            "/api/v1/reports/{policy}": {"get": {
                "summary": "SLA report of one month",
                "parameters": [{"name": "policy", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "period", "in": "query", "schema": {"type": "string", "pattern": r"^\d{4}-\d{2}$"}}],
                "responses": {"200": _json("Report"), **_errors(400, 401, 404, 503)},
            }},
            "/api/v1/claims/verify": {"get": {
                "summary": "A claimed outage checked against the verified windows",
                "parameters": [{"name": "policy", "in": "query", "required": True, "schema": {"type": "string"}},
                               {"name": "start", "in": "query", "required": True, "schema": ts},
                               {"name": "end", "in": "query", "required": True, "schema": ts}],
                "responses": {"200": _json("Claim"), **_errors(400, 401, 404, 503)},
            }},
            "/api/v1/maintenance": {
                "post": {"summary": "Announce maintenance (admin); with `rrule` and `duration` instead of `end`, "
                                    "recurring maintenance (RFC 5545), each occurrence judged as if announced "
                                    "when the series was recorded", "security": admin_auth,
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"oneOf": [maintenance, series_in]}}}},
                         "responses": {"201": _json("Announced"), **_errors(400, 401, 404, 422, 503)}},
                "get": {"summary": "Announced maintenance (of one policy with ?policy=), cancelled ones included",
                        "parameters": [{"name": "policy", "in": "query", "required": False, "schema": {"type": "string"}}],
                        "responses": {"200": _json("Maintenance"), **_errors(400, 401, 404, 503)}},
            },
            "/api/v1/maintenance/{id}": {"delete": {
                "summary": "Cancel an announcement (admin); it stays listed as cancelled and excludes nothing",
                "security": admin_auth,
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": cancel}}},
                "responses": {"200": _json("Cancelled"), **_errors(400, 401, 404, 409, 413, 422, 503)},
            }},
            "/api/v1/maintenance/series/{id}": {"delete": {
                "summary": "Cancel a recurring series (admin); it stays listed, and no occurrence starting later "
                           "excludes anything", "security": admin_auth,
                "parameters": [series_id, {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": cancel}}},
                "responses": {"200": _json("Cancelled"), **_errors(400, 401, 404, 409, 413, 422, 503)},
            }},
            "/api/v1/maintenance/series/{id}/occurrences/{start}": {"delete": {
                "summary": "Cancel one occurrence of a series by its start (admin); it excludes nothing",
                "security": admin_auth,
                "parameters": [series_id, {"name": "start", "in": "path", "required": True, "schema": ts},
                               {"name": "reason", "in": "query", "required": False, "schema": {"type": "string"}}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": cancel}}},
                "responses": {"200": _json("Cancelled"), **_errors(400, 401, 404, 409, 413, 422, 503)},
            }},
            "/api/v1/maintenance/series/{id}/cancellations": {"post": {
                "summary": "Cancel one occurrence of a series, its start in the body (admin)", "security": admin_auth,
                "parameters": [series_id],
                "requestBody": {"required": True, "content": {"application/json": {"schema": occurrence_cancel}}},
                "responses": {"200": _json("Cancelled"), **_errors(400, 401, 404, 409, 413, 422, 503)},
            }},
            "/api/v1/incidents": {
                "post": {"summary": "Open an incident (admin) with its first update; times are the collector's, "
                                    "a caller's time is refused as an unknown field",
                         "security": admin_auth,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": incident_in}}},
                         "responses": {"201": _json("Opened: the incident with its updates and links"),
                                       **_errors(400, 401, 413, 422, 503)}},
                "get": {"summary": "Incidents, newest first, with their updates and links (?state=open or resolved)",
                        "parameters": [{"name": "state", "in": "query", "required": False,
                                        "schema": {"enum": ["open", "resolved"]}}],
                        "responses": {"200": _json("Incidents"), **_errors(400, 401, 503)}},
            },
            "/api/v1/incidents/{id}": {"get": {
                "summary": "One incident with its updates, links and post-mortem link", "parameters": [incident_id],
                "responses": {"200": _json("Incident"), **_errors(401, 404, 503)}}},
            "/api/v1/incidents/{id}/updates": {"post": {
                "summary": "Append an update (admin): investigating, identified, monitoring or resolved, with text; "
                           "resolved resolves the incident, which then takes no more updates (409)",
                "security": admin_auth, "parameters": [incident_id],
                "requestBody": {"required": True, "content": {"application/json": {"schema": update_in}}},
                "responses": {"201": _json("Updated: the incident"), **_errors(400, 401, 404, 409, 413, 422, 503)}}},
            "/api/v1/incidents/{id}/links": {"post": {
                "summary": "Link verified outage windows and maintenance announcements of the affected policies (admin)",
                "security": admin_auth, "parameters": [incident_id],
                "requestBody": {"required": True, "content": {"application/json": {"schema": links_in}}},
                "responses": {"200": _json("Linked: the incident"), **_errors(400, 401, 404, 413, 422, 503)}}},
            "/api/v1/incidents/{id}/postmortem": {"post": {
                "summary": "Set the incident's post-mortem link, an http or https URL (admin); once set it stands (409)",
                "security": admin_auth, "parameters": [incident_id],
                "requestBody": {"required": True, "content": {"application/json": {"schema": postmortem_in}}},
                "responses": {"200": _json("The incident"), **_errors(400, 401, 404, 409, 413, 422, 503)}}},
            "/api/v1/agents": {
                "get": {"summary": "Registered agents", "responses": {"200": _json("Agents"), **_errors(401, 503)}},
                "post": {"summary": "Register an agent or rotate its token (admin); the token is shown once",
                         "security": admin_auth,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "properties": {"id": {"type": "string"}, "public_key": public_key},
                             "required": ["id"], "additionalProperties": False}}}},
                         "responses": {"201": _json("Token"), **_errors(400, 401, 409, 422, 503)}},
            },
            "/api/v1/agents/{agent}/keys": {
                "get": {"summary": "Every public key the agent was registered with, oldest first, with its log index",
                        "parameters": [agent_name], "responses": {"200": _json("Keys"), **_errors(401, 404, 503)}},
                "post": {"summary": "Register a public key of the agent (admin; a rotation keeps the older keys), "
                                    "logged as an agent_key entry",
                         "security": admin_auth, "parameters": [agent_name],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "properties": {"public_key": public_key}, "required": ["public_key"],
                             "additionalProperties": False}}}},
                         "responses": {"200": _json("Registered before"), "201": _json("Registered"),
                                       **_errors(400, 401, 404, 409, 413, 422, 503)}},
            },
            "/api/v1/agents/{agent}/keys/{key_id}": {"delete": {
                "summary": "Revoke one of the agent's keys (admin), logged as an agent_key_revoked entry; "
                           "what it signed before stays verifiable",
                "security": admin_auth,
                "parameters": [agent_name, {"name": "key_id", "in": "path", "required": True,
                                            "schema": {"type": "string", "pattern": "^[0-9a-f]{8}$"}}],
                "responses": {"200": _json("Revoked"), **_errors(401, 404, 409, 503)}}},
            "/api/v1/log/checkpoint": {"get": {
                "summary": "The evidence log's signed tree head (C2SP signed-note checkpoint)",
                "responses": {"200": {"description": "Signed note",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401, 503)}}},
            "/api/v1/log/key": {"get": {
                "summary": "The verifier key of the log's checkpoints (<origin>+<key id>+<base64>)",
                "responses": {"200": {"description": "Verifier key",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)}}},
            "/api/v1/log/proof/inclusion": {"get": {
                "summary": "RFC 6962 inclusion proof of entry `index` in the tree of `size` (default: the current size)",
                "parameters": [log_param("index", True), log_param("size", False)],
                "responses": {"200": _json("Inclusion proof", {"type": "object", "properties": {
                    "index": {"type": "integer"}, "tree_size": {"type": "integer"}, "leaf_hash": {"type": "string"},
                    "hashes": {"type": "array", "items": {"type": "string"}}}}), **_errors(400, 401, 503)}}},
            "/api/v1/log/proof/consistency": {"get": {
                "summary": "RFC 6962 consistency proof from tree size `first` to `second` (default: the current size)",
                "parameters": [log_param("first", True), log_param("second", False)],
                "responses": {"200": _json("Consistency proof", {"type": "object", "properties": {
                    "first": {"type": "integer"}, "second": {"type": "integer"},
                    "hashes": {"type": "array", "items": {"type": "string"}}}}), **_errors(400, 401, 503)}}},
            "/api/v1/evidence/{policy}": {"get": {
                "summary": "Evidence bundle of one month's report, or of a claimed outage with start and end (for `uptime-verify`): the report or claim, signed batches, "
                           "maintenance records, agents' keys, inclusion proofs and the checkpoint",
                "parameters": [{"name": "policy", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "period", "in": "query", "schema": {"type": "string", "pattern": r"^\d{4}-\d{2}$"}},
                               {"name": "start", "in": "query", "description": "a claim's bundle: claimed outage start",
                                "schema": {"type": "string", "format": "date-time"}},
                               {"name": "end", "in": "query", "description": "claimed outage end",
                                "schema": {"type": "string", "format": "date-time"}}],
                "responses": {"200": _json("Evidence bundle"), **_errors(400, 401, 404, 422, 429, 503)},
            }},
            "/api/v1/agents/{agent}": {"delete": {
                "summary": "Revoke an agent's token (admin)", "security": admin_auth,
                "parameters": [{"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json("Revoked"), **_errors(401, 404, 503)},
            }},
            "/api/v1/policies/{name}": {
                "put": {"summary": "Create or replace a contract policy (admin): a shipped preset applied to checks",
                        "security": admin_auth, "parameters": [policy_name],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": policy_in}}},
                        "responses": {"200": _json("Replaced"), "201": _json("Created"),
                                      **_errors(400, 401, 413, 422, 503)}},
                "delete": {"summary": "Remove a contract policy (admin); its windows and maintenance stay",
                           "security": admin_auth, "parameters": [policy_name],
                           "responses": {"200": _json("Removed"), **_errors(401, 404, 409, 503)}},
            },
            "/api/v1/checks": {"get": {
                "summary": "Checks in force, and removed ones", "responses": {"200": _json("Checks"), **_errors(401, 503)}}},
            "/api/v1/checks/{name}": {
                "get": {"summary": "One check", "parameters": [check_name],
                        "responses": {"200": _json("Check"), **_errors(401, 404, 503)}},
                "put": {"summary": "Create or replace a check (admin); agents take it up at their next assignments poll",
                        "security": admin_auth, "parameters": [check_name],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": check}}},
                        "responses": {"200": _json("Replaced"), "201": _json("Created"),
                                      **_errors(400, 401, 409, 413, 422, 503)}},
                "delete": {"summary": "Remove a check (admin); its results and windows stay", "security": admin_auth,
                           "parameters": [check_name],
                           "responses": {"200": _json("Removed"), **_errors(401, 404, 409, 503)}},
            },
            "/healthz": {"get": {"summary": "Health", "responses": {"200": _json("ok"), "503": _json("database unavailable")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (public unless public_reads is off)",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}},
                                               **_errors(401)}}},
            "/api/v1/openapi.json": {"get": {"summary": "This description", "responses": {"200": _json("OpenAPI 3 document")}}},
        },
    }
