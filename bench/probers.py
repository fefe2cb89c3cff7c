"""The agent's TCP, DNS, HTTPS and journey probers: probes per CPU-second on one core, beside
prometheus-blackbox-exporter's module for the same probe (tcp_connect, dns, http with TLS; it has
no journeys) against the same targets.

    .venv/bin/python bench/probers.py [--probes 4000] [--concurrency 100]

Layout (2 cores): core 0 runs the prober under test only: a worker process calling the agent's
prober (agent.probers.run_probe, as the agent runs it, without scheduler, spool or shipper), then
the exporter. Core 1 runs the targets (one nginx worker: plain HTTP and HTTPS with a certificate
of a CA made for the run; dnsmasq answering `www.example.test A 192.0.2.10` from its own table)
and the driver of the exporter's /probe endpoint (keep-alive requests to the exporter; the
exporter's probes open fresh connections and send fresh queries).

Each row: PROBES probes (after 200 not counted, to warm up), CONCURRENCY in flight, one timeout
of 1 s. probes/CPU-s is the probes that succeeded over the CPU time of the prober's process
alone (the driver's and the targets' CPU are not counted); probes/s is the wall-clock rate.

  tcp      connect and close (agent: tcp check without send/expect; exporter: tcp prober)
  dns      A query over UDP, answer checked (agent: expect_answers; exporter: validate_answer_rrs)
  https    GET over a fresh TLS connection, chain and host verified against the run's CA
           (agent: http check with tls_ca_file; exporter: http prober with tls_config.ca_file)
  http     the same in plain HTTP (reference: the cost TLS adds)
  journey  two plain HTTP steps with a status and a body assertion each (no exporter module)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as B  # noqa: E402

PROBE_CPU, OTHER_CPU = "0", "1"
WARMUP = 200
TIMEOUT = "1s"
KINDS = ("tcp", "dns", "https", "http", "journey")
# One loopback block of addresses per kind and prober, so that no row meets another's TIME_WAIT
# sockets (every probe opens a fresh connection).
BLOCKS = {"tcp": 31, "https": 32, "http": 33, "journey": 34}
ADDRESSES = 4
DNS_ADDRESS = "127.0.35.1"

NGINX_CONF = """
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log error;
events {{ worker_connections 32768; multi_accept on; }}
http {{
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  ssl_certificate {dir}/leaf.pem;
  ssl_certificate_key {dir}/leaf.key;
  ssl_session_cache off;
  ssl_session_tickets off;
  server {{
{listens}
    location / {{ default_type text/plain; return 200 "ok\\n"; }}
  }}
}}
"""

BLACKBOX_CONFIG = """
modules:
  tcp_connect:
    prober: tcp
    timeout: {timeout}
    tcp: {{preferred_ip_protocol: ip4, ip_protocol_fallback: false}}
  dns_a:
    prober: dns
    timeout: {timeout}
    dns:
      query_name: www.example.test
      query_type: A
      transport_protocol: udp
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      validate_answer_rrs:
        fail_if_none_matches_regexp: ["192\\\\.0\\\\.2\\\\.10"]
  https_2xx:
    prober: http
    timeout: {timeout}
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      tls_config: {{ca_file: {ca}}}
  http_2xx:
    prober: http
    timeout: {timeout}
    http: {{preferred_ip_protocol: ip4, ip_protocol_fallback: false}}
"""
MODULES = {"tcp": "tcp_connect", "dns": "dns_a", "https": "https_2xx", "http": "http_2xx"}


def addresses(kind: str, offset: int = 0) -> list[str]:
    """The kind's loopback addresses, `offset` 0 for the agent, 100 for the exporter."""
    return [f"127.0.{BLOCKS[kind]}.{offset + i}" for i in range(1, ADDRESSES + 1)]


def targets(kind: str, ports: dict[str, int], offset: int) -> list[str]:
    if kind == "dns":
        return [f"{DNS_ADDRESS}:{ports['dns']}"]
    if kind == "tcp":
        return [f"{a}:{ports['http']}" for a in addresses(kind, offset)]
    scheme, port = ("https", ports["https"]) if kind == "https" else ("http", ports["http"])
    return [f"{scheme}://{a}:{port}/" for a in addresses(kind, offset)]


def check_specs(kind: str, target_list: list[str], ca_file: str, count: int) -> list[dict]:
    def spec(i: int) -> dict:
        target = target_list[i % len(target_list)]
        base = {"name": f"{kind}{i}", "interval": "10s", "timeout": TIMEOUT}
        if kind == "tcp":
            host, port = target.rsplit(":", 1)
            return {**base, "type": "tcp", "host": host, "port": int(port)}
        if kind == "dns":
            return {**base, "type": "dns", "query": "www.example.test", "record": "A", "server": target,
                    "expect_answers": ["192.0.2.10"]}
        if kind == "journey":
            return {**base, "type": "journey", "steps": [
                {"name": "home", "url": target, "assert": [{"status": 200}, {"body_regex": "^ok"}]},
                {"name": "again", "url": f"{target}again", "assert": [{"status": 200}, {"body_regex": "^ok"}]}]}
        extra = {"tls_ca_file": ca_file} if kind == "https" else {}
        return {**base, "type": "http", "url": target, **extra}
    return [spec(i) for i in range(count)]


# --- the agent's prober, in a worker pinned to the probe core -----------------------------------


async def worker(specs_file: Path, concurrency: int) -> dict:
    from agent.probers import prepare, run_probe
    from protocol.checks import parse_checks

    checks = parse_checks(json.loads(specs_file.read_text()))
    prepare(checks)
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    errors: dict[str, int] = {}

    async def one(check) -> None:
        nonlocal ok
        async with sem:
            result = await run_probe(check, agent_id="bench")
        if result.ok:
            ok += 1
        else:
            errors[result.error] = errors.get(result.error, 0) + 1

    await asyncio.gather(*(one(c) for c in checks[:WARMUP]))
    ok, errors = 0, {}
    measured = checks[WARMUP:]
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(c) for c in measured))
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - cpu0, "ok": ok, "n": len(measured),
            "errors": errors}


def run_agent(work: Path, kind: str, target_list: list[str], ca_file: str, probes: int, concurrency: int) -> dict:
    specs = work / f"checks-{kind}.json"
    specs.write_text(json.dumps(check_specs(kind, target_list, ca_file, probes + WARMUP)))
    out = subprocess.run(B.taskset(PROBE_CPU, [sys.executable, __file__, "--worker", str(specs),
                                               "--concurrency", str(concurrency)]),
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_exporter(port: int, pid: int, kind: str, target_list: list[str], probes: int, concurrency: int) -> dict:
    module = MODULES[kind]
    asyncio.run(B.drive_probe_endpoint(port, target_list, module, concurrency=concurrency, count=WARMUP))
    cpu0 = B.cpu_seconds(pid)
    res = asyncio.run(B.drive_probe_endpoint(port, target_list, module, concurrency=concurrency, count=probes))
    return {"wall": res.wall, "cpu": B.cpu_seconds(pid) - cpu0, "ok": res.ok, "n": res.sent,
            "errors": {"failed": res.failed} if res.failed else {}}


# --- peers and targets --------------------------------------------------------------------------


def make_certificates(work: Path, hosts: list[str]) -> str:
    try:
        import trustme
    except ImportError:
        raise SystemExit("trustme is needed: pip install -e '.[bench]'") from None
    ca = trustme.CA()
    leaf = ca.issue_cert(*hosts)
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(work / "leaf.key"))
    (work / "leaf.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return str(work / "ca.pem")


def start_nginx(procs: B.Procs, work: Path, plain: list[str], tls: list[str], ports: dict[str, int]) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is needed: apt-get install nginx-light")
    listens = [f"    listen {a}:{ports['http']} backlog=4096;" for a in plain]
    listens += [f"    listen {a}:{ports['https']} ssl backlog=4096;" for a in tls]
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, listens="\n".join(listens)))
    proc = procs.start("nginx", [nginx, "-c", str(conf), "-p", str(work), "-e", str(work / "nginx-error.log")],
                       cpus=OTHER_CPU)
    for address in plain:
        B.wait_http(f"http://{address}:{ports['http']}/", 15, proc)


def start_dnsmasq(procs: B.Procs, port: int) -> None:
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(exe).exists():
        raise SystemExit("dnsmasq is needed: apt-get install dnsmasq-base")
    proc = procs.start("dnsmasq", [exe, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                                   "--no-poll", "--bind-interfaces", f"--listen-address={DNS_ADDRESS}",
                                   f"--port={port}", "--address=/www.example.test/192.0.2.10", "--cache-size=1000",
                                   "--pid-file=", "--user=root"], cpus=OTHER_CPU)
    import dns.message
    import dns.query

    def answers() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"dnsmasq exited: {procs.log_tail('dnsmasq')}")
        try:
            reply = dns.query.udp(dns.message.make_query("www.example.test", "A"), DNS_ADDRESS, timeout=0.5, port=port)
            return bool(reply.answer)
        except Exception:
            return False

    B.wait_until(answers, 15, "dnsmasq answers")


def start_exporter(procs: B.Procs, work: Path, ca_file: str) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("prometheus-blackbox-exporter") or "/usr/bin/prometheus-blackbox-exporter"
    if not Path(exe).exists():
        raise SystemExit("prometheus-blackbox-exporter is needed: apt-get install prometheus-blackbox-exporter")
    conf = work / "blackbox-probers.yml"
    conf.write_text(BLACKBOX_CONFIG.format(timeout=TIMEOUT, ca=ca_file))
    port = B.free_port()
    proc = procs.start("blackbox", [exe, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}",
                                    "--log.level=error"], cpus=PROBE_CPU)
    B.wait_http(f"http://127.0.0.1:{port}/metrics", 15, proc)
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=4000, help="probes measured per row (default 4000)")
    ap.add_argument("--concurrency", type=int, default=100, help="probes in flight (default 100)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker(Path(args.worker), args.concurrency))))
        return

    kinds = [k for k in args.kinds.split(",") if k]
    B.header("agent probers vs blackbox_exporter: probes per CPU-second on one core")
    B.pin_self({int(OTHER_CPU)})
    started = time.monotonic()
    work = B.workdir("probers")
    raw: dict = {"probes": args.probes, "concurrency": args.concurrency, "timeout": TIMEOUT, "rows": []}
    rows = []
    with B.Procs(work) as procs:
        ports = {"http": B.free_port(), "https": B.free_port(), "dns": B.free_port()}
        plain = [a for k in ("tcp", "http", "journey") for off in (0, 100) for a in addresses(k, off)]
        tls = [a for off in (0, 100) for a in addresses("https", off)]
        ca_file = make_certificates(work, tls)
        start_nginx(procs, work, plain, tls, ports)
        start_dnsmasq(procs, ports["dns"])
        exporter, exporter_port = start_exporter(procs, work, ca_file)
        version = B.blackbox_version().split()[0]
        for kind in kinds:
            agent = run_agent(work, kind, targets(kind, ports, 0), ca_file, args.probes, args.concurrency)
            peer = (run_exporter(exporter_port, exporter.pid, kind, targets(kind, ports, 100), args.probes,
                                 args.concurrency) if kind in MODULES else None)
            for prober, r in (("agent", agent), (f"blackbox_exporter {version}", peer)):
                if r is None:
                    continue
                r.update(kind=kind, prober=prober, rate=r["ok"] / r["wall"], per_cpu_s=r["ok"] / r["cpu"] if r["cpu"] else None)
                raw["rows"].append(r)
            ratio = (f"{agent['per_cpu_s'] / peer['per_cpu_s']:.2f}x" if peer and peer["per_cpu_s"] else "no module")
            rows.append([kind, "agent prober", agent["ok"], agent["n"], agent["wall"], agent["rate"], agent["cpu"],
                         agent["per_cpu_s"], ratio, ", ".join(f"{k} {v}" for k, v in agent["errors"].items()) or "-"])
            if peer is not None:
                rows.append([kind, f"blackbox_exporter ({MODULES[kind]})", peer["ok"], peer["n"], peer["wall"],
                             peer["rate"], peer["cpu"], peer["per_cpu_s"], "1.00x",
                             ", ".join(f"{k} {v}" for k, v in peer["errors"].items()) or "-"])
            B.console.print(f"  {kind}: agent {agent['per_cpu_s']:,.0f} probes/CPU-s"
                            + (f", exporter {peer['per_cpu_s']:,.0f}" if peer else ""), highlight=False)
        raw["exporter_rss_mib"] = B.rss_mib(exporter.pid)
    B.print_table(
        f"Probes per CPU-second, prober pinned to core 0, {args.concurrency} in flight, targets on core 1",
        ["kind", "prober", "ok", "probes", "wall s", "probes/s", "CPU s", "probes/CPU-s", "vs exporter", "failed"],
        rows,
        notes=[f"exporter: blackbox_exporter {B.blackbox_version()}; targets: nginx (HTTP, HTTPS with a run's own CA), "
               "dnsmasq; CPU of the prober's process only.",
               f"runtime {time.monotonic() - started:.0f} s"],
    )
    raw["elapsed_s"] = time.monotonic() - started
    B.save_json("probers", raw)
    B.remove_workdir(work)


if __name__ == "__main__":
    main()
