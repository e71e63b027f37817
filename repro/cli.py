"""The ``repro`` command: list, run, sweep, plot."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Optional

import click
import typer

from repro.errors import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproduce CELGC (local gradient clipping), AdamW vs Adam-l2 and SGDOL benchmarks.")

RUN_HELP = "Train TASK with one optimizer and sync policy on --machines worker processes."


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


@app.command("list")
def list_components():
    """Tasks (with presets), optimizers, sync policies, algorithm aliases and figures."""
    from repro import optim, sync
    from repro.figures import FIGURES
    from repro.runspec import ALGORITHMS
    from repro.task import TASKS

    for name in TASKS.names():
        cls = TASKS.get(name)
        typer.echo(f"task        {name:<22} presets: {', '.join(cls.presets)}  {cls.description}")
    typer.echo(f"optimizers  {', '.join(optim.OPTIMIZERS.names())}")
    typer.echo(f"sync        {', '.join(sync.SYNC_POLICIES.names())}")
    typer.echo("algos       " + ", ".join(f"{a} = {o} + {s}" for a, (o, s) in ALGORITHMS.items()))
    typer.echo(f"figures     {', '.join(FIGURES.names())}")


@app.command("run", help=RUN_HELP)
def run(
    task: str = typer.Argument(..., help="Task name (see `repro list`)."),
    preset: str = typer.Option("quick", help="Settings bundle: `quick` (laptop scale) or `paper` (the authors')."),
    machines: Optional[int] = typer.Option(None, "--machines", "-n", help="Worker processes per node (the papers' machines). Default: the preset's."),
    algo: Optional[str] = typer.Option(None, help="Paper algorithm alias: celgc, naive-parallel-clip, local-sgd, minibatch-sgd."),
    optimizer: Optional[str] = typer.Option(None, help="Optimizer name (overrides --algo)."),
    lr: Optional[float] = typer.Option(None, help="Step size (eta)."),
    clip: Optional[float] = typer.Option(None, help="Clipping threshold gamma (clipped-sgd)."),
    momentum: Optional[float] = typer.Option(None, help="Momentum."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay (lambda)."),
    smoothness: Optional[float] = typer.Option(None, help="SGDOL: assumed smoothness M (stepsize starts at 1/M, stays in [0, 2/M])."),
    alpha: Optional[float] = typer.Option(None, help="SGDOL: initial regularizer alpha of the stepsize learner."),
    sync: Optional[str] = typer.Option(None, help="Sync policy: every-step, periodic, none (overrides --algo)."),
    interval: Optional[int] = typer.Option(None, "--interval", "-I", help="Local steps between model averages (periodic)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", "--scheduler", help="Step-size schedule: constant, step, cosine."),
    no_bn: bool = typer.Option(False, "--no-bn", help="Build the network without any BatchNorm layer (task option bn=false)."),
    loss_multiplier: Optional[float] = typer.Option(None, help="Multiply the training objective by c (scale-freeness test)."),
    log_stats: list[int] = typer.Option([], "--log-stats", help="Record gradient/update magnitude histograms at this epoch (repeatable) into stats.npz."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (one epoch = the training set once, summed over workers)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps per worker (smoke test)."),
    eval_batches: Optional[int] = typer.Option(None, help="Score only this many evaluation batches per worker (default: all; 20 with --max-steps)."),
    batch_size: Optional[int] = typer.Option(None, help="Local (per-worker) batch size."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    data_dir: Optional[str] = typer.Option(None, help="Folder with the data set files (default: env var, then ~/.cache/repro)."),
    set_option: list[str] = typer.Option([], "--set", help="Task option KEY=VALUE (repeatable), e.g. --set bptt=70."),
    out: Path = typer.Option(Path("results"), help="Where run directories are written."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or epoch lines."),
    nodes: int = typer.Option(1, help="Number of nodes in the job."),
    node_rank: int = typer.Option(0, help="This node's rank (0 .. nodes-1)."),
    master_addr: str = typer.Option("127.0.0.1", help="Rendezvous host (node 0's address)."),
    master_port: Optional[int] = typer.Option(None, help="Rendezvous port (default: a free port on one node, 29500 across nodes)."),
    skip_completed: bool = typer.Option(False, hidden=True, help="Skip when a completed run with the same settings exists (sweeps)."),
    validate_only: bool = typer.Option(False, hidden=True),
):
    from repro import runlog, runspec

    hparams = {k: v for k, v in dict(lr=lr, clip=clip, momentum=momentum, weight_decay=weight_decay).items() if v is not None}
    hparams.update({k: v for k, v in dict(smoothness=smoothness, alpha=alpha).items() if v is not None})
    task_options = {}
    for item in set_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        task_options[key.replace("-", "_")] = _parse_value(value)
    if batch_size is not None:
        task_options["batch_size"] = batch_size
    if no_bn:
        task_options["bn"] = False
    if data_dir is not None:
        task_options["data_dir"] = data_dir
    if nodes < 1 or not 0 <= node_rank < nodes:
        raise UsageError(f"need nodes >= 1 and 0 <= node-rank < nodes, got nodes={nodes}, node-rank={node_rank}")
    request = runspec.RunRequest(
        task=task, preset=preset, algo=algo, optimizer=optimizer, hparams=hparams, sync=sync,
        sync_options={} if interval is None else {"interval": interval}, schedule=schedule,
        task_options=task_options, machines=machines, epochs=epochs, max_steps=max_steps, eval_batches=eval_batches, seed=seed,
        loss_multiplier=loss_multiplier, log_stats=list(log_stats))
    spec = runspec.resolve(request)
    world = spec["train"]["machines"] * nodes
    runlog.check_writable(out)
    if validate_only:
        return
    identity = runspec.identity(spec, world)
    task_dir = out / task
    if skip_completed and node_rank == 0:
        done = runlog.find_completed(task_dir, identity)
        if done is not None:
            typer.echo(f"skip {done} (completed)", err=True)
            return
    spec = runspec.prepare_data(spec)

    run_dir = None
    if node_rank == 0:  # global rank 0 lives on node 0 and writes the logs
        run_dir = runlog.new_run_dir(out, task, f"{runspec.label(spec, world)}_{identity}")
        runlog.write_json(run_dir / "config.json", {**spec, "identity": identity, "world_size": world,
                                                    "nodes": nodes, "environment": runlog.environment()})
        if not quiet:
            typer.echo(f"run {run_dir}", err=True)
    from repro.launch import launch

    last = launch({**spec, "run_dir": str(run_dir) if run_dir else None, "quiet": quiet},
                  machines=spec["train"]["machines"], nodes=nodes, node_rank=node_rank,
                  master_addr=master_addr, master_port=master_port)
    if last and not quiet:
        typer.echo(json.dumps({k: last[k] for k in sorted(last) if k != "status"}), err=True)


@app.command("sweep", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sweep(ctx: typer.Context, task: str = typer.Argument(..., help="Task name."),
          dry_run: bool = typer.Option(False, "--dry-run", help="List the runs without starting them.")):
    """Run the cartesian product of comma-separated flag values one after another, e.g.
    `repro sweep lstm-ptb --interval 2,4,8,16 --lr 10,30`. Any `repro run` flag may take a list; runs whose
    completed results already exist are skipped."""
    args = list(ctx.args)
    axes: list[list[list[str]]] = []
    i = 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("-"):
            raise UsageError(f"unexpected argument {flag!r} (flags look like --lr 0.1,1)")
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            axes.append([[flag, v] for v in args[i + 1].split(",")])
            i += 2
        else:
            axes.append([[flag]])
            i += 1
    combos = [[task, *itertools.chain.from_iterable(c)] for c in itertools.product(*axes)]
    for combo in combos:  # validate every combination before starting any
        _invoke_run([*combo, "--validate-only"])
    for n, combo in enumerate(combos, 1):
        typer.echo(f"[{n}/{len(combos)}] repro run {' '.join(combo)}", err=True)
        if not dry_run:
            _invoke_run([*combo, "--skip-completed"])


def _invoke_run(argv: list[str]) -> None:
    command = typer.main.get_command(app)
    command.main(["run", *argv], standalone_mode=False)


@app.command("plot")
def plot(figure: str = typer.Argument(..., help="Figure name (see `repro list`)."),
         results: Path = typer.Option(Path("results"), help="Folder of run directories."),
         out: Optional[Path] = typer.Option(None, help="Where PNG and PDF files go (default: RESULTS/figures)."),
         preset: Optional[str] = typer.Option(None, help="Only runs of this preset.")):
    """Redraw a paper figure from the CSV logs under --results (PNG + PDF)."""
    from repro.figures import FIGURES
    from repro.runlog import check_writable

    draw = FIGURES.get(figure)
    if not results.is_dir():
        raise UsageError(f"results folder {results} does not exist")
    out = out or results / "figures"
    check_writable(out)
    for path in draw(results, out, preset=preset):
        typer.echo(str(path))


def main() -> None:
    from repro.launch import WorkersFailed

    try:
        command = typer.main.get_command(app)
        command.main(sys.argv[1:] or ["--help"], prog_name="repro", standalone_mode=False)
    except UsageError as e:
        print(f"repro: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (click.exceptions.ClickException, typer.exceptions.TyperException) as e:  # bad flag, non-number...
        if hasattr(e, "format_message"):
            print(f"repro: error: {e.format_message()}".replace("\n", " "), file=sys.stderr)
            sys.exit(2)
        code = getattr(e, "exit_code", None)  # Exit (help shown) or Abort (Ctrl-C at a prompt)
        sys.exit(130 if code is None else code)
    except WorkersFailed as e:
        print(f"repro: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
