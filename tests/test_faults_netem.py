"""Fault injection: packet loss and latency on the agents' links.

The harness tries tc netem once per run (`netlab.lab.netem_support`) and uses it where the kernel has
it: netem on the agent's eth0 (loss and delay of what it sends) and on its bridge port (loss of
what it receives). A kernel without sch_netem answers `tc qdisc add ... netem` with "Specified
qdisc kind is unknown"; there the harness drops packets at random with iptables' `statistic`
match (both directions of the agent's link) and delays them with an NFQUEUE daemon that holds
every packet the agent sends for a fixed time before releasing it (tests/netlab/,
`Lab.impair`). The figures name which of the two was used (`impairment=`). The probes, the
shipping and the heartbeats of an impaired agent all cross the impaired link.
"""
from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from netlab.fleet import Fleet, TerminalReport, by_key, http_check, icmp_check, parse_ts, sleep_until, slot_of, utcnow, z
from netlab.lab import Lab, require_lab

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
STEP = timedelta(seconds=INTERVAL)
SETTLED = timedelta(seconds=1.35)  # every probe of a slot has ended (timeouts are 1.2 s); the next has not begun
PHASE_A_SLOTS = 7
OUTAGE_SLOTS = 5


@pytest.fixture
def lab():
    require_lab()  # skips without root, ip or iptables; fails instead under CI
    with Lab() as lab:
        yield lab


@pytest.fixture
def report(capsys):
    return TerminalReport(capsys)


async def test_loss_and_latency_verdicts_follow_the_probes(lab, tmp_path: Path, report) -> None:
    """Phase A, seven rounds: us-east loses every packet, us-west's packets leave 250 ms late,
    eu-west's 900 ms late, eu-central loses 30 % each way, ap-south and sa-east are clean.
      - us-east fails everything; us-west succeeds with the added latency measured; eu-west's
        HTTP probes time out (two delayed round trips > 1.2 s) while its pings succeed in
        >= 900 ms; eu-central's stored results are exactly what its own metrics counted;
      - the clean agents succeed, so every round is UP: no window;
      - eu-central's 30 % loss really applies: it has failures and successes, and a check
        probed by eu-central alone (`lossy`, any failed round an outage) has exactly the windows
        that eu-central's stored results make: the verdicts follow its probes.
    Phase B, five rounds: every agent loses every packet: the exact window, for both checks.
    All along, impaired agents ship through the same links: nothing lost, nothing doubled."""
    started = time.monotonic()
    outage = {"quorum": "all", "min_duration": "6s"}
    checks = [http_check(interval=INTERVAL, timeout="1200ms", outage=outage),
              icmp_check(interval=INTERVAL, timeout="1200ms", outage=outage),
              icmp_check("lossy", interval=INTERVAL, timeout="1200ms", agents=["eu-central"],
                         outage={"quorum": "all", "min_duration": "0s"})]
    fleet = Fleet(lab, tmp_path, checks, agent_extra={"collector": {"request_timeout": "5s"}})
    logs = tmp_path / "logs"
    try:
        await fleet.start()
        await sleep_until(slot_of(utcnow(), INTERVAL) + STEP + SETTLED)
        lab.impair("us-east", loss=1.0)
        lab.impair("us-west", delay_ms=250, log_dir=logs)
        lab.impair("eu-west", delay_ms=900, log_dir=logs)
        lab.impair("eu-central", loss=0.3)
        a_start = slot_of(utcnow(), INTERVAL) + STEP
        assert utcnow() < a_start, "applying the impairments took longer than a slot"
        await sleep_until(a_start + (PHASE_A_SLOTS - 1) * STEP + SETTLED)
        lab.clear_many(["us-east", "us-west", "eu-west", "eu-central"])
        b_start = slot_of(utcnow(), INTERVAL) + STEP
        await sleep_until(b_start - STEP + SETTLED)
        lab.impair_many(fleet.agents, loss=1.0)
        assert utcnow() < b_start, "applying the impairments took longer than the rest of a slot"
        await sleep_until(b_start + (OUTAGE_SLOTS - 1) * STEP + SETTLED)
        lab.clear_many(fleet.agents)

        # eu-central's own count of its probes, read between two slots, against what was stored
        last = slot_of(utcnow(), INTERVAL) + STEP
        await sleep_until(last + SETTLED - timedelta(seconds=0.2))
        counted = await fleet.agent_metrics("eu-central")
        expected_window = [(z(b_start), z(b_start + OUTAGE_SLOTS * STEP))]
        for policy in ("web", "ping"):
            await fleet.wait_for_windows(policy, expected_window, timeout=60)
        await fleet.wait_drained(timeout=60)
        rows = fleet.stored_rows()
        keyed = by_key(rows)

        a_slots = [z(a_start + k * STEP) for k in range(PHASE_A_SLOTS)]
        b_slots = [z(b_start + k * STEP) for k in range(OUTAGE_SLOTS)]
        problems = []

        def one(agent: str, check: str, slot: str):
            found = keyed.get((agent, check, slot), [])
            if len(found) != 1:
                problems.append(f"{agent} {check} {slot}: {len(found)} rows")
                return None
            return found[0]

        for slot in a_slots:
            for agent in fleet.agents:
                for check in ("web", "ping", "lossy") if agent == "eu-central" else ("web", "ping"):
                    row = one(agent, check, slot)
                    if row is None:
                        continue
                    _, _, _, _, ok, error, latency = row
                    what = f"{agent} {check} {slot}: ok={ok} error={error} latency={latency}"
                    if agent == "us-east" and (ok or error not in ({"web": "timeout", "ping": "icmp"}[check],)):
                        problems.append(what + " (100% loss: expected a failure)")
                    elif agent == "us-west" and not (ok and latency >= {"web": 500, "ping": 250}[check]):
                        problems.append(what + " (+250 ms: expected success, slower)")
                    elif agent == "eu-west" and check == "web" and (ok or error != "timeout"):
                        problems.append(what + " (+900 ms: expected the HTTP probe to time out)")
                    elif agent == "eu-west" and check == "ping" and not (ok and latency >= 900):
                        problems.append(what + " (+900 ms: expected a ping of at least 900 ms)")
                    elif agent in ("ap-south", "sa-east") and not (ok and latency < 250):
                        problems.append(what + " (clean link: expected a fast success)")
                    elif agent == "eu-central" and not ok and error not in ("timeout", "icmp", "connect"):
                        problems.append(what + " (30% loss: unexpected reason)")
        for slot in b_slots:
            for agent in fleet.agents:
                for check in ("web", "ping"):
                    row = one(agent, check, slot)
                    if row is not None and row[4]:
                        problems.append(f"{agent} {check} {slot}: succeeded through a dead link")
        assert not problems, "\n".join(problems[:40])

        # verdicts: only phase B is an outage; phase A rounds were UP thanks to the clean agents
        for policy in ("web", "ping"):
            windows = await fleet.outages(policy)
            assert [(w["start"], w["end"]) for w in windows] == expected_window

        # eu-central: exactly what it observed, by check and result, up to the slot read above
        stored = Counter((r[2], "ok" if r[4] else r[5]) for r in rows
                         if r[1] == "eu-central" and parse_ts(r[3]) <= last)
        observed = Counter()
        for key, value in counted.items():
            if key.startswith("uptime_agent_probes_total{") and value:
                labels = dict(part.split("=", 1) for part in key[len("uptime_agent_probes_total{"):-1].split(","))
                observed[(labels["check"].strip('"'), labels["result"].strip('"'))] = int(value)
        assert stored == observed, f"stored {dict(stored)} != observed by the agent {dict(observed)}"
        # the 30 % loss really applied: eu-central failed some probes and passed others
        eu_central = Counter(("ok" if r[4] else "failed") for r in rows
                             if r[1] == "eu-central" and r[3] in set(a_slots))
        assert eu_central["ok"] > 0 and eu_central["failed"] > 0, \
            f"eu-central under 30% loss each way: {dict(eu_central)} in phase A"
        # ... and the verdicts follow its probes: `lossy`, probed by eu-central alone, is an
        # outage in exactly the runs of slots its stored results failed
        lossy_rows = sorted((parse_ts(r[3]), r[4]) for r in rows if r[1] == "eu-central" and r[2] == "lossy")
        lossy_windows: list[tuple[str, str | None]] = []
        run_start = previous = None
        for slot, ok in lossy_rows:
            if run_start is not None and (ok or slot != previous + STEP):
                lossy_windows.append((z(run_start), z(previous + STEP)))
                run_start = None
            if not ok and run_start is None:
                run_start = slot
            previous = slot
        assert lossy_rows and lossy_rows[-1][1], "lossy: the last stored result (clean link) failed"
        # phase B cut eu-central off (a run of failures at the end of phase A, which phase B
        # follows at once, makes the same window)
        b_end = b_start + OUTAGE_SLOTS * STEP
        assert any(parse_ts(w[0]) <= b_start and w[1] == z(b_end) for w in lossy_windows), lossy_windows
        await fleet.wait_for_windows("lossy", lossy_windows, timeout=30)
        lossy_failed_in_a = sum(1 for slot, ok in lossy_rows if not ok and z(slot) in set(a_slots))

        figures = fleet.figures(fleet.final_rows())  # agents stopped: nothing in flight
        report(figures.line(
            "loss and latency on agent links", time.monotonic() - started,
            f" impairment={lab.impairment} phaseA_rounds={PHASE_A_SLOTS} (no window) "
            f"eu-central_30%loss={dict(eu_central)} lossy_failed_in_phaseA={lossy_failed_in_a} lossy_windows={len(lossy_windows)} "
            f"window={expected_window[0][0]}..{expected_window[0][1]}"))
        assert (figures.duplicates, figures.lost, figures.spooled) == (0, 0, 0)
        assert figures.stored == figures.produced == figures.sent
    finally:
        fleet.stop()
