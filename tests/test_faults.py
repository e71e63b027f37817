"""Real faults: a worker killed with SIGKILL, and what a single-node run listens on."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import alive, descendants

TINY = ["--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4", "--quiet"]

pytestmark = [pytest.mark.slow, pytest.mark.dist]


def _start(tiny_corpus, out, steps=100000, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "repro", "run", "lstm-text", "--machines", "2", "--epochs", "1000",
                             "--max-steps", str(steps), "--data-dir", str(tiny_corpus), "--out", str(out), *TINY,
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture
def launched():
    """Processes a test started; killed with their children whatever the test's outcome."""
    procs = []
    yield procs
    for proc in procs:
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def _wait_for_metrics(out: Path, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(out.glob("lstm-text/*/metrics.csv"))
        if rows and rows[0].read_text().count("\n") >= 2:  # header + one epoch row
            return rows[0].parent
        time.sleep(0.5)
    raise AssertionError("no metrics row in time")


def _workers(proc) -> list[int]:
    """The worker processes, by rank (each names itself repro-rankN)."""
    ranked = {}
    for pid in descendants(proc.pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("repro-rank"):
            ranked[int(name[len("repro-rank"):])] = pid
    return [ranked[r] for r in sorted(ranked)]


def test_killing_the_launcher_leaves_no_worker_behind(tmp_path, tiny_corpus, launched):
    proc = _start(tiny_corpus, tmp_path / "out")
    launched.append(proc)
    _wait_for_metrics(tmp_path / "out")
    workers = _workers(proc)
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in workers)


def test_a_killed_worker_ends_the_run_with_one_line_and_status_failed(tmp_path, tiny_corpus, launched):
    proc = _start(tiny_corpus, tmp_path / "out")
    launched.append(proc)
    run_dir = _wait_for_metrics(tmp_path / "out")
    workers = _workers(proc)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert stderr.strip() == "repro: error: worker rank 1 was killed by SIGKILL", stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert (run_dir / "metrics.csv").read_text().count("\n") >= 2  # the rows written so far are intact
    assert not any(alive(p) for p in workers)  # no orphan left


def test_a_hung_worker_ends_the_run_after_the_timeout(tmp_path, tiny_corpus, launched):
    proc = _start(tiny_corpus, tmp_path / "out", 100000, "--timeout", "5")
    launched.append(proc)
    run_dir = _wait_for_metrics(tmp_path / "out")
    workers = _workers(proc)
    os.kill(workers[1], signal.SIGSTOP)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and time.monotonic() - started < 60
    assert stderr.strip().startswith("repro: error: worker rank 1 stopped responding"), stderr
    assert stderr.count("\n") == 1
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert not any(alive(p) for p in workers)


def _listening_inodes() -> dict[str, str]:
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found[fields[9]] = fields[1]
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def test_a_single_node_run_listens_on_loopback_only(tmp_path, tiny_corpus, launched):
    proc = _start(tiny_corpus, tmp_path / "out")
    launched.append(proc)
    try:
        _wait_for_metrics(tmp_path / "out")
        listening = _listening_inodes()
        mine = {}
        for pid in [proc.pid, *descendants(proc.pid)]:
            mine.update({i: listening[i] for i in _socket_inodes(pid) if i in listening})
        loopback = ("0100007F:", "00000000000000000000000001000000:")  # 127.0.0.1, ::1 as /proc/net writes them
        assert all(addr.startswith(loopback) for addr in mine.values()), mine
    finally:
        proc.send_signal(signal.SIGKILL)
        for pid in descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
