"""Which services the status page shows, under which names and groups.

A contract policy and the checks it is computed from are one service: the checks are its
components, shown on its line and its page, not as services of their own that would list the
same outage twice. A check that is no component of any contract policy shown on the page is a
service of its own. The config says otherwise where it needs to: `status_page: true` on a check
shows it as its own service too, `status_page: false` on a check or a policy leaves it off the
page (its API, badges and reports stay). `display_name` names it for people; services with the
same `group` are shown together, summarised by their worst member.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from collector.rules.policy import Policy

__all__ = ["Presentation", "directory"]


@dataclass(frozen=True)
class Presentation:
    name: str                      # the policy's name (a check's own policy is named after the check)
    display_name: str              # what people read; the name unless the config sets one
    group: str | None
    shown: bool                    # a service of its own on the front page and in GET /api/v1/status
    components: tuple[str, ...] = field(default=())  # the checks it is computed from (contracts only)


def directory(policies: Mapping[str, Policy], checks: Mapping[str, Any], contracts: Iterable[Any]) -> dict[str, Presentation]:
    """Presentation of every policy in `policies`: `checks` are the check entries in force (by
    name), `contracts` the contract policy entries in force (anything with `name`,
    `display_name`, `group`, `status_page`)."""
    entries = {e.name: e for e in contracts}
    out: dict[str, Presentation] = {}
    covered: set[str] = set()
    for name, entry in entries.items():
        policy = policies.get(name)
        if policy is None:
            continue
        shown = getattr(entry, "status_page", True) is not False
        if shown:
            covered.update(policy.components)
        out[name] = Presentation(name, getattr(entry, "display_name", None) or name, getattr(entry, "group", None),
                                 shown, tuple(policy.components))
    for name, policy in policies.items():
        if name in out:
            continue
        check = checks.get(name)
        flag = getattr(check, "status_page", None)
        shown = flag if flag is not None else name not in covered
        out[name] = Presentation(name, getattr(check, "display_name", None) or name, getattr(check, "group", None),
                                 bool(shown))
    return out
