"""Run directories: ``config.json`` (every resolved setting and the environment), ``metrics.csv`` (one row
per evaluation, appended and flushed as written) and ``summary.json`` (written last: the run is complete)."""
from __future__ import annotations

import csv
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from repro.errors import UsageError


def find_completed(task_dir: Path, identity: str) -> Path | None:
    """A completed run with these settings; identities are recomputed from each config, so runs recorded by an
    older version (another identity scheme) are recognized too."""
    from repro.config import RunConfig

    for cfg in sorted(task_dir.glob("*/config.json")):
        if not (cfg.parent / "summary.json").exists():
            continue
        try:
            data = json.loads(cfg.read_text())
            if RunConfig.from_dict(data).identity(data.get("world_size", 1)) == identity:
                return cfg.parent
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            continue
    return None


def claim(task_dir: Path, identity: str):
    """An exclusive claim on a setting while this process lives (flock: released by the kernel when the process
    ends, however it ends; no stale file can block a later run). Returns the open lock file, or None when another
    live process holds the claim."""
    import fcntl

    locks = task_dir.parent / ".claims"  # beside the task folders, so listing a task's runs never meets it
    locks.mkdir(parents=True, exist_ok=True)
    handle = open(locks / f"{task_dir.name}-{identity}.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def hold(run_dir: Path):
    """Mark a run folder as in use by this process (flock on RUN_DIR/.alive, released when the process ends)."""
    import fcntl

    handle = open(run_dir / ".alive", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def is_alive(run_dir: Path) -> bool:
    """Whether a live process is running (or resuming) this run folder."""
    import fcntl

    path = run_dir / ".alive"
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def find_resumable(task_dir: Path, identity: str) -> Path | None:
    """An interrupted run with these settings that has a checkpoint (sweeps continue it instead of starting over)."""
    from repro import checkpoint

    for cfg in sorted(task_dir.glob("*/config.json")):
        run_dir = cfg.parent
        if (run_dir / "summary.json").exists() or checkpoint.newest(run_dir) is None:
            continue
        try:
            if json.loads(cfg.read_text()).get("identity") == identity:
                return run_dir
        except (OSError, ValueError):
            continue
    return None


def new_run_dir(out: Path, task: str, label: str) -> Path:
    """A fresh directory under out/task; an existing one (same settings run before) is never reused."""
    base = out / task
    try:
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = base / (label if n == 1 else f"{label}-r{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise UsageError(f"cannot write to output directory {out}: {e.strerror or e}") from None
    raise UsageError(f"too many runs named {label} in {base}")


def check_writable(out: Path) -> None:
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to output directory {out}")


def git_commit() -> str | None:
    """The source's commit (``-dirty`` with uncommitted changes); in an image without .git, the commit baked in
    at build time (``REPRO_GIT_COMMIT``)."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True,
                                   timeout=5)
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("REPRO_GIT_COMMIT") or None


def installed_packages() -> dict[str, str]:
    from importlib import metadata

    return {d.metadata["Name"].lower(): d.version for d in metadata.distributions() if d.metadata["Name"]}


def lock_status(packages: dict[str, str]) -> dict:
    """Whether the installed versions are those of the lock file (``REPRO_LOCK_FILE``, set by the images, else
    the repository's requirements/lock-cuda.txt or lock-cpu.txt by the torch build)."""
    import torch

    root = Path(__file__).resolve().parents[1]
    default = root / "requirements" / ("lock-cuda.txt" if torch.version.cuda else "lock-cpu.txt")
    path = Path(os.environ.get("REPRO_LOCK_FILE", default))
    if not path.is_file():
        return {"file": None, "used": False}
    pins = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    normalized = {k.replace("_", "-"): v for k, v in packages.items()}
    differ = sorted(f"{n} {normalized.get(n)} (lock: {v})" for n, v in pins.items()
                    if normalized.get(n, "").split("+")[0] != v.split("+")[0])
    return {"file": str(path), "used": not differ, "differences": differ}


def _system_info() -> dict:
    """The four facts of ``torch.utils.collect_env`` that a run records, from its own probes. Its
    ``get_env_info()`` also runs pip, conda, gcc, clang, cmake and lscpu, 0.6 s of every run's start-up for
    nothing recorded (the packages come from ``installed_packages``)."""
    from torch.utils import collect_env

    try:
        run = collect_env.run
        return {"cuda_runtime_version": collect_env.get_running_cuda_version(run),
                "nvidia_driver_version": collect_env.get_nvidia_driver_version(run),
                "os": collect_env.get_os(run), "libc_version": collect_env.get_libc_version()}
    except (AttributeError, TypeError):  # a torch whose collect_env is shaped otherwise: the whole report
        info = collect_env.get_env_info()
        return {key: getattr(info, key) for key in
                ("cuda_runtime_version", "nvidia_driver_version", "os", "libc_version")}


def environment() -> dict:
    """Where and with what a run ran: versions of Python, torch, CUDA, cuDNN, NCCL, the driver and every
    installed package (``torch.utils.collect_env`` gathers the system part)."""
    import torch

    info = _system_info()
    packages = installed_packages()
    nccl = None
    if torch.cuda.is_available():
        version = torch.cuda.nccl.version()
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return {
        "command": sys.argv,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_compiled": torch.version.cuda,
        "cuda_runtime": info["cuda_runtime_version"],
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nccl": nccl,
        "nvidia_driver": info["nvidia_driver_version"],
        "os": info["os"],
        "libc": info["libc_version"],
        "hostname": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "git_commit": git_commit(),
        "lock": lock_status(packages),
        "packages": packages,
    }


def write_status(run_dir: Path, status: str, **details) -> None:
    """RUN_DIR/status.json: running, done, diverged, failed or interrupted (with the reason)."""
    import time

    write_json(run_dir / "status.json", {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details})


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


class MetricsCSV:
    """Appends one row per evaluation; the header is fixed when the run starts: the columns its components declare.
    A row with a column the header lacks is refused (a component reporting a column it did not declare), never
    dropped; a declared column a row lacks stays empty (no evaluation in a diverged row). Reopening a file whose
    header lacks some declared columns (a run begun by an older version, resumed) rewrites it with them added, the
    rows kept, the new columns empty in them."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = Path(path)
        if len(set(columns)) != len(columns):
            raise ValueError(f"metrics columns named twice: {sorted(c for c in set(columns) if columns.count(c) > 1)}")
        self.columns = self._header(list(columns))
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        if self._file.tell() == 0:
            self._written(self._writer.writeheader)

    def _header(self, columns: list[str]) -> list[str]:
        """The declared columns, or the existing file's header widened to hold them (rewritten in place)."""
        if not self.path.is_file() or self.path.stat().st_size == 0:  # new, or a device (/dev/full reads forever)
            return columns
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            old, rows = list(reader.fieldnames or []), list(reader)
        if not old or not set(columns) - set(old):
            return old or columns
        merged = [c for c in old if c != "status"] + [c for c in columns if c not in old and c != "status"]
        if "status" in old or "status" in columns:
            merged.append("status")  # stays last
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=merged)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)
        return merged

    def write(self, row: dict) -> None:
        unknown = [k for k in row if k not in self.columns]
        if unknown:
            raise ValueError(f"metrics row has undeclared column(s) {', '.join(unknown)}: the component reporting "
                             f"them must declare them (metric_columns); {self.path} has {', '.join(self.columns)}")
        self._written(lambda: self._writer.writerow({k: ("" if v is None else v) for k, v in row.items()}))

    def _written(self, write) -> None:
        """Write and flush; a full disk is one clear line (the rows before stay; a resume drops a partial one)."""
        try:
            write()
            self._file.flush()
        except OSError as e:
            raise OSError(e.errno, f"cannot write {self.path}: {e.strerror or e}; the rows before and the last "
                                   "checkpoint are kept") from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the failed write was reported already
