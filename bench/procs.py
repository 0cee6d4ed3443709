"""Processes under test: started pinned to a core, watched through /proc, stopped gently."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A process started with ``taskset -c CORE`` (taskset execs it: the pid is the program's)."""

    def __init__(self, name: str, argv: Sequence[str], *, core: int, log: Path, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = log.open("ab")
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            ["taskset", "-c", str(core), *argv], cwd=cwd, env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        """This process and its descendants."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak), summed over the tree, in KiB."""
        totals = {"VmRSS": 0, "VmHWM": 0}
        for pid in self.tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in totals:
                        totals[key] += int(value.split()[0])
        return totals

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.tree())

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (a graceful shutdown), then SIGKILL to the group after ``timeout``."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log_file.close()
        return self.popen.returncode


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def post(port: int, path: str, body: bytes, headers: Mapping[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"content-type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_answered(proc: Proc, port: int, path: str, body: bytes, headers: Mapping[str, str],
                  limit: float = 120.0) -> float:
    """Seconds from the process's start to its first 200 answer to ``POST path``; polls every 10 ms.
    Raises RuntimeError (with the log's tail) if it exits or does not answer within ``limit``."""
    last = ""
    while time.perf_counter() - proc.started < limit:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}: {tail(proc.log)}")
        try:
            status, answer = post(port, path, body, headers, timeout=2.0)
            if status == 200:
                return time.perf_counter() - proc.started
            last = f"HTTP {status}: {answer[:300]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.01)
    raise RuntimeError(f"{proc.name} did not answer within {limit:.0f} s (last: {last}): {tail(proc.log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
