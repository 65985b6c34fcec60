"""Processes and the machine, read from /proc: the processes of a server (its session and its
leader's descendants), their CPU seconds and memory, the machine's busy time, and the autogroup
nice value the client and every server run with."""

from __future__ import annotations

import os
from dataclasses import dataclass

# Background work in other sessions (a long simulation, say, even at a high nice value) gets a fair
# share of the cores under Linux's autogroup scheduling, whatever its nice value says. The client and
# every server measured run in autogroups of this nice value instead (the same for all systems), so
# such work takes what they leave. INFAAS_BENCH_NICE="" leaves the scheduler alone.
BENCH_NICE = os.environ.get("INFAAS_BENCH_NICE", "-10")


def _proc_table() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the name (state ppid pgrp session ... utime(11)
    stime(12) ... starttime(19) ... rss(21))."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                out[int(pid)] = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
    return out


def _procs_of(root: int, table: dict[int, list[str]] | None = None) -> dict[int, list[str]]:
    """The processes of a server started with ``start_new_session``: those of its session
    (Ray's and BentoML's children set their own process groups; Ray's outlive a
    parent) and every descendant of its leader (BentoML's worker starts its own session)."""
    table = table if table is not None else _proc_table()
    mine = {pid for pid, f in table.items() if int(f[3]) == root}
    if root in table:
        mine.add(root)
    children: dict[int, list[int]] = {}
    for pid, f in table.items():
        children.setdefault(int(f[1]), []).append(pid)
    todo = list(mine)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in mine:
                mine.add(c)
                todo.append(c)
    return {pid: table[pid] for pid in mine}


def tree_cpu_s(root: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the live processes of ``root``'s server: all, and the leader alone."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = _procs_of(root)
    total = sum(int(f[11]) + int(f[12]) for f in procs.values())
    leader = sum(int(f[11]) + int(f[12]) for pid, f in procs.items() if pid == root)
    return total / tick, leader / tick


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _pss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Memory:
    processes: list[tuple[int, int, int | None, str]]  # pid, RSS bytes, PSS bytes (None if unreadable), command line

    @property
    def rss(self) -> int:
        return sum(p[1] for p in self.processes)

    @property
    def pss(self) -> float:
        vals = [p[2] for p in self.processes]
        return float("nan") if any(v is None for v in vals) else float(sum(vals))

    def without(self, drop) -> "Memory":
        return Memory([p for p in self.processes if not drop(p[3])])


def memory_of(root: int) -> Memory:
    page = os.sysconf("SC_PAGE_SIZE")
    procs = _procs_of(root)
    return Memory([(pid, int(f[21]) * page, _pss_bytes(pid), _cmdline(pid)) for pid, f in sorted(procs.items())
                   if f[0] != "Z"])


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), or NaN."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def prefer(pid: int) -> str:
    """Give ``pid``'s autogroup (its session) the nice value ``BENCH_NICE``; what happened, in words."""
    if not BENCH_NICE:
        return "off"
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            before = f.read().split()[-1]  # "/autogroup-<n> nice <value>"
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(BENCH_NICE)
        if pid == os.getpid():  # the calling shell's session gets its own value back at exit
            import atexit

            atexit.register(_restore_autogroup, pid, before)
        return f"nice {BENCH_NICE}"
    except OSError as exc:
        return f"not set ({exc.strerror or exc})"


def _restore_autogroup(pid: int, value: str) -> None:
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(value)
    except OSError:
        pass
