#!/usr/bin/env python3
"""CPU time by process group, from /proc: where a compose benchmark's cycles go.

    python3 docs/bench/procstat.py snapshot > before.json
    python3 docs/bench/procstat.py diff before.json after.json FLOWS

`snapshot` records every process's user + system time and the machine's total busy time;
`diff` prints CPU milliseconds per flow for each group: the ctr services in their containers,
the load generator, dockerd, containerd and its shims, docker-proxy (the published ports), and
the rest of the machine (the kernel's network path in softirq, other processes).
"""
import json
import os
import sys

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = [
    ("ctr services (in containers)", lambda comm, exe: exe == "/service"),
    ("load generator (ctr-load)", lambda comm, exe: comm.startswith("ctr-load")),
    ("dockerd (json-file logs, API)", lambda comm, exe: comm == "dockerd"),
    ("containerd and its shims", lambda comm, exe: comm.startswith("containerd")),
    ("docker-proxy (published ports)", lambda comm, exe: comm == "docker-proxy"),
]


def snapshot():
    processes = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            exe = os.readlink(f"/proc/{pid}/exe") if os.path.exists(f"/proc/{pid}/exe") else ""
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        processes[pid] = {"comm": comm, "exe": exe, "ticks": ticks}
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    busy = sum(cpu) - cpu[3] - cpu[4]  # all but idle and iowait
    return {"processes": processes, "busy": busy}


def group(comm, exe):
    for name, match in GROUPS:
        if match(comm, exe):
            return name
    return None


def diff(before, after, flows):
    totals = {name: 0 for name, _ in GROUPS}
    for pid, p in after["processes"].items():
        name = group(p["comm"], p["exe"])
        if name is None:
            continue
        was = before["processes"].get(pid)
        start = was["ticks"] if was and was["comm"] == p["comm"] else 0
        totals[name] += p["ticks"] - start
    busy = after["busy"] - before["busy"]
    totals["everything else (kernel network path in softirq, health-check execs, other processes)"] = busy - sum(totals.values())
    per_flow = {k: 1000 * v / TICK / flows for k, v in totals.items()}
    return {"flows": flows, "cpu_ms_per_flow": per_flow, "busy_ms_per_flow": 1000 * busy / TICK / flows}


def main():
    if sys.argv[1:2] == ["snapshot"]:
        json.dump(snapshot(), sys.stdout)
    elif sys.argv[1:2] == ["diff"] and len(sys.argv) == 5:
        load = lambda path: json.load(open(path))
        json.dump(diff(load(sys.argv[2]), load(sys.argv[3]), int(sys.argv[4])), sys.stdout, indent=1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
