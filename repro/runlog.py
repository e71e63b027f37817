"""Run directories: ``config.json`` (every resolved setting and the environment), ``metrics.csv`` (one row
per evaluation, appended and flushed as written) and ``summary.json`` (written last: the run is complete)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from repro.errors import UsageError


def config_hash(settings: dict) -> str:
    """Identity of a run: the resolved settings that change its result (not where it is written)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def find_completed(task_dir: Path, identity: str) -> Path | None:
    for cfg in sorted(task_dir.glob("*/config.json")):
        try:
            if json.loads(cfg.read_text()).get("identity") == identity and (cfg.parent / "summary.json").exists():
                return cfg.parent
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


def environment() -> dict:
    import torch

    def git_commit() -> str | None:
        try:
            root = Path(__file__).resolve().parents[1]
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    return {
        "command": sys.argv,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hostname": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "git_commit": git_commit(),
    }


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


class MetricsCSV:
    """Appends one row per evaluation; the header is fixed when the run starts."""

    def __init__(self, path: Path, columns: list[str]):
        self.columns = columns
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        if self._file.tell() == 0:
            self._writer.writeheader()
            self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()
