"""Configuration: each rule has one bad file in agent_testdata/ and its exact message."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from agent_helpers import REPO
from click.testing import CliRunner

from agent.cli import main
from agent.config import ConfigError, load_config, parse_checks, read_config_file
from protocol.durations import format_duration, parse_duration, parse_size

DATA = Path(__file__).parent / "agent_testdata"

INVALID = {
    "bad-duration": "checks.0.interval: invalid duration 'abc'",
    "zero-interval": "checks.0.interval: must be greater than 0, got 0s",
    "timeout-not-below-interval": "checks.0.timeout: timeout 5s must be less than interval 5s",
    "duplicate-name": "checks.1.name: duplicate check name 'web' (first used by checks.0)",
    "url-scheme": "checks.0.url: invalid url 'ftp://127.0.0.1/health': scheme must be http or https",
    "icmp-empty-host": "checks.0.host: must not be empty",
    "status-out-of-range": "checks.0.expected_status: invalid status code 600: must be 100-599",
    "unknown-key": "checks.0.follow: unknown key",
    "unknown-section": "schedulr: unknown key",
    "unknown-type": "checks.0.type: unknown check type 'ftp' (one of http, icmp, tcp, dns, journey)",
    "bad-regex": "checks.0.body_match: invalid regex '(ok': missing ), unterminated subpattern at position 0",
    "bad-size": "spool.max_bytes: invalid size '12 parsecs' (use a number of bytes or KB, MB, GB)",
    "bad-listen": "metrics.listen: invalid listen address 'localhost': use host:port (port 0 picks a free port)",
    "token-twice": "collector.token_file: give either collector.token or collector.token_file, not both",
    "missing-collector": "collector: required key missing",
    "no-checks": "checks: no checks: list local checks or set collector.fetch_checks: true",
    "icmp-too-slow": (
        "checks.0.count: 3 pings take up to 6.4s ((count - 1) x ping_interval + count x timeout), "
        "must be less than interval 5s"
    ),
    "bad-agent-id": "agent.id: invalid agent id 'eu west': use 1-64 of A-Z a-z 0-9 . _ -",
    "not-yaml": "invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'",
}


def test_every_invalid_file_has_an_expected_message():
    files = {p.name.removeprefix("invalid-").removesuffix(".yml") for p in DATA.glob("invalid-*.yml")}
    assert files == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config_names_the_key_and_the_problem(name):
    path = DATA / f"invalid-{name}.yml"
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert str(caught.value) == f"{path}: {INVALID[name]}"


@pytest.mark.parametrize("name", ["bad-duration", "duplicate-name", "unknown-key", "not-yaml"])
def test_cli_reports_bad_config_with_exit_2_and_no_traceback(name):
    path = DATA / f"invalid-{name}.yml"
    for command in (["run", "--config", str(path), "--id", "x"], ["check-config", "--config", str(path)]):
        outcome = CliRunner().invoke(main, command)
        assert outcome.exit_code == 2, outcome.output
        assert outcome.output.strip() == f"{path}: {INVALID[name]}"
        assert outcome.exception is None or isinstance(outcome.exception, SystemExit)


def test_real_process_prints_one_line_and_exits_2(tmp_path):
    path = DATA / "invalid-bad-duration.yml"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{path}: checks.0.interval: invalid duration 'abc'"
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


def test_standalone_example_parses_with_its_defaults():
    config = load_config(DATA / "valid-standalone.yml", env={})
    web, ping = config.checks
    assert (web.name, web.interval, web.timeout, web.expected_status, web.body_match) == ("web", 60, 5, [200], "ok")
    assert (ping.host, ping.count, ping.ping_interval, ping.timeout, ping.interval) == ("127.0.0.1", 3, 0.2, 2, 360)
    assert config.spool.max_bytes == 512 * 1024**2 and config.spool.max_age == 7 * 86400
    assert str(config.spool_path()) == "data/spool-eu-west.sqlite"


def test_defaults_of_an_http_check_accept_any_2xx():
    (check,) = parse_checks([{"name": "w", "type": "http", "url": "https://example.test/"}])
    assert (check.method, check.interval, check.timeout, check.tls_verify) == ("GET", 60, 5, True)
    assert [s for s in (199, 200, 204, 299, 300, 503) if check.accepts_status(s)] == [200, 204, 299]


def test_shipped_example_config_needs_only_id_and_token(tmp_path):
    example = REPO / "config" / "agent.yml"
    with pytest.raises(ConfigError) as caught:
        load_config(example, env={})
    assert str(caught.value).splitlines() == [
        f"{example}: agent.id: not set: give agent.id, --id or env UPTIME_AGENT_ID",
        f"{example}: collector.token: not set: give collector.token, collector.token_file or env UPTIME_AGENT_TOKEN",
    ]
    config = load_config(example, agent_id="eu-west", env={"UPTIME_AGENT_TOKEN": "s3cret"})
    assert (config.agent_id, config.collector.token, config.checks) == ("eu-west", "s3cret", None)
    assert config.collector.fetch_checks and config.collector.url == "http://127.0.0.1:8080"


def test_id_flag_beats_env_beats_file_and_env_token_beats_file(tmp_path):
    path = DATA / "valid-standalone.yml"
    assert load_config(path, env={}).agent_id == "eu-west"
    assert load_config(path, env={"UPTIME_AGENT_ID": "from-env"}).agent_id == "from-env"
    assert load_config(path, agent_id="from-flag", env={"UPTIME_AGENT_ID": "from-env"}).agent_id == "from-flag"
    assert load_config(path, env={"UPTIME_AGENT_TOKEN": "env-token"}).collector.token == "env-token"


def test_token_file_is_read_and_a_missing_one_is_named(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    config_path = tmp_path / "agent.yml"
    config_path.write_text(f"agent: {{id: a}}\ncollector: {{url: 'http://127.0.0.1:1', token_file: '{token_file}'}}\n")
    assert load_config(config_path, env={}).collector.token == "from-file"
    token_file.unlink()
    with pytest.raises(ConfigError) as caught:
        load_config(config_path, env={})
    assert str(caught.value) == (
        f"{config_path}: collector.token_file: cannot read '{token_file}': No such file or directory"
    )


def test_check_config_prints_the_checks():
    outcome = CliRunner().invoke(main, ["check-config", "--config", str(DATA / "valid-standalone.yml")])
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert lines[0].endswith("valid-standalone.yml: OK")
    assert any(line.split()[:2] == ["web", "http"] and "http://127.0.0.1:8000/health" in line for line in lines)
    assert any(line.split()[:2] == ["ping", "icmp"] and "127.0.0.1" in line for line in lines)


@pytest.mark.parametrize(
    "text, seconds",
    [("250ms", 0.25), ("5s", 5), ("2m", 120), ("1h", 3600), ("1d", 86400), (5, 5), (0.5, 0.5), ("1.5s", 1.5),
     ("30", 30), ("0s", 0)],
)
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "5 parsecs", "-1s", "", "1s2", True, None, [], "1w", float("nan")])
def test_bad_durations_are_refused_by_name(text):
    with pytest.raises(ValueError, match=r"^invalid duration "):
        parse_duration(text)


@pytest.mark.parametrize("seconds, text", [(0.25, "250ms"), (120, "2m"), (86400, "1d"), (6.4, "6.4s"), (90, "90s")])
def test_durations_format_back(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text, size",
    [("512MB", 512 * 1024**2), ("64KB", 65536), ("1GB", 1024**3), ("100", 100), (4096, 4096), ("2MiB", 2 * 1024**2)],
)
def test_sizes_parse(text, size):
    assert parse_size(text) == size
