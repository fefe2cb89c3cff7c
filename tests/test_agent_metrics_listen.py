"""Several agents on one host from one config file: `--metrics-listen` and env
UPTIME_AGENT_METRICS_LISTEN override metrics.listen (option over env over file), checked by the
file's rule, a bad value named after where it came from."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import aiohttp
import pytest
from agent_helpers import REPO, FakeCollector  # first: puts the repo on sys.path
from click.testing import CliRunner

from agent.cli import main
from agent.config import ConfigError, load_config
from agent.runner import Agent

SHIPPED = str(REPO / "config" / "agent.yml")
ENV = "UPTIME_AGENT_METRICS_LISTEN"


def check_config(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["check-config", "--config", SHIPPED, "--id", "eu-west", *args],
                              env={ENV: None, **(env or {})})


def metrics_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("metrics:"))


def test_option_beats_env_beats_file():
    assert metrics_line(check_config().stdout) == "metrics:   127.0.0.1:9101"
    from_env = check_config(env={ENV: "127.0.0.1:9102"})
    assert metrics_line(from_env.stdout) == f"metrics:   127.0.0.1:9102 (from env {ENV})"
    both = check_config("--metrics-listen", "[::1]:9103", env={ENV: "127.0.0.1:9102"})
    assert both.exit_code == 0, both.output
    assert metrics_line(both.stdout) == "metrics:   [::1]:9103 (from --metrics-listen)"
    off = check_config("--metrics-listen", "", env={ENV: "127.0.0.1:9102"})
    assert metrics_line(off.stdout) == "metrics:   off (from --metrics-listen)"
    # an empty variable is unset, as the agent's other variables
    assert metrics_line(check_config(env={ENV: ""}).stdout) == "metrics:   127.0.0.1:9101"


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_bad_value_is_named_with_exit_2(command):
    runner = CliRunner()
    base = [command, "--config", SHIPPED, "--id", "eu-west"]
    env = {"UPTIME_AGENT_TOKEN": "t", ENV: None}
    bad_option = runner.invoke(main, [*base, "--metrics-listen", "localhost"], env=env)
    assert bad_option.exit_code == 2
    assert bad_option.stderr.strip() == (f"{SHIPPED}: --metrics-listen: invalid listen address 'localhost': use "
                                         "host:port (port 0 picks a free port)")
    bad_env = runner.invoke(main, base, env={**env, ENV: "127.0.0.1:70000"})
    assert bad_env.exit_code == 2
    assert bad_env.stderr.strip() == (f"{SHIPPED}: env {ENV}: invalid listen address '127.0.0.1:70000': use "
                                      "host:port (port 0 picks a free port)")
    assert "Traceback" not in bad_option.output + bad_env.output


def test_load_config_takes_the_override():
    config = load_config(SHIPPED, agent_id="a1", env={"UPTIME_AGENT_TOKEN": "t", ENV: "127.0.0.1:9200"})
    assert config.metrics.host_port() == ("127.0.0.1", 9200)
    config = load_config(SHIPPED, agent_id="a1", env={"UPTIME_AGENT_TOKEN": "t", ENV: "127.0.0.1:9200"},
                         metrics_listen="127.0.0.1:9300")
    assert config.metrics.host_port() == ("127.0.0.1", 9300)
    with pytest.raises(ConfigError, match=f"env {ENV}: invalid listen address"):
        load_config(SHIPPED, agent_id="a1", env={"UPTIME_AGENT_TOKEN": "t", ENV: "9200"})


async def test_two_agents_from_the_shipped_config_run_side_by_side(tmp_path):
    collector = await FakeCollector().start()
    agents = []
    try:
        for agent_id, option, env in (("a1", "127.0.0.1:0", {}), ("a2", None, {ENV: "127.0.0.1:0"})):
            config = load_config(SHIPPED, agent_id=agent_id, metrics_listen=option,
                                 env={"UPTIME_AGENT_TOKEN": f"tok-{agent_id}", **env})
            # the shipped file names a collector on 8080 and a spool under ./data: point them here
            config = config.model_copy(update={
                "collector": config.collector.model_copy(update={"url": collector.url}),
                "spool": config.spool.model_copy(update={"path": str(tmp_path / "spool-{agent_id}.sqlite")}),
            })
            assert config.metrics.listen == "127.0.0.1:0"
            agent = Agent(config)
            await agent.start()
            agents.append(agent)
        assert agents[0].metrics_port != agents[1].metrics_port
        async with aiohttp.ClientSession() as session:
            for agent in agents:
                async with session.get(f"http://127.0.0.1:{agent.metrics_port}/healthz") as response:
                    assert (await response.json())["agent"] == agent.agent_id
        assert {p.name for p in tmp_path.glob("agent-*.key")} == {"agent-a1.key", "agent-a2.key"}
    finally:
        for agent in agents:
            await agent.stop(timeout=0)
        await collector.stop()


def test_a_taken_port_says_how_to_give_another(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "UPTIME_AGENT_TOKEN": "t", ENV: f"127.0.0.1:{port}",
               "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", SHIPPED, "--id", "a1"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (f"metrics.listen 127.0.0.1:{port}: give this agent another with --metrics-listen HOST:PORT "
            f"or env {ENV}") in proc.stderr
