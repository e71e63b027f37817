"""What each launched worker process runs: set up its rank, build the components, train, log."""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from repro import allocator, byzantine, checkpoint, optim, partition, schedules, sync
from repro.callbacks import GradientUpdateStats, from_settings
from repro.config import TrainSettings
from repro.context import RunContext, assign_roles
from repro.cores import usable_cores
from repro.progress import NullProgress, RichProgress
from repro.runlog import MetricsCSV, write_json
from repro.task import TASKS
from repro.trainer import Trainer


DEFAULT_TIMEOUT_S = 300  # --timeout: how long the workers wait for a peer that stopped responding


def setup_process() -> tuple[int, int, torch.device]:
    """Rank, world size and device from the launcher's environment; CUDA device per local rank + NCCL,
    otherwise gloo with the node's cores shared among its workers."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        # REPRO_THREADS: this node's core budget (a sweep of K cells gives each cores / K), shared by its workers.
        budget = int(os.environ.get("REPRO_THREADS") or usable_cores())
        torch.set_num_threads(max(1, budget // local_world))
        backend = "gloo"
    if world > 1 and not dist.is_initialized():  # joined under torchrun/srun, the CLI has set it up already
        # REPRO_INIT_METHOD: a file store for single-node runs (no listening socket); else env:// (MASTER_ADDR/PORT)
        # REPRO_TIMEOUT_S (--timeout): a collective that waits longer for a hung peer fails instead of waiting forever
        from datetime import timedelta

        dist.init_process_group(backend=backend, init_method=os.environ.get("REPRO_INIT_METHOD", "env://"),
                                rank=rank, world_size=world, device_id=device if backend == "nccl" else None,
                                timeout=timedelta(seconds=float(os.environ.get("REPRO_TIMEOUT_S", DEFAULT_TIMEOUT_S))))
    return rank, world, device


def apply_numerics(settings: TrainSettings) -> None:
    """The run's GPU switches (train settings tf32, deterministic), before any CUDA work. Both off by default: fp32
    matmuls and convolutions in full precision (torch's own default lets cuDNN use TF32)."""
    torch.backends.cuda.matmul.allow_tf32 = settings.tf32
    torch.backends.cudnn.allow_tf32 = settings.tf32
    if settings.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it when its handle is made
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


def leave_process_group(finished: bool) -> None:
    """Destroy the process group. After a finished run every rank first meets the others at a barrier: a rank that
    closes its gloo sockets while a peer is still draining its last collective can abort that peer
    ("terminate called without an active exception"). After a failure, no barrier (a dead peer never arrives)."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def die_with_parent() -> None:
    """Linux: end this worker when its parent ends, however it ends (SIGKILL of the launcher included), so no
    orphan keeps training."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(spec: dict) -> dict:
    """A launched worker's entry point: its traceback goes to RUN_DIR/logs/rankN.log, not the terminal (the
    launcher prints one line naming the rank)."""
    die_with_parent()
    try:  # name the process after its rank (ps, top, kill): "repro-rank3"
        Path("/proc/self/comm").write_text(f"repro-rank{os.environ.get('RANK', '0')}"[:15])
    except OSError:
        pass
    try:
        return run_worker(spec)
    except BaseException:  # noqa: BLE001 - logged, then the process ends with exit code 1
        import traceback

        rank = os.environ.get("RANK", "0")
        log_dir = Path(spec.get("log_dir") or ".")
        with open(log_dir / f"rank{rank}.log", "a") as log:
            traceback.print_exc(file=log)
        os._exit(1)


class StopRequest:
    """Set by SIGTERM or SIGINT: the trainer stops after the current step on every worker (a second signal ends
    the process at once). Cluster schedulers send SIGTERM before the time limit; torch's agent, SIGKILL 30 s later."""

    def __init__(self):
        self.signal: int | None = None
        self.at = 0.0

    def install(self) -> None:
        import signal

        def handler(signum, frame):
            # The same signal may arrive twice at once (the terminal and the launcher both send it): a second
            # one counts as "stop now" only when it comes more than 2 s after the first.
            if self.signal is not None and time.monotonic() - self.at > 2.0:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            if self.signal is None:
                self.signal, self.at = signum, time.monotonic()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)

    def __call__(self) -> bool:
        return self.signal is not None


def gather_states(state: dict, rank: int, world: int) -> list[dict] | None:
    """Every rank's trainer state on global rank 0 (None elsewhere)."""
    if world == 1:
        return [state]
    states = [None] * world if rank == 0 else None
    dist.gather_object(state, states, dst=0)
    return states


def shared_checkpoint_folder(run_dir: Path | None, rank: int, world: int, device) -> Path | None:
    """The run's checkpoint folder when every rank sees it (one node, or nodes sharing a file system), so each rank
    can write its own state there; None when some rank does not (its states are then gathered to rank 0). Rank 0
    leaves a file there that the others look for: a collective, every rank takes part."""
    if world == 1:
        return None
    import uuid

    announced: list = [None]
    if rank == 0 and run_dir is not None:
        target = checkpoint.folder(run_dir)
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".probe-{uuid.uuid4().hex}"
        probe.touch()
        announced = [(str(target), probe.name)]
    dist.broadcast_object_list(announced, src=0)
    if announced[0] is None:
        return None
    target, probe_name = Path(announced[0][0]), announced[0][1]
    sees = torch.tensor([1.0 if (target / probe_name).exists() else 0.0], device=device)
    dist.all_reduce(sees, op=dist.ReduceOp.MIN)
    if rank == 0:
        (target / probe_name).unlink(missing_ok=True)
    return target if sees.item() == 1.0 else None


def save_states(state: dict, rank: int, world: int, shards: Path | None, epoch: int, step: int | None,
                identity: str, write) -> Path | None:
    """Every rank's state into one checkpoint: each rank writes its own file into ``shards`` (when all can) and
    rank 0 the file that lists them, after all are written; otherwise the states travel to rank 0, which writes
    them into one file. ``write(states)`` is rank 0's ``checkpoint.save``. A collective: every rank takes part."""
    if shards is None:
        states = gather_states(state, rank, world)
        return write(states) if rank == 0 else None
    try:
        outcome: str | checkpoint.CheckpointError = checkpoint.save_shard(shards, epoch, identity, rank, state,
                                                                          step=step)
    except checkpoint.CheckpointError as e:
        outcome = e
    outcomes = [None] * world if rank == 0 else None
    dist.gather_object(outcome, outcomes, dst=0)  # file names (or the error): the states stay where they are
    if rank != 0:
        return None
    failed = [o for o in outcomes if isinstance(o, checkpoint.CheckpointError)]
    if failed:
        raise failed[0]
    return write(outcomes)


def run_worker(spec: dict) -> dict:
    settings = TrainSettings(**spec["train"])  # validated when the run was resolved
    allocator.keep_freed_memory()  # every step reuses the last one's memory instead of mapping it afresh
    apply_numerics(settings)
    rank, world, device = setup_process()
    stop = StopRequest()
    stop.install()
    finished = False  # every rank reached the end together (a finished or an agreed interrupted run)
    try:
        task_cls = TASKS.get(spec["task"]["name"])
        sync.SYNC_POLICIES.get(spec["sync"]["name"])  # its package imported: components that assign roles registered
        context = RunContext.build(rank, world, device, settings.seed, assign_roles(spec, world))
        seed_everything(context.seed)  # same seed everywhere: the same initial weights (broadcast_model checks)
        task = task_cls(task_cls.parse_options(spec["task"]["options"]), rank=rank, world_size=world, device=device)
        faults = byzantine.fault_model(spec.get("byzantine"), world)
        if faults and rank in faults.ranks and faults.behaviour.acts_on == "labels":
            task.flip_labels()
        split = spec.get("partition") or {"name": "iid"}
        if split["name"] != "iid" and spec.get("strategy", {}).get("name", "none") == "none":  # (federated: clients')
            task.use_shard(partition.split(split["name"], task.train_y.cpu(), world, context.seed,
                                           **split.get("options", {}))[rank])
        task.eval_batch_limit = settings.eval_batches
        if settings.channels_last:
            task.use_channels_last()  # before the broadcast and the optimizer: the parameters keep this layout
        sync.broadcast_model(task.model)
        seed_everything(context.rank_seed)  # then each worker draws its own dropout masks and batches
        if spec.get("strategy", {}).get("name", "none") != "none":  # federated clients: their driver replaces the loop
            from repro.federated.loop import run_federated

            saves = spec.get("checkpoints", True)
            shards = shared_checkpoint_folder(Path(spec["run_dir"]) if rank == 0 and spec.get("run_dir") else None,
                                              rank, world, device) if saves else None
            last = run_federated(spec, task, context, stop, save_states, shards)
            finished = True
            return {**last, "signal": stop.signal} if last.get("status") == "interrupted" else last
        optimizer = optim.make(spec["optimizer"]["name"],
                               optim.param_groups(task.model, spec["optimizer"].get("param_groups", "all")),
                               context=context, **spec["optimizer"]["hparams"])
        policy = sync.make(spec["sync"]["name"], context=context, faults=faults, **spec["sync"]["options"])
        schedule = schedules.make(spec["schedule"]["name"], settings.epochs, **spec["schedule"]["options"])
        run_dir = Path(spec["run_dir"]) if rank == 0 and spec.get("run_dir") else None
        # Every rank records the same callbacks (their state must line up in checkpoints); rank 0 saves the stats.
        callbacks = from_settings(settings, with_stats=True)
        minutes = spec.get("checkpoint_minutes")

        progress = NullProgress()
        if rank == 0 and not spec.get("quiet"):
            progress = RichProgress(settings.epochs, task.sample_unit, task.metric_columns)
        trainer = Trainer(task, optimizer, policy, schedule, settings, None, progress, context, callbacks,
                          checkpoint_seconds=60.0 * float(minutes) if minutes else None)
        sink = MetricsCSV(run_dir / "metrics.csv", trainer.columns) if run_dir is not None else None
        trainer.sink = sink
        if spec.get("resume_from"):
            resume_from = Path(spec["resume_from"])
            payload = checkpoint.load(resume_from, identity=spec.get("identity"), world_size=world)
            trainer.load_state_dict(checkpoint.rank_state(resume_from, payload, rank))
            del payload

        said = []  # the checkpoint size is printed once
        saves = spec.get("checkpoints", True)  # the same on every node
        shards = shared_checkpoint_folder(run_dir, rank, world, device) if saves else None

        def save_checkpoint(trainer: Trainer, row: dict | None = None) -> None:
            """At an epoch end (``row``: the row just logged) or between two steps (a stop, --checkpoint-minutes)."""
            step = trainer.counts["iteration"] if trainer.mid_epoch else None
            identity = spec.get("identity") or ""

            def write(states):
                if run_dir is None:  # rank 0 of a run without a folder (a benchmark)
                    return None
                return checkpoint.save(run_dir, trainer.epoch, identity, states,
                                       keep=int(spec.get("keep_checkpoints", 1)), step=step,
                                       extra={"csv_rows": trainer.counts["rows"]})

            # a collective: every rank takes part
            path = save_states(trainer.state_dict(), rank, world, shards, trainer.epoch, step, identity, write)
            if path is not None and not said and not spec.get("quiet"):
                said.append(path)
                size = checkpoint.total_size(path)
                print(f"checkpoint {path.name}: {checkpoint.size_text(size)} (the newest "
                      f"{spec.get('keep_checkpoints', 1)} kept in {path.parent})", file=sys.stderr)

        try:
            saving = save_checkpoint if saves else None
            last = trainer.run(should_stop=stop, on_epoch_end=saving, on_checkpoint=saving)
        finally:
            progress.close()
            if sink is not None:
                sink.close()
        finished = True
        if last.get("status") == "interrupted":
            return {**last, "signal": stop.signal}
        for callback in callbacks:
            if run_dir is not None and isinstance(callback, GradientUpdateStats):
                callback.stats.save(run_dir / "stats.npz")
        if run_dir is not None:
            write_json(run_dir / "summary.json", last)
        return last
    finally:
        leave_process_group(finished)
