"""Dockerfile and docker-compose.yml, checked statically (no container engine runs here): the
compose file validates with docker-compose, and every command, config path and port it names is
real in the image layout the Dockerfile builds."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from agent.config import parse_config as parse_agent_config
from agent.config import resolve
from collector.config import load_config

ROOT = Path(__file__).resolve().parent.parent
REGIONS = 6


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def image_path_to_repo(path: str) -> Path:
    """The Dockerfile copies the repository's folders under /app."""
    assert path.startswith("/app/"), path
    return ROOT / path.removeprefix("/app/")


def dockerfile_copies() -> list[tuple[str, str]]:
    copies = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        m = re.match(r"^COPY\s+(.+)\s+(\S+)$", line.strip())
        if m:
            for src in m.group(1).split():
                copies.append((src, m.group(2)))
    return copies


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_compose_file_validates() -> None:
    proc = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_dockerfile_copies_what_exists_and_runs_unprivileged() -> None:
    copies = dockerfile_copies()
    assert copies, "no COPY in Dockerfile"
    for src, _dest in copies:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "HEALTHCHECK" in text
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M).group(1)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry in scripts


def test_compose_has_a_collector_and_six_agents_with_real_commands_and_configs() -> None:
    services = compose()["services"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    agents = {name: s for name, s in services.items() if name.startswith("agent-")}
    assert len(agents) == REGIONS
    collector_cfg_path = image_path_to_repo(services["collector"]["command"][services["collector"]["command"].index("--config") + 1])
    collector_cfg = load_config(collector_cfg_path)
    tokens = {a.id: a.token for a in collector_cfg.agents}
    assert services["collector"]["ports"] == [f"{collector_cfg.listen.port}:{collector_cfg.listen.port}"]
    assert collector_cfg.listen.host == "0.0.0.0"
    for name, service in agents.items():
        assert service["entrypoint"][0] in scripts
        assert service["command"][0] == "run"
        cfg_path = image_path_to_repo(service["command"][service["command"].index("--config") + 1])
        env = service["environment"]
        config = resolve(parse_agent_config(yaml.safe_load(cfg_path.read_text())), env=env)
        agent_id = env["UPTIME_AGENT_ID"]
        assert name == f"agent-{agent_id}"
        # the agent's token is one the collector accepts for exactly this agent id
        assert tokens[agent_id] == env["UPTIME_AGENT_TOKEN"]
        assert config.collector.url == f"http://collector:{collector_cfg.listen.port}"
        assert "collector" in service["depends_on"]
