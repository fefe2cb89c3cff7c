"""The public status page and the SLA report pages, served by the collector (issue 6, item 1).

`setup_status_routes(app)` adds `GET /` and `GET /policies/{name}[/{YYYY-MM}]`. Reads are few and
independent of history length (queries.py), the figures are computed without I/O (history.py,
pages.py), and pages are rendered with Jinja2 templates (templates/) that need no JavaScript.
"""

from .views import setup_status_routes

__all__ = ["setup_status_routes"]
