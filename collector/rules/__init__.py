"""Contract rules: the pure evaluation core shared by the live collector and offline reports.

observations -> rounds (rounds.py) -> outage windows (windows.py) -> report (report.py), with
policies (policy.py, presets in collector/presets/), periods, maintenance, credits and claims.
"""
from .model import Announcement, ComponentRound, Observation, Round, Verdict, Window
from .policy import Policy, PolicyError, check_intervals, list_presets, load_policy
from .rounds import evaluate_rounds, slot_of
from .windows import find_windows
from .periods import month_bounds
from .maintenance import judge_maintenance
from .report import build_report, render_csv, render_text, verify_claim
from .offline import InputError, check_components, evaluate_offline, read_maintenance, read_results

__all__ = [
    "Announcement", "ComponentRound", "Observation", "Round", "Verdict", "Window",
    "Policy", "PolicyError", "check_intervals", "list_presets", "load_policy",
    "evaluate_rounds", "slot_of", "find_windows", "month_bounds", "judge_maintenance",
    "build_report", "render_csv", "render_text", "verify_claim",
    "InputError", "check_components", "evaluate_offline", "read_maintenance", "read_results",
]
