"""Fault-injection harness of tests/test_faults_*.py: real hosts in network namespaces, real
programs inside them. tests/ is on sys.path (pytest puts it there: tests is not a package), so
the modules are imported as `netlab.<module>`:

  * `netlab.lab`: prerequisites (`require`, `require_lab`, ...), the addresses and ports, `Host`,
    `Lab` with its faults (blackhole, partition, isolate, impair with tc netem or a stand-in),
    `isolated_host`, and the sweeping of namespaces left by earlier runs;
  * `netlab.postgres`: a PostgreSQL server of the test's own, run inside a lab host;
  * `netlab.programs`: the programs run inside namespaces (the HTTP target, the recording proxy,
    the NFQUEUE delay daemon), started by path: `python tests/netlab/programs.py COMMAND ...`;
  * `netlab.fleet`: the fault helpers: `Fleet` (collector, proxy, target and agents in a lab),
    `Figures`, `TerminalReport`, the checks, and the time and slot helpers.
"""
