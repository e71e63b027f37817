"""The shipped sbatch scripts (slurm/) on a real one-node Slurm cluster started here from Debian's slurm-wlm + munge.

The fixture runs its own munged (its own key and socket), slurmctld and slurmd on free ports, with every file in a
temporary folder, so nothing of the machine's own Slurm or munge set-up is read or changed; it stops the daemons it
started at the end. Without the binaries, as non-root, or when the daemons do not come up, the tests skip and say why (under CI, REPRO_REQUIRE_SERVICES=1, they fail instead).
CI installs them with `apt-get install -y slurm-wlm munge`.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import unavailable

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "slurm"
BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "scontrol", "scancel")
TINY = ["--set", "emsize=16", "--set", "nhid=16", "--set", "bptt=5", "--batch-size", "4", "--quiet"]
CPU_ONLY = ["--gpus-per-task=0"]  # the scripts ask for GPUs; the test cluster has none

pytestmark = [pytest.mark.slow, pytest.mark.dist]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path.name} not written)"


class Cluster:
    """A one-node Slurm cluster: the environment that reaches it, and job submission."""

    def __init__(self, root: Path, env: dict):
        self.root, self.env = root, env

    def cmd(self, *args, timeout=30, cwd=None, env=None) -> subprocess.CompletedProcess:
        return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env={**self.env, **(env or {})})

    def submit(self, *args, cwd: Path, env: dict | None = None) -> str:
        r = self.cmd("sbatch", "--parsable", *args, cwd=cwd, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().split(";")[0]

    def wait(self, job: str, timeout: float = 150) -> list[str]:
        """Wait until no part of the job (array elements included) is queued or running; its parts' end states."""
        deadline = time.monotonic() + timeout
        while self.cmd("squeue", "-h", "-j", job, "-o", "%i").stdout.strip():
            if time.monotonic() > deadline:
                self.cmd("scancel", job)
                log = tail(self.root / "slurmd.log")
                pytest.fail(f"job {job} did not finish in {timeout:.0f}s; slurmd log:\n{log}")
            time.sleep(0.5)
        lines = self.cmd("scontrol", "-o", "show", "job", job).stdout.splitlines()
        return [field.split("=", 1)[1] for line in lines for field in line.split() if field.startswith("JobState=")]


def job_environment(bin_dir: Path, conf: Path) -> dict:
    """The test's environment minus any outer Slurm/torchrun job, with `repro` = this Python first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    python_path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return {**env, "SLURM_CONF": str(conf), "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def node_cpus() -> int:
    """The CPU count slurmd finds (`slurmd -C`), so the node's configuration matches the hardware."""
    try:
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
        for field in out.split():
            if field.startswith("CPUs="):
                return int(field.split("=")[1])
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return os.cpu_count() or 1


SLURM_CONF = """\
ClusterName=repro-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MinJobAge=600
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        unavailable(f"Slurm test cluster: {', '.join(missing)} not found (apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        unavailable("Slurm test cluster: needs root (slurmd starts job steps as the submitting user)")
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "bin"):
        (root / sub).mkdir()
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"  # a key of our own: /etc/munge is neither read nor changed
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    (root / "plugstack.conf").write_text("")
    conf = root / "slurm.conf"
    ctld_port = free_port()
    slurmd_port = next(p for p in iter(free_port, None) if p != ctld_port)
    conf.write_text(SLURM_CONF.format(root=root, ctld_port=ctld_port, slurmd_port=slurmd_port, cpus=node_cpus()))
    repro = root / "bin" / "repro"  # the jobs' `repro` is this test's Python
    repro.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m repro "$@"\n')
    repro.chmod(0o755)
    env = job_environment(root / "bin", conf)

    daemons: list[subprocess.Popen] = []

    def start(*argv, log: str):
        with open(root / log, "ab") as out:
            daemons.append(subprocess.Popen([*map(str, argv)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True))

    def give_up(why: str, log: str):
        reason = f"Slurm test cluster: {why}:\n{tail(root / log)}"
        stop()
        unavailable(reason)

    def stop():
        for proc in reversed(daemons):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(daemons):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        daemons.clear()

    try:
        socket_path = root / "munge" / "munge.socket"
        start("munged", "-F", "-f", f"--key-file={key}", f"--socket={socket_path}", f"--pid-file={root}/munged.pid",
              f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed", log="munged.out")
        deadline = time.monotonic() + 15
        while not socket_path.exists() and daemons[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not socket_path.exists():
            give_up("munged did not start", "munged.log" if (root / "munged.log").exists() else "munged.out")
        start("slurmctld", "-D", "-c", "-f", conf, log="slurmctld.out")
        start("slurmd", "-D", "-N", "localhost", "-f", conf, log="slurmd.out")
        deadline, state = time.monotonic() + 45, ""
        while time.monotonic() < deadline:
            state = Cluster(root, env).cmd("sinfo", "-h", "-n", "localhost", "-o", "%t").stdout.strip()
            if state == "idle" or any(p.poll() is not None for p in daemons):
                break
            time.sleep(0.3)
        if state != "idle":
            dead = [Path(p.args[0]).name for p in daemons if p.poll() is not None]
            log = "slurmctld.log" if "slurmctld" in dead else "slurmd.log"
            give_up(f"node not idle after start (sinfo state {state or 'none'!r}; exited: {dead or 'none'})", log)
        yield Cluster(root, env)
    finally:
        if daemons:
            cluster = Cluster(root, env)
            jobs = cluster.cmd("squeue", "-h", "-o", "%A").stdout.split()
            if jobs:
                cluster.cmd("scancel", *jobs)
                time.sleep(2)
        stop()


def test_multinode_script_runs_one_celgc_run_over_two_slurm_tasks(slurm_cluster, tiny_corpus, tmp_path):
    out = tmp_path / "out"
    job = slurm_cluster.submit(
        "--nodes=1", "--ntasks=2", "--ntasks-per-node=2", *CPU_ONLY, "--output", tmp_path / "slurm-%j.out",
        SLURM / "multinode.sbatch",
        "lstm-text", "--algo", "celgc", "--interval", "2", "--max-steps", "3", "--data-dir", tiny_corpus, *TINY,
        "--out", out, cwd=tmp_path, env={"REPRO_MASTER_PORT": str(free_port())})
    states = slurm_cluster.wait(job)
    log = tail(tmp_path / f"slurm-{job}.out", 40)
    assert states == ["COMPLETED"], log
    runs = list((out / "lstm-text").iterdir())
    assert len(runs) == 1, (runs, log)  # one run of 2 ranks, not 2 runs (nor 2 x 2 spawned workers)
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["world_size"] == 2 and config["train"]["machines"] == 2 and config["nodes"] == 1
    assert config["sync"]["options"]["interval"] == 2
    assert (runs[0] / "summary.json").exists(), log


def test_sweep_array_script_shares_a_grid_out_over_four_array_tasks(slurm_cluster, tiny_corpus, tmp_path):
    out = tmp_path / "out"
    job = slurm_cluster.submit(
        "--array=0-3", "--gpus=0", "--output", tmp_path / "slurm-%A_%a.out", SLURM / "sweep-array.sbatch",
        "lstm-text", "--lr", "0.5,1,2,4", "--machines", "1", "--max-steps", "2", "--eval-batches", "2",
        "--data-dir", tiny_corpus, *TINY, "--out", out, cwd=tmp_path)
    states = slurm_cluster.wait(job)
    logs = {i: (tmp_path / f"slurm-{job}_{i}.out").read_text() for i in range(4)}
    assert states == ["COMPLETED"] * 4, logs
    for text in logs.values():  # every array task ran exactly one cell, and skipped none another task ran
        assert "sweep: 1 done, 0 failed" in text and "skipped" not in text, logs
    runs = list((out / "lstm-text").iterdir())
    lrs = sorted(json.loads((r / "config.json").read_text())["optimizer"]["hparams"]["lr"] for r in runs)
    assert lrs == [0.5, 1.0, 2.0, 4.0], (lrs, logs)  # 4 run folders, the 4 cells, none twice
