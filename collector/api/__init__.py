"""The collector's HTTP API, one module per resource: results and heartbeats (agents), checks,
policies, maintenance, incidents, agents and their keys, reports and claims, the evidence log, health and metrics.

`setup_routes` registers them all; the status pages register theirs in `collector.status`.
"""

from __future__ import annotations

from aiohttp import web

from .agents import delete_agent, delete_agent_key, get_agent_keys, get_agents, post_agent, post_agent_key
from .checks import delete_check, get_check, get_checks, put_check
from .common import LIMITER, STATE
from .log import setup_log
from .health import get_healthz, get_metrics, get_openapi
from .incidents import (get_incident, get_incidents, post_incident, post_incident_links, post_incident_postmortem,
                        post_incident_update)
from .maintenance import (delete_maintenance, delete_occurrence, delete_series, get_maintenance, post_maintenance,
                          post_occurrence_cancellation)
from .middleware import error_middleware, ingest_count_middleware
from .policies import delete_policy, get_policies, put_policy
from .reports import get_claim, get_outages, get_report
from .results import get_assignments, post_heartbeat, post_results

__all__ = ["LIMITER", "STATE", "error_middleware", "ingest_count_middleware", "setup_routes"]


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/results", post_results)
    app.router.add_post("/api/v1/heartbeat", post_heartbeat)
    app.router.add_get("/api/v1/assignments", get_assignments)
    app.router.add_get("/api/v1/outages", get_outages)
    app.router.add_get("/api/v1/policies", get_policies)
    app.router.add_put("/api/v1/policies/{name}", put_policy)
    app.router.add_delete("/api/v1/policies/{name}", delete_policy)
    app.router.add_post("/api/v1/maintenance", post_maintenance)
    app.router.add_get("/api/v1/maintenance", get_maintenance)
    app.router.add_delete("/api/v1/maintenance/{id}", delete_maintenance)
    app.router.add_delete("/api/v1/maintenance/series/{id}", delete_series)
    app.router.add_delete("/api/v1/maintenance/series/{id}/occurrences/{start}", delete_occurrence)
    app.router.add_post("/api/v1/maintenance/series/{id}/cancellations", post_occurrence_cancellation)
    app.router.add_post("/api/v1/incidents", post_incident)
    app.router.add_get("/api/v1/incidents", get_incidents)
    app.router.add_get("/api/v1/incidents/{id}", get_incident)
    app.router.add_post("/api/v1/incidents/{id}/updates", post_incident_update)
    app.router.add_post("/api/v1/incidents/{id}/links", post_incident_links)
    app.router.add_post("/api/v1/incidents/{id}/postmortem", post_incident_postmortem)
    app.router.add_get("/api/v1/checks", get_checks)
    app.router.add_get("/api/v1/checks/{name}", get_check)
    app.router.add_put("/api/v1/checks/{name}", put_check)
    app.router.add_delete("/api/v1/checks/{name}", delete_check)
    app.router.add_get("/api/v1/agents", get_agents)
    app.router.add_post("/api/v1/agents", post_agent)
    app.router.add_delete("/api/v1/agents/{agent}", delete_agent)
    app.router.add_get("/api/v1/agents/{agent}/keys", get_agent_keys)
    app.router.add_post("/api/v1/agents/{agent}/keys", post_agent_key)
    app.router.add_delete("/api/v1/agents/{agent}/keys/{key_id}", delete_agent_key)
    app.router.add_get("/api/v1/reports/{policy}", get_report)
    app.router.add_get("/api/v1/claims/verify", get_claim)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/api/v1/openapi.json", get_openapi)
    setup_log(app)
