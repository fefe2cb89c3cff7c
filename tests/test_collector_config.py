"""Collector config: one bad file per rule, each with the exact message naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collector.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent

AGENTS = [{"id": "a1", "token": "token-a1-0123456789"}, {"id": "a2", "token": "token-a2-0123456789"}]
CHECK = {"name": "web", "type": "http", "interval": "60s", "url": "http://127.0.0.1:1/"}


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "collector.yml")
    assert [c.name for c in config.checks] == ["web", "ping"]
    assert len(config.agents) == 6
    assert config.checks[1].outage.min_duration == 720


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"listn": {}}, "cfg: listn: unknown key"),
        ({"agents": AGENTS, "checks": [{**CHECK, "interval": "abc"}]}, "cfg: checks.0.interval: invalid duration 'abc'"),
        ({"agents": AGENTS, "checks": [{**CHECK, "agents": ["a3"]}]}, "unknown agent 'a3'"),
        ({"agents": [*AGENTS, AGENTS[0]]}, "agents.2.id: duplicate 'a1'"),
        ({"agents": AGENTS, "checks": [CHECK, CHECK]}, "checks.1.name: duplicate 'web'"),
        ({"agents": AGENTS, "checks": [{**CHECK, "outage": {"quorum": "k_of_n"}}]}, "checks.0.outage: quorum k_of_n needs k"),
        ({"agents": AGENTS, "checks": [{**CHECK, "outage": {"quorum": "most"}}]}, "checks.0.outage.quorum"),
        ({"agents": AGENTS, "checks": [{**CHECK, "url": "ftp://x/"}]}, "cfg: checks.0.url: "),
        ({"agents": AGENTS, "checks": [{**CHECK, "timeout": "2m"}]}, "cfg: checks.0.timeout: timeout 2m must be less than interval 1m"),
        ({"agents": [{"id": "a1", "token": "short"}]}, "cfg: agents.0.token: "),
    ],
)
def test_bad_config_names_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "cfg")
    assert message in str(err.value)


def test_policy_with_unknown_component_names_the_checks() -> None:
    from collector.service import build_live_policies

    config = parse_config({"agents": AGENTS, "checks": [CHECK], "policies": [{"name": "sla", "preset": "nexon-vision"}]}, "cfg")
    with pytest.raises(ConfigError) as err:
        build_live_policies(config)
    assert "policies.0.components: cms, api not among the configured checks (web)" in str(err.value)


def test_serve_with_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "c.yml"
    bad.write_text("listen:\n  port: 99999\n")
    proc = subprocess.run([sys.executable, "-m", "collector.cli", "serve", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "listen.port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yml"
    bad.write_text("listen:\n  port: [8080\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "line 3" in str(err.value) or "line 2" in str(err.value)
