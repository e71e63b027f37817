"""Start N worker processes per node with PyTorch's own launcher machinery (the engine behind torchrun).

One node: `torch.distributed.elastic.multiprocessing.start_processes`, the workers meeting through a file store in
a private temporary folder, so a single-node run opens no listening socket (the TCP store of a static rendezvous
listens on every interface). Several nodes: `elastic_launch` with a static rendezvous on master_addr:master_port
(`--run-opt`; only on a trusted network: README "Running on a GPU box and on a cluster").

Worker output: rank 0 prints to the terminal (progress bar, epoch lines); the other ranks' output and every
worker's traceback go to log files (RUN_DIR/logs/), and a failure is one line naming the global rank and the exit
code or signal.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from repro.cores import usable_cores
from repro.errors import WorkersFailed  # noqa: F401 - raised here, caught by the CLI (which imports no torch)
from repro.worker import worker_main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agree_across_nodes(nodes: int, node_rank: int, master_addr: str, master_port: int, decide,
                       timeout_s: float = 600.0) -> str:
    """Node 0's ``decide()`` (e.g. "skip" when the run is complete), learned by every node through a store on
    master_port + 1 before anyone enters the workers' rendezvous: no node waits there for a run node 0 skipped."""
    from torch.distributed import TCPStore

    store = TCPStore(master_addr, master_port + 1, nodes, is_master=node_rank == 0,
                     timeout=timedelta(seconds=timeout_s), wait_for_workers=True)
    if node_rank == 0:
        store.set("decision", decide())
        deadline = time.monotonic() + timeout_s
        while store.add("read", 0) < nodes - 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # keep the store up until every node has read the decision
        return store.get("decision").decode()
    decision = store.get("decision").decode()
    store.add("read", 1)
    return decision


def _quiet_launcher_logs() -> None:
    """torch's launcher logs every failure with tracebacks; repro prints one line and keeps the details in files."""
    for name in ("torch.distributed.elastic", "torch.multiprocessing.spawn", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _threads(machines: int) -> str:
    budget = int(os.environ.get("REPRO_THREADS") or usable_cores())  # a sweep cell's share of the cores
    return os.environ.get("OMP_NUM_THREADS") or str(max(1, budget // machines))


def _failure_message(rank: int, exitcode: int, log: Path | None) -> str:
    import signal as signals

    if exitcode < 0:
        try:
            how = f"was killed by {signals.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"failed (exit code {exitcode})"
        reason = _last_error(log)
        if reason:
            how += f": {reason}"
    return f"worker rank {rank} {how}" + (f"; details in {log}" if log else "")


def _last_error(log: Path | None) -> str | None:
    """The exception line that ends a traceback in a worker's log ("OSError: [Errno 28] ..."), if any."""
    import re

    try:
        lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()[-50:]] if log else []
    except OSError:
        return None
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)(: .+)?$", line):
            return line[:300]
    return None


def launch(spec: dict, machines: int, nodes: int = 1, node_rank: int = 0, master_addr: str = "127.0.0.1",
           master_port: int | None = None, run_id: str | None = None) -> dict:
    """Run ``worker_main(spec)`` in ``machines`` processes on this node (world size = nodes x machines);
    returns global rank 0's result (on node 0)."""
    log_dir = Path(spec["run_dir"]) / "logs" if spec.get("run_dir") else Path(tempfile.mkdtemp(prefix="repro-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "log_dir": str(log_dir)}
    if nodes == 1 and machines == 1:
        return _run_in_process(spec, log_dir)
    if nodes == 1:
        return _launch_local(spec, machines, log_dir)
    return _launch_nodes(spec, machines, nodes, node_rank, master_addr, master_port or 29500, run_id)


def _run_in_process(spec: dict, log_dir: Path) -> dict:
    """One worker needs no second process (nor a second import of torch): it runs here."""
    import traceback

    from repro.worker import run_worker

    try:
        return run_worker(spec)
    except KeyboardInterrupt:
        raise
    except Exception:  # noqa: BLE001 - the details go to the log, the terminal gets one line
        log = log_dir / "rank0.log"
        with open(log, "a") as out:
            traceback.print_exc(file=out)
        raise WorkersFailed(_failure_message(0, 1, log)) from None


def _launch_local(spec: dict, machines: int, log_dir: Path) -> dict:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std, start_processes
    from torch.distributed.elastic.multiprocessing.api import SignalException

    private = Path(tempfile.mkdtemp(prefix="repro-store-"))  # mode 0700: only this user reaches the store
    envs = {r: {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(machines), "LOCAL_WORLD_SIZE": str(machines),
                "GROUP_RANK": "0", "REPRO_INIT_METHOD": f"file://{private / 'store'}",
                "OMP_NUM_THREADS": _threads(machines)} for r in range(machines)}
    # Rank 0 keeps the terminal (progress); the others write to log files.
    logs = DefaultLogsSpecs(log_dir=str(private / "elastic"),
                            redirects={r: Std.NONE if r == 0 else Std.ALL for r in range(machines)})
    _quiet_launcher_logs()
    forwarded, context = _forward_stop_signals(), None  # a signal while the workers start is kept, then passed on
    try:
        context = start_processes(name="repro-worker", entrypoint=worker_main,
                                  args={r: (spec,) for r in range(machines)}, envs=envs, logs_specs=logs,
                                  start_method=_start_method())
        forwarded.attach(context)
        result, stopped = None, set()
        while result is None:
            stopped.update(_stopped_ranks(context))  # seen stopped (SIGSTOP): the others will time out on it
            result = context.wait(timeout=1.0, period=0.05)  # torch polls every 1 s by default: up to 1 s late
        if result.is_failed():
            if forwarded.first is not None:  # told to stop, some worker before it could take the signal
                return {"status": "interrupted", "signal": forwarded.signum, "epochs_done": 0}
            hung = sorted(stopped)
            if hung:
                for pid in context.pids().values():
                    _kill(pid, signal.SIGKILL)
                _collect_logs(private / "elastic", log_dir)
                raise WorkersFailed(f"worker rank {hung[0]} stopped responding (stopped process); the others gave up "
                                    f"after --timeout {os.environ.get('REPRO_TIMEOUT_S', '300')} s")
            exitcodes = {rank: failure.exitcode for rank, failure in result.failures.items()}
            exitcodes.update(_other_exitcodes(context))
            # The cause: a worker killed by a signal, else the lowest failed rank (the others fail because it did).
            rank = min((r for r, c in exitcodes.items() if c), key=lambda r: (exitcodes[r] >= 0, r))
            _collect_logs(private / "elastic", log_dir)
            raise WorkersFailed(_failure_message(rank, exitcodes[rank], _rank_log(log_dir, rank)))
        return result.return_values.get(0) or {}
    except SignalException as e:  # from torch's handlers, while start_processes had them in place
        return {"status": "interrupted", "signal": int(e.sigval), "epochs_done": 0}
    finally:
        forwarded.restore()
        if context is not None:
            context.close()  # stops every worker still running (SIGTERM, then SIGKILL)
        _collect_logs(private / "elastic", log_dir)
        shutil.rmtree(private, ignore_errors=True)


class _forward_stop_signals:
    """While the workers run, SIGTERM/SIGINT to the launcher go to the workers, which stop after the current step
    and return "interrupted" (a scheduler or `kill` may signal only the launcher); a second signal more than 2 s
    later stops them at once. A signal that comes before the workers exist is passed on when they do."""

    def __init__(self):
        import signal

        self.context, self.first, self.signum = None, None, None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def attach(self, context) -> None:
        import signal

        self.context = context
        for signum in self.previous:  # starting the workers installed torch's handlers (they raise SignalException)
            signal.signal(signum, self._handle)
        if self.signum is not None:
            for pid in context.pids().values():
                _kill(pid, self.signum)

    def _handle(self, signum, frame):
        import signal

        now = time.monotonic()
        if self.first is not None and now - self.first > 2.0 and self.context is not None:
            for pid in self.context.pids().values():
                _kill(pid, signal.SIGKILL)
            return
        self.first, self.signum = self.first or now, self.signum or signum
        if self.context is not None:
            for pid in self.context.pids().values():
                _kill(pid, signum)

    def restore(self) -> None:
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _stopped_ranks(context) -> list[int]:
    """Ranks whose process is stopped (state T in /proc: SIGSTOP, a debugger)."""
    stopped = []
    for rank, pid in sorted(context.pids().items()):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("T", "t"):
            stopped.append(rank)
    return stopped


def _other_exitcodes(context, settle_s: float = 1.0) -> dict[int, int]:
    """Exit codes of every worker that has ended: torch reports only the first failure it polled, which may be a
    survivor that lost its peer rather than the worker that was killed."""
    processes = getattr(getattr(context, "_pc", None), "processes", None) or []
    deadline = time.monotonic() + settle_s
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {rank: p.exitcode for rank, p in enumerate(processes) if p.exitcode is not None}


def _start_method() -> str:
    from repro import forkserver

    return forkserver.start_method()  # see repro/forkserver.py


def _rank_log(log_dir: Path, rank: int) -> Path | None:
    path = log_dir / f"rank{rank}.log"
    return path if path.exists() else None


def _collect_logs(elastic_dir: Path, log_dir: Path) -> None:
    """The elastic launcher's per-rank stdout/stderr files, appended to RUN_DIR/logs/rankN.log."""
    for stream in sorted(elastic_dir.glob("**/[0-9]*/std*.log")):
        rank = stream.parent.name
        text = stream.read_text(errors="replace")
        if text.strip():
            with open(log_dir / f"rank{rank}.log", "a") as out:
                out.write(text)
        stream.unlink()


def _launch_nodes(spec: dict, machines: int, nodes: int, node_rank: int, master_addr: str, master_port: int,
                  run_id: str | None) -> dict:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ["OMP_NUM_THREADS"] = _threads(machines)
    _quiet_launcher_logs()
    config = LaunchConfig(
        min_nodes=nodes, max_nodes=nodes, nproc_per_node=machines,
        run_id=run_id or os.environ.get("REPRO_RUN_ID") or f"repro-{master_port}",
        rdzv_backend="static", rdzv_endpoint=f"{master_addr}:{master_port}", rdzv_configs={"rank": node_rank},
        max_restarts=0, monitor_interval=0.1, start_method=_start_method(),  # forked from the server, as on one node
    )
    try:
        results = elastic_launch(config, worker_main)(spec)
    except ChildFailedError as e:
        rank, first = min(e.failures.items())  # keyed by global rank (ProcessFailure has local_rank only)
        raise WorkersFailed(_failure_message(rank, first.exitcode, _rank_log(Path(spec["log_dir"]), rank))) from None
    return results.get(0, {}) if results else {}
