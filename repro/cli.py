"""The ``repro`` command: list, run, resume, sweep, plot, summarize."""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

from repro import components
from repro.components import kind
from repro.config import train_fields
from repro.errors import UsageError, WorkersFailed

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproduce the benchmarks of deep-learning optimization papers (`repro list`: the papers, their "
                       "tasks, recipes, components and experiments).")

RUN_HELP = ("Train TASK on --machines worker processes with one component of each kind ("
            + ", ".join(k.name for k in components.KINDS) + "): --KIND NAME chooses one, --KIND-opt KEY=VALUE sets any of its "
            "options (names and options: `repro list`).")


def _parse_value(text: str):
    """A KEY=VALUE value: int, float, true/false, a comma-separated list of those ([a,b] too: a sweep keeps a
    bracketed list whole), else the text itself."""
    if text.startswith("[") and text.endswith("]"):
        return [_parse_value(part) for part in text[1:-1].split(",") if part]
    if "," in text:
        return [_parse_value(part) for part in text.split(",") if part]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _key_values(flag: str, items: list[str]) -> dict:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        values[key.replace("-", "_")] = _parse_value(value)
    return values


@app.command("list")
def list_components():
    """Papers, tasks, recipes (with the --preset alias each answers to), every kind of component, algorithms,
    figures, experiments."""
    from repro import recipes
    from repro.algorithms import ALGORITHMS
    from repro.figures import FIGURES
    from repro.task import TASKS

    for paper in recipes.PAPERS:
        typer.echo(f"paper       {paper:<22} {recipes.PAPERS.get(paper).citation}")
    for name in TASKS.names():
        cls = TASKS.get(name)
        typer.echo(f"task        {name:<22} presets: {', '.join(recipes.presets_of(name)) or '-'}  {cls.description}")
    for name in recipes.RECIPES.names():
        r = recipes.RECIPES.get(name)
        alias = f"--preset {r.preset}" + (f" --optimizer {'/'.join(r.for_optimizers)}" if r.for_optimizers else "")
        tasks = r.tasks[0] if len(r.tasks) == 1 else f"{r.tasks[0]} (+{len(r.tasks) - 1})"
        typer.echo(f"recipe      {name:<34} {tasks:<22} {alias:<40} {r.summary}")
    for k in components.KINDS:  # each component with its options (--KIND-opt KEY=VALUE) and their defaults
        for name in k.registry.names():
            options = ", ".join(f"{key}={_shown(v)}" for key, v in k.keywords(name).items()) or "-"
            typer.echo(f"{k.name:<11} {name:<22} {k.opt_flag}: {options}")
    for name in ALGORITHMS:
        algo = ALGORITHMS.get(name)
        typer.echo(f"algo        {name:<22} {algo.describe():<28} {algo.summary}")
    typer.echo(f"figures     {', '.join(FIGURES.names())}")
    from repro.experiments import EXPERIMENTS

    for name in EXPERIMENTS.names():
        exp = EXPERIMENTS.get(name)
        quick = exp.scales.get("quick")
        typer.echo(f"experiment  {name:<22} {exp.paper}  claims {', '.join(c.id for c in exp.claims):<48} "
                   f"quick: {quick.plan_text() if quick else 'none'}")


def _shown(default) -> str:
    import inspect

    return "REQUIRED" if default is inspect.Parameter.empty else str(default)


# The command line of `repro run` --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shortcut:
    """An older spelling of a generic flag (recorded command lines, experiments' settings, scripts), rewritten into
    the generic form before the command line is parsed."""

    flag: str  # the generic flag
    key: str
    value: Optional[str] = None  # a switch: the value it sets; None: the flag takes a value
    values: Optional[dict] = None  # the only values it takes, and what each means
    repeatable: bool = False  # repeated: one list (--log-stats 1 --log-stats 5 = log_stats=1,5)


def _shortcuts() -> dict[str, Shortcut]:
    opt, task, train, run = kind("optimizer").opt_flag, "--set", "--train-opt", "--run-opt"
    return {
        **{f"--{k.replace('_', '-')}": Shortcut(opt, k) for k in ("clip", "momentum", "weight_decay", "smoothness",
                                                                 "alpha", "param_groups")},
        "--batch-size": Shortcut(task, "batch_size"),
        "--no-bn": Shortcut(task, "bn", "false"),
        **{f"--{k.replace('_', '-')}": Shortcut(train, k) for k in ("max_steps", "eval_batches", "loss_multiplier",
                                                                   "eval_sync", "pairing")},
        "--log-stats": Shortcut(train, "log_stats", repeatable=True),
        "--tf32": Shortcut(train, "tf32", values={"on": "true", "off": "false"}),
        "--deterministic": Shortcut(train, "deterministic", "true"),
        "--compile": Shortcut(train, "compile", "true"),
        "--channels-last": Shortcut(train, "channels_last", "true"),
        "--keep-checkpoints": Shortcut(run, "keep_checkpoints"),
        "--checkpoint-minutes": Shortcut(run, "checkpoint_minutes"),
        "--timeout": Shortcut(run, "timeout"),
        "--skip-completed": Shortcut(run, "skip_completed", "true"),
        "--report": Shortcut(run, "report"),
        "--validate-only": Shortcut(run, "only", "validate"),
        "--resolve-only": Shortcut(run, "only", "resolve"),
        "--quiet": Shortcut(run, "quiet", "true"),
        "-q": Shortcut(run, "quiet", "true"),
        **{f"--{k.replace('_', '-')}": Shortcut(run, k) for k in ("nodes", "node_rank", "master_addr", "master_port")},
    }


# Flags of `repro run` that have no KEY=VALUE form: given, a one-line error says what replaced them.
REMOVED_FLAGS = {"--from": "give the recorded run as TASK: `repro run RUN_DIR [flags]` replays it, flags override it"}


def translate_shortcuts(args: list[str]) -> list[str]:
    """``args`` with every older per-setting flag in its generic form (`--clip 1` -> `--optimizer-opt clip=1`)."""
    shortcuts, out, first = _shortcuts(), [], {}
    i = 0
    while i < len(args):
        flag, inline, rest = args[i].partition("=")
        if flag in REMOVED_FLAGS:
            raise UsageError(f"{flag} is no longer a flag of `repro run`: {REMOVED_FLAGS[flag]}")
        short = shortcuts.get(flag) if args[i].startswith("-") else None
        if short is None:
            out.append(args[i])
            i += 1
            continue
        if short.value is not None:
            value, i = short.value, i + 1
        elif inline:
            value, i = rest, i + 1
        elif i + 1 < len(args):
            value, i = args[i + 1], i + 2
        else:
            raise UsageError(f"Option '{flag}' requires an argument.")
        if short.values is not None:
            if value not in short.values:
                raise UsageError(f"{flag} takes {' or '.join(short.values)}, got {value!r}")
            value = short.values[value]
        if short.repeatable and flag in first:
            out[first[flag]] += f",{value}"
            continue
        out += [short.flag, f"{short.key}={value}"]
        first[flag] = len(out) - 1
    return out


class RunCommand(TyperCommand):
    """`repro run`: older flag spellings accepted (translate_shortcuts); the help names each kind's components."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, translate_shortcuts(list(args)))

    def format_help(self, ctx, formatter) -> None:
        from repro.algorithms import ALGORITHMS

        for param in self.params:
            if param.name in {k.name for k in components.KINDS}:
                param.help = f"{kind(param.name).help}: {', '.join(kind(param.name).registry.names())}."
            elif param.name == "algo":
                param.help = "Paper algorithm, a choice of components: " + "; ".join(
                    f"{a} = {ALGORITHMS.get(a).describe()}" for a in ALGORITHMS) + "."
        super().format_help(ctx, formatter)


def _with_component_flags(command):
    """``command`` with --KIND NAME and --KIND-opt KEY=VALUE for every kind of the component table in place of its
    ``components`` parameter, which receives them as {kind: (name or None, [KEY=VALUE, ...])}."""
    import functools
    import inspect

    keyword = inspect.Parameter.KEYWORD_ONLY
    generated = []
    for k in components.KINDS:  # names only: a registry is imported when first needed (most import torch)
        attr = k.name.replace("-", "_")
        generated += [
            inspect.Parameter(attr, keyword, annotation=Optional[str], default=typer.Option(
                None, k.flag, *k.flag_aliases, show_default=False, help=f"{k.help} (names: `repro list`).")),
            inspect.Parameter(f"{attr}_opt", keyword, annotation=list[str], default=typer.Option(
                [], k.opt_flag, *k.opt_aliases, help=f"An option of the {k.name}, KEY=VALUE (repeatable; its "
                                                    "options: `repro list`).")),
        ]
    signature = inspect.signature(command)
    params = []
    for p in signature.parameters.values():
        params += generated if p.name == "components" else [p.replace(kind=keyword)]

    @functools.wraps(command)
    def with_flags(**given):
        chosen = {k.name: (given.pop(k.name.replace("-", "_")), given.pop(f"{k.name.replace('-', '_')}_opt"))
                  for k in components.KINDS}
        return command(**given, components=chosen)

    with_flags.__signature__ = signature.replace(parameters=params)
    return with_flags


@dataclass
class RunOptions:
    """How a run is carried out, not what it computes (never part of its identity): `--run-opt KEY=VALUE`."""

    keep_checkpoints: int = 1  # keep the newest K checkpoints (one at every epoch end, and when stopped by a signal)
    checkpoint_minutes: Optional[float] = None  # also checkpoint mid-epoch every M minutes (default: epoch ends)
    timeout: float = 300.0  # seconds the workers wait for a peer that stopped responding before the run fails
    skip_completed: bool = False  # skip when a completed run of these settings exists; resume an interrupted one
    report: Optional[str] = None  # write the run folder and final status here (a sweep's cells)
    only: Optional[str] = None  # validate | resolve: check the settings and stop (sweeps check every cell first)
    quiet: bool = False  # no progress bar or epoch lines
    # Several nodes by hand (the same command on each; Slurm and torchrun set these themselves)
    nodes: int = 1  # nodes (computers) in the job: world size = machines x nodes
    node_rank: int = 0  # this node's rank, 0 .. nodes-1
    master_addr: str = "127.0.0.1"  # the rendezvous host: node 0's address
    master_port: Optional[int] = None  # the rendezvous port (default: a free port on one node, 29500 across nodes)

    def validate(self) -> None:
        for switch in ("skip_completed", "quiet"):
            if not isinstance(getattr(self, switch), bool):
                raise UsageError(f"{switch} must be true or false, got {getattr(self, switch)!r}")
        if not (isinstance(self.nodes, int) and isinstance(self.node_rank, int) and 0 <= self.node_rank < self.nodes):
            raise UsageError(f"need nodes >= 1 and 0 <= node_rank < nodes, got nodes={self.nodes}, "
                             f"node_rank={self.node_rank}")
        if self.master_port is not None and not (isinstance(self.master_port, int) and 0 < self.master_port < 65536):
            raise UsageError(f"master_port must be a port number (1-65535), got {self.master_port!r}")
        if not (isinstance(self.master_addr, str) and self.master_addr):
            raise UsageError(f"master_addr must be a host name or address, got {self.master_addr!r}")
        if not (isinstance(self.keep_checkpoints, int) and self.keep_checkpoints >= 1):
            raise UsageError(f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}")
        if self.checkpoint_minutes is not None and not self.checkpoint_minutes > 0:
            raise UsageError(f"checkpoint_minutes must be > 0, got {self.checkpoint_minutes}")
        if not self.timeout > 0:
            raise UsageError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.only not in (None, "validate", "resolve"):
            raise UsageError(f"only must be validate or resolve, got {self.only!r}")

    def saving(self) -> dict:
        """The checkpoint settings handed to the workers."""
        return {"keep_checkpoints": self.keep_checkpoints, "checkpoint_minutes": self.checkpoint_minutes}


def _settings_of(cls, what: str, items: list[str], flag: str):
    """``cls(**KEY=VALUE items)`` with the values typed as ``cls`` declares; unknown keys in one line."""
    import dataclasses

    values = components.typed(_key_values(flag, items), components.hints_of(cls), what)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(f"{flag}: unknown {what}(s) {', '.join(unknown)} (known: {', '.join(known)})")
    settings = cls(**values)
    settings.validate()
    return settings


@dataclass
class RunArgs:
    """One `repro run` command line, its flags translated: what to run (RunRequest keywords, plain data), the
    recorded run it starts from (TASK given as a run folder), where it goes and how it is carried out."""

    request: dict
    from_run: Optional[Path]
    out: Path
    how: RunOptions


# Single-value flags kept for the settings changed most: each sets one key of one section (the generic
# KEY=VALUE form of the same key, given too, wins).
DIRECT_FLAGS = {"lr": ("optimizer", "lr"), "interval": ("sync", "interval"), "machines": ("train", "machines"),
                "epochs": ("train", "epochs"), "seed": ("train", "seed"), "data_dir": ("task", "data_dir")}
TRAIN_KEYS = ", ".join(sorted(train_fields()))
RUN_KEYS = ", ".join(f.name for f in fields(RunOptions) if f.name not in ("report", "only"))


@app.command("run", help=RUN_HELP, cls=RunCommand)
@_with_component_flags
def run(
    task: str = typer.Argument(..., help="A task (its --preset picks the recipe), a recipe name (`repro list`), or a recorded run to replay (its folder or config.json; flags override its settings)."),
    preset: Optional[str] = typer.Option(None, help="Recipe alias for the task: `quick` (laptop scale, the default), `paper` (the authors'), ... (`repro list`)."),
    machines: Optional[int] = typer.Option(None, "--machines", "-n", help="Worker processes per node: the papers' 'machines' N (world size = machines x nodes, --run-opt nodes=K). Default: the recipe's."),
    algo: Optional[str] = typer.Option(None, help="Paper algorithm alias (a choice of components; `repro list`)."),
    components: dict = None,  # --KIND NAME and --KIND-opt KEY=VALUE for every kind of the component table
    lr: Optional[float] = typer.Option(None, help="Step size (eta): --optimizer-opt lr=..."),
    interval: Optional[int] = typer.Option(None, "--interval", "-I", help="Local steps between model averages (periodic): --sync-opt interval=..."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (one epoch = the training set once, summed over workers)."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    data_dir: Optional[str] = typer.Option(None, help="Folder with the data set files (default: env var, then ~/.cache/repro): --set data_dir=..."),
    task_opt: list[str] = typer.Option([], "--set", "--task-opt", help="Task option KEY=VALUE (repeatable), e.g. --set bptt=70, --set batch_size=32, --set bn=false."),
    train_opt: list[str] = typer.Option([], "--train-opt", help=f"Training setting KEY=VALUE (repeatable), e.g. --train-opt max_steps=5 (smoke test); keys: {TRAIN_KEYS}."),
    out: Path = typer.Option(Path("results"), help="Where run directories are written."),
    run_opt: list[str] = typer.Option([], "--run-opt", help=f"How the run is carried out, KEY=VALUE (repeatable; not part of its identity): {RUN_KEYS}; e.g. --run-opt quiet=true (no progress bar or epoch lines), --run-opt checkpoint_minutes=30, several nodes by hand: --run-opt nodes=2 --run-opt node_rank=1 --run-opt master_addr=HOST."),
):
    args = _run_args(task, preset, algo, components, task_opt, train_opt, out, run_opt,
                     dict(lr=lr, interval=interval, machines=machines, epochs=epochs, seed=seed, data_dir=data_dir))
    os.environ["REPRO_TIMEOUT_S"] = str(args.how.timeout)  # the workers inherit it from their server, started from here
    if (args.how.only is None and _starts_worker_processes(task, preset, args.from_run,
                                                           args.request["train"].get("machines"), args.how.nodes)
            and _ran_in_server_child(_run, {"args": args})):
        return None
    return _run(args)


def _run_args(task, preset, algo, chosen: dict, task_opt, train_opt, out, run_opt, direct: dict) -> RunArgs:
    """Flag translation: every flag into its section of a RunRequest (the direct flags first, KEY=VALUE over them)."""
    sections = {"task": {}, "train": {}, **{k.name: {} for k in components.KINDS}}
    for flag, value in direct.items():
        if value is not None:
            section, key = DIRECT_FLAGS[flag]
            sections[section][key] = value
    sections["task"].update(_key_values("--set", task_opt))
    sections["train"].update(_key_values("--train-opt", train_opt))
    for k in components.KINDS:
        sections[k.name].update(_key_values(k.opt_flag, chosen[k.name][1]))
    request = dict(task=task, preset=preset, algo=algo, task_options=sections["task"], train=sections["train"],
                   components={k: name for k, (name, _) in chosen.items() if name is not None},
                   options={k.name: sections[k.name] for k in components.KINDS if sections[k.name]})
    how = _settings_of(RunOptions, "run option", run_opt, "--run-opt")
    return RunArgs(request, _recorded_run(task), out, how)


def _recorded_run(task: Optional[str]) -> Optional[Path]:
    """TASK as a recorded run to replay (a run folder holding config.json, or a .json file), else None."""
    if not task:
        return None
    path = Path(task)
    return path if (path / "config.json").is_file() or (path.suffix == ".json" and path.is_file()) else None


def _run(args: RunArgs):
    """`repro run` after its flags are translated: resolve, place, then run here or as an outside launcher's rank."""
    from repro import runlog

    config = _resolve(args)
    if args.how.only == "resolve":
        return config, config.train.machines * args.how.nodes
    if config.train.machines > 1 or args.how.nodes > 1:  # a recipe's workers: start their server (no-op if started)
        _start_workers_server(args.how.only is not None)
    place = _placement(config, "machines" in args.request["train"], args)
    runlog.check_writable(args.out)
    if place.joined is None:
        _check_devices(config.train.machines)
    if args.how.only == "validate":
        return None
    identity = config.identity(place.world)
    if place.joined is not None:
        _run_joined(config, place.joined, args.out, identity, args.how.skip_completed, args.how.quiet, _report(args))
    else:
        _skip_resume_or_start(config, identity, place, args)
    return None


def _resolve(args: RunArgs):
    """The run's settings: the request over the recipe's (or the recorded run's) over the defaults. Starts the
    workers' server first where the flags already ask for workers, so it imports torch while this resolves."""
    from repro import runspec

    if not args.request["task"]:  # some Typer/click pairs leave a missing required argument as None
        raise UsageError("Missing argument 'TASK'.")
    if args.request["train"].get("machines", 1) > 1 or args.how.nodes > 1:
        _start_workers_server(args.how.only is not None)
    request, base = args.request, None
    if args.from_run is not None:
        base = runspec.load_recorded(args.from_run)
        request = {**request, "task": base.task.name}
    return runspec.resolve(runspec.RunRequest(**request, base=base))


def _skip_resume_or_start(config, identity: str, place: Placement, args: RunArgs) -> None:
    """This node's workers: skip a completed setting, resume an interrupted one, or start a new run (node 0 makes
    its folder)."""
    from repro import runlog, runspec

    decision, held = _skip_or_resume(args.out / config.task.name, identity, args.how.skip_completed, place)
    if decision == "busy" or decision.startswith("skip "):
        done = decision[len("skip "):] if decision != "busy" else None
        typer.echo(f"skip {done} (completed)" if done else "skip: another process is running this setting", err=True)
        if args.how.report is not None:
            runlog.write_json(_report(args), {"run_dir": done, "status": "skipped"})
        return
    if decision.startswith("resume "):
        _resume_run(Path(decision[len("resume "):]), None, args.how.quiet, _report(args), place.nodes, place.node_rank,
                    place.master_addr, place.master_port, place.run_id, args.how.saving())
        return
    config = runspec.prepare_data(config)
    run_dir = None
    if place.node_rank == 0:  # global rank 0 lives on node 0 and writes the logs
        run_dir = _make_run_dir(config, args.out, identity, place.world, place.nodes, args.how.quiet, _report(args))
    _execute(config, run_dir, identity, None, args.how.quiet, _report(args), place.nodes, place.node_rank,
             place.master_addr, place.master_port, place.run_id, args.how.saving())
    del held  # the claim on the setting lasts until the run is over


def _report(args: RunArgs) -> Optional[Path]:
    return Path(args.how.report) if args.how.report is not None else None


@dataclass
class Placement:
    """Where this process's workers run: joined to an outside launcher's job, or started here on these nodes."""

    joined: object  # repro.cluster's placement when torchrun / a multi-task srun started this process, else None
    nodes: int
    node_rank: int
    master_addr: str
    master_port: Optional[int]
    run_id: Optional[str]
    world: int


def _placement(config, machines_given: bool, args: RunArgs) -> Placement:
    """Placement: join an outside launcher's job as its rank, take the nodes of a Slurm job, or the flags'."""
    from repro import cluster

    joined = cluster.outside_launcher()  # started by torchrun / a multi-task srun: join as that rank
    how = args.how
    nodes, node_rank, master_addr, master_port = how.nodes, how.node_rank, how.master_addr, how.master_port
    if (joined is not None and joined.source == "slurm" and joined.local_world == 1 and machines_given
            and nodes == 1 and master_port is None and cluster.slurm_nodes() is not None):
        joined = None  # one task per node asking for --machines workers each: spawn them
    run_id = None
    slurm = cluster.slurm_nodes() if joined is None and nodes == 1 and master_port is None else None
    if slurm is not None:  # one `repro run` per node under srun: the rendezvous comes from the job
        nodes, node_rank, master_addr, master_port, run_id = (slurm[k] for k in ("nodes", "node_rank", "master_addr",
                                                                                  "master_port", "run_id"))
    if joined is not None:
        config.train.machines, nodes, node_rank = joined.local_world, joined.nodes, joined.rank // joined.local_world
    world = joined.world if joined is not None else config.train.machines * nodes
    return Placement(joined, nodes, node_rank, master_addr, master_port, run_id, world)


def _skip_or_resume(task_dir: Path, identity: str, skip_completed: bool, place: Placement) -> tuple[str, object]:
    """"run", "busy", "skip RUN_DIR" or "resume RUN_DIR" (agreed by every node), and the claim on the setting that
    keeps another sweep cell from running it while this process lives."""
    from repro import runlog
    from repro.launch import agree_across_nodes

    held = []

    def decide() -> str:
        if not skip_completed:
            return "run"
        held.append(runlog.claim(task_dir, identity))
        if held[-1] is None:
            return "busy"
        done = runlog.find_completed(task_dir, identity)
        if done is not None:
            return f"skip {done}"
        resumable = runlog.find_resumable(task_dir, identity)
        return f"resume {resumable}" if resumable is not None and not runlog.is_alive(resumable) else "run"

    if place.nodes == 1:
        return decide(), held
    return agree_across_nodes(place.nodes, place.node_rank, place.master_addr, place.master_port or 29500, decide), held


def _starts_worker_processes(task: Optional[str], preset: Optional[str], from_run: Optional[Path],
                             machines: Optional[int], nodes: int) -> bool:
    """Whether this node will start worker processes (several nodes, or more than one worker here), judged without
    importing torch: the flags, else the recorded run's or the recipe's (its default optimizer's) worker count;
    False where only resolving could tell (the command then runs here, as with one worker)."""
    from repro import recipes

    if nodes > 1 or machines is not None:
        return nodes > 1 or machines > 1
    try:
        if from_run is not None:
            recorded = from_run / "config.json" if from_run.is_dir() else from_run
            return int(json.loads(recorded.read_text())["train"].get("machines", 1)) > 1
        recipe = (recipes.RECIPES.get(task) if task in recipes.RECIPES.names() and preset is None
                  else recipes.by_preset(task, preset or "quick", None))
        return int(recipe.train.get("machines", 1)) > 1
    except Exception:  # noqa: BLE001 - not a recipe, an unreadable run: resolve() says what is wrong
        return False


def _ran_in_server_child(command, given: dict) -> bool:
    """Whether ``command(**given)`` (this very command) ran, to its end, in a process forked from the workers' server
    (exiting with its code when not 0): that server imported torch once for every worker, and this process then
    never imports torch (repro/forkserver.py). False where workers come from elsewhere (torchrun, srun tasks), in
    that child itself, or where the server cannot be asked: then the caller runs it."""
    from repro import cluster, forkserver

    if forkserver.in_server_child() or cluster.outside_launcher() is not None:
        return False
    code = forkserver.run_in_server_child(_exit_code_of_call, command, given)
    if code is None:
        return False
    if code:
        raise SystemExit(code)
    return True


def _exit_code_of_call(command, given: dict) -> int:
    return _exit_code(lambda: command(**given))


def _start_workers_server(only_checking: bool) -> None:
    """Local workers fork from a server that imports torch once (repro/forkserver.py); starting it first lets it
    import on another core while this process resolves the settings and prepares the data."""
    from repro import cluster, forkserver

    if not only_checking and cluster.outside_launcher() is None:  # this process will start the workers
        forkserver.start_early()


def _saving(keep_checkpoints: int, checkpoint_minutes: Optional[float]) -> dict:
    """The checkpoint settings handed to the workers (not part of a run's identity)."""
    how = RunOptions(keep_checkpoints=keep_checkpoints, checkpoint_minutes=checkpoint_minutes)
    how.validate()
    return how.saving()


def _execute(config, run_dir: Optional[Path], identity: str, resume_from: Optional[Path], quiet: bool,
             report: Optional[Path], nodes: int, node_rank: int, master_addr: str, master_port: Optional[int],
             run_id: Optional[str], saving: dict) -> None:
    """Launch the workers on a prepared config; write the run's status; exit 130/143 when interrupted."""
    from repro import runlog
    from repro.launch import WorkersFailed, launch

    alive = None
    try:
        alive = runlog.hold(run_dir) if run_dir is not None else None  # `repro resume` refuses while this lives
        spec = {**config.to_dict(), "run_dir": str(run_dir) if run_dir else None, "quiet": quiet,
                "identity": identity, "resume_from": str(resume_from) if resume_from else None, **saving}
        last = launch(spec, machines=config.train.machines, nodes=nodes, node_rank=node_rank,
                      master_addr=master_addr, master_port=master_port, run_id=run_id)
    except WorkersFailed as e:
        if run_dir is not None:
            runlog.write_status(run_dir, "failed", reason=str(e))
        raise
    except KeyboardInterrupt:  # Ctrl-C before the workers could take it
        last = {"status": "interrupted", "signal": 2, "epochs_done": 0}
    finally:
        if alive is not None:
            alive.close()
    if (last or {}).get("status") == "interrupted" and _nothing_to_resume(run_dir, resume_from, nodes):
        shutil.rmtree(run_dir, ignore_errors=True)  # stopped before its first checkpoint: a rerun starts afresh
        run_dir, last = None, {**last, "removed": True}
    _finish(last, run_dir, config, quiet, report)


def _nothing_to_resume(run_dir: Optional[Path], resume_from: Optional[Path], nodes: int) -> bool:
    """A new run folder on a single node that holds no checkpoint (its stop came before the first one)."""
    from repro import checkpoint

    return run_dir is not None and resume_from is None and nodes == 1 and checkpoint.newest(run_dir) is None


def _resume_run(run_dir: Path, epochs: Optional[int], quiet: bool, report: Optional[Path], nodes: int = 1,
                node_rank: int = 0, master_addr: str = "127.0.0.1", master_port: Optional[int] = None,
                run_id: Optional[str] = None, saving: Optional[dict] = None) -> None:
    """Continue a run from its newest checkpoint with its recorded settings (`--epochs` may extend it)."""
    import time

    from repro import checkpoint, runlog, runspec
    from repro.config import CONFIG_VERSION, RESUMABLE_SINCE

    if not (run_dir / "config.json").is_file():
        raise UsageError(f"{run_dir} is not a run folder (no config.json)")
    data = json.loads((run_dir / "config.json").read_text())
    if not RESUMABLE_SINCE <= data.get("version", 1) <= CONFIG_VERSION:
        raise UsageError(f"{run_dir} was written by another version of repro (config version {data.get('version', 1)}, "
                         f"this one writes {CONFIG_VERSION}): resume it with that version")
    if runlog.is_alive(run_dir):
        raise UsageError(f"{run_dir} is still running (a live process holds it)")
    config = runspec.load_recorded(run_dir)
    completed = (run_dir / "summary.json").exists()
    if epochs is not None:
        if epochs < config.train.epochs:
            raise UsageError(f"--epochs {epochs} is below the run's {config.train.epochs}")
        config.train.epochs = epochs
    if completed and (epochs is None or epochs == json.loads((run_dir / "config.json").read_text())["train"]["epochs"]):
        raise UsageError(f"{run_dir} is complete: give a higher --epochs to extend it")
    newest = checkpoint.newest(run_dir)
    if newest is None:
        raise UsageError(f"{run_dir} has no checkpoint to resume from")
    payload = checkpoint.load(newest, identity=data["identity"], world_size=data.get("world_size"),
                              check_ranks=True)  # refuses foreign
    _truncate_csv(run_dir / "metrics.csv", int(payload.get("csv_rows", payload["epoch"])))
    if report is not None:
        runlog.write_json(report, {"run_dir": str(run_dir), "epochs": config.train.epochs})
    data["train"]["epochs"] = config.train.epochs
    data.setdefault("resumes", []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": newest.name,
                                           "environment": runlog.environment()})
    runlog.write_json(run_dir / "config.json", data)
    (run_dir / "summary.json").unlink(missing_ok=True)
    config = runspec.prepare_data(config)
    runlog.write_status(run_dir, "running")
    if not quiet:
        typer.echo(f"resume {run_dir} from {newest.name}", err=True)
    _execute(config, run_dir, data["identity"], newest, quiet, report, nodes, node_rank, master_addr, master_port,
             run_id, saving or _saving(1, None))


def _truncate_csv(path: Path, rows: int) -> None:
    """Keep the header and the rows the checkpoint had seen written (a row logged after it is logged again)."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) > rows + 1:
            path.write_text("".join(lines[:rows + 1]))


@app.command("resume")
def resume(run_dir: Path = typer.Argument(..., help="The run folder to continue (results/TASK/RUN)."),
           epochs: Optional[int] = typer.Option(None, help="Train to this many epochs in all (extends a finished run)."),
           keep_checkpoints: int = typer.Option(1, help="Keep the newest K checkpoints."),
           checkpoint_minutes: Optional[float] = typer.Option(None, help="Also checkpoint mid-epoch every M minutes."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or epoch lines.")):
    """Continue an interrupted run from its newest checkpoint with its recorded settings; the metrics continue the
    same metrics.csv and config.json records the resume."""
    given = dict(locals())
    if not run_dir or not Path(run_dir).is_dir():
        raise UsageError(f"run folder {run_dir} does not exist")
    if _starts_worker_processes(None, None, Path(run_dir), None, 1) and _ran_in_server_child(resume, given):
        return
    _resume_run(Path(run_dir), epochs, quiet, None, saving=_saving(keep_checkpoints, checkpoint_minutes))


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _check_devices(machines: int) -> None:
    """More workers than GPUs: NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): stop before launching."""
    import torch

    if torch.cuda.is_available() and machines > torch.cuda.device_count():
        raise UsageError(f"--machines {machines} needs {machines} GPUs on this node, {torch.cuda.device_count()} "
                         f"visible: use --machines {torch.cuda.device_count()}, more nodes (--run-opt nodes=K), or "
                         "the CPU (CUDA_VISIBLE_DEVICES= , gloo; any number of workers)")


def _make_run_dir(config, out: Path, identity: str, world: int, nodes: int, quiet: bool, report: Optional[Path]) -> Path:
    from repro import recipes, runlog

    run_dir = runlog.new_run_dir(out, config.task.name, f"{config.label(world)}_{identity}")
    try:
        runlog.write_json(run_dir / "config.json", {**config.to_dict(), "identity": identity, "world_size": world,
                                                    "nodes": nodes, "environment": runlog.environment()})
        runlog.write_status(run_dir, "running")
    except KeyboardInterrupt:  # a folder half written is no run
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not quiet:
        typer.echo(f"run {run_dir}", err=True)
        if config.task.recipe in recipes.RECIPES:  # what --preset resolved to: its settings fill every unset value
            typer.echo(f"recipe {config.task.recipe}: {recipes.RECIPES.get(config.task.recipe).summary}", err=True)
    if report is not None:
        runlog.write_json(report, {"run_dir": str(run_dir), "epochs": config.train.epochs})
    return run_dir


def _finish(last: dict, run_dir: Optional[Path], config, quiet: bool, report: Optional[Path]) -> None:
    from repro import runlog

    status = (last or {}).get("status") or "done"
    if run_dir is not None:
        runlog.write_status(run_dir, status)
    if status == "interrupted":
        if report is not None:
            runlog.write_json(report, {"run_dir": str(run_dir) if run_dir else None, "status": "interrupted"})
        signum = int((last or {}).get("signal") or 15)
        where = (f"; resume with: repro resume {run_dir}" if run_dir is not None
                 else "; it had no checkpoint yet, so its folder is removed: run it again" if last.get("removed")
                 else "")
        done = (last or {}).get("epochs_done", 0)
        when = f"at step {last['step']} in epoch {done + 1}" if (last or {}).get("step") else f"after epoch {done}"
        print(f"repro: interrupted by {_signal_name(signum)} {when}{where}", file=sys.stderr)
        raise SystemExit(128 + signum)
    if report is not None and run_dir is not None:
        runlog.write_json(report, {"run_dir": str(run_dir), "epochs": config.train.epochs,
                                   "status": (last or {}).get("status") or "done"})
    if last and not quiet:
        typer.echo(json.dumps({k: last[k] for k in sorted(last) if k != "status"}), err=True)


def _run_joined(config, placement, out: Path, identity: str, skip_completed: bool, quiet: bool,
                report: Optional[Path]) -> None:
    """One rank of a job an outside launcher started: rank 0 decides and makes the run folder, every rank learns
    it; each node's first rank prepares the data before the others read it."""
    import torch.distributed as dist

    from repro import runlog, runspec
    from repro.worker import run_worker, setup_process

    placement.export()
    _, _, device = setup_process()
    error = None
    if placement.local_rank == 0:
        try:
            config = runspec.prepare_data(config)
        except UsageError as e:
            error = str(e)
    _all_agree(error, device)
    if placement.local_rank != 0:
        config = runspec.prepare_data(config)  # now cached: only resolves paths
    decision = [None]
    if placement.rank == 0:
        done = runlog.find_completed(out / config.task.name, identity) if skip_completed else None
        if done is not None:
            decision = [f"skip {done}"]
        else:
            decision = [str(_make_run_dir(config, out, identity, placement.world, placement.nodes, quiet, report))]
    if dist.is_initialized():
        dist.broadcast_object_list(decision, src=0)
    if decision[0].startswith("skip "):
        if placement.rank == 0:
            typer.echo(f"{decision[0]} (completed)", err=True)
        dist.destroy_process_group() if dist.is_initialized() else None
        return
    run_dir = Path(decision[0]) if placement.rank == 0 else None
    last = run_worker({**config.to_dict(), "run_dir": str(run_dir) if run_dir else None, "quiet": quiet})
    if placement.rank == 0:
        _finish(last, run_dir, config, quiet, report)


def _all_agree(error: str | None, device) -> None:
    """Raise on every rank when any rank failed (the message shows where it happened), so none waits forever."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if error:
            raise UsageError(error)
        return
    failed = torch.tensor([1 if error else 0], device=device)
    dist.all_reduce(failed)
    if failed.item():
        dist.destroy_process_group()
        raise UsageError(error or "another rank could not prepare the data (see its message)")


@app.command("sweep", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sweep(ctx: typer.Context, task: str = typer.Argument(..., help="Task or recipe name."),
          jobs: int = typer.Option(1, "--jobs", "-j", help="Cells run at once (each its own process; GPUs dealt out, or cores / K threads each)."),
          gpus: Optional[str] = typer.Option(None, help="GPU indices to deal out to the cells, e.g. 0,1,2,3 (default: all visible)."),
          shard: Optional[str] = typer.Option(None, help="Run only slice i of n of the grid (i/n, 0 <= i < n); default from SLURM_ARRAY_TASK_ID/COUNT in an array job."),
          dry_run: bool = typer.Option(False, "--dry-run", help="List this shard's cells without starting them.")):
    """Run the cartesian product of comma-separated flag values, e.g.
    `repro sweep lstm-ptb --interval 2,4,8,16 --lr 10,30 --jobs 4`. Any `repro run` flag may take a list, the
    KEY=VALUE ones per key (`--optimizer-opt weight_decay=0,1e-4`, `--sync-opt`, `--set`, `--train-opt`, every
    --KIND-opt; KEY=[a,b] is one list value); cells whose completed results already exist are skipped; a failed or
    diverged cell does not stop the others."""
    from repro.sweep import run_sweep

    if not task or task.startswith("-"):
        raise UsageError("Missing argument 'TASK'.")
    try:
        gpu_list = None if gpus is None else [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise UsageError(f"--gpus expects comma-separated GPU indices, got {gpus!r}") from None
    code = run_sweep(task, list(ctx.args), jobs, gpu_list, shard, dry_run,
                     validate=lambda argv: _invoke_run([*argv, "--validate-only"]),
                     echo=lambda text: typer.echo(text, err=True))
    if code:
        raise SystemExit(code)


def _invoke_run(argv: list[str]):
    command = typer.main.get_command(app)
    return command.main(["run", *argv], standalone_mode=False)


def _setting_key(argv: list[str]) -> str:
    """The setting (run identity without the seed) a `repro run` command line resolves to."""
    config, world = _invoke_run([*argv, "--resolve-only"])
    return config.setting(world)


DATA_ENV = {"REPRO_PTB_DIR": "ptb", "REPRO_WT2_DIR": "wikitext-2", "REPRO_CIFAR10_DIR": ".", "REPRO_MNIST_DIR": "mnist"}
REHEARSAL = ("--max-steps", "2", "--eval-batches", "1")  # a paper cell's rehearsal: two steps, one eval batch per split


@app.command("reproduce")
def reproduce(experiment: str = typer.Argument(..., help="Experiment name (see `repro list`)."),
              scale: str = typer.Option("quick", help="quick (laptop scale) or paper (the authors' setting)."),
              seeds: Optional[int] = typer.Option(None, help="Judging seeds per judged setting (default: the experiment's)."),
              jobs: int = typer.Option(1, "--jobs", "-j", help="Runs at once (each its own process; GPUs dealt out, or cores / K threads)."),
              results: Path = typer.Option(Path("results"), help="Results root: runs go to RESULTS/EXPERIMENT/SCALE/."),
              data_root: Optional[Path] = typer.Option(None, help="A folder with ptb/, wikitext-2/, mnist/ and cifar10-jpeg.tar.gz (like ../shared/data): sets REPRO_PTB_DIR, REPRO_WT2_DIR, REPRO_MNIST_DIR, REPRO_CIFAR10_DIR where unset."),
              shard: Optional[str] = typer.Option(None, help="Run only slice i of n of the missing runs (i/n); default from a Slurm array job."),
              dry_run: bool = typer.Option(False, "--dry-run", help="List the missing runs, each with its command and estimated time (GPU-hours at paper scale); run nothing."),
              rehearse: bool = typer.Option(False, "--rehearse", help="Start every setting once for two steps and one evaluation batch per split (--max-steps 2 --eval-batches 1) in a temporary folder, to find a broken recipe before the real runs; keeps nothing. Settings that differ only in a grid's values (lr, weight decay, loss multiplier, averaging interval) are rehearsed once."),
              rehearse_set: list[str] = typer.Option([], "--rehearse-set", help="KEY=VALUE task option added to every rehearsal run (e.g. data_format=jpeg where only the JPEG copy of CIFAR is at hand); never to real runs.")):
    """Run the missing runs of a paper figure (seed x setting; interrupted ones resume), then draw its figures and
    rewrite RESULTS/REPORT.md. Tuned grids run their selection seeds first, then each grid's chosen cell on the
    fresh judging seeds."""
    from repro.experiments import EXPERIMENTS, evidence
    from repro.runlog import check_writable
    from repro.sweep import QUIET, run_cells

    exp = EXPERIMENTS.get(experiment)
    if scale not in exp.scales:
        raise UsageError(f"experiment {experiment} has no scale {scale!r} (it has: {', '.join(exp.scales)})")
    if seeds is not None and seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    if data_root is not None:
        if not data_root.is_dir():
            raise UsageError(f"--data-root {data_root} is not a folder")
        for var, sub in DATA_ENV.items():
            os.environ.setdefault(var, str((data_root / sub).resolve()))
    spec = exp.scales[scale]
    echo = lambda text: typer.echo(text, err=True)  # noqa: E731
    validate = lambda argv: _invoke_run([*argv, "--validate-only"])  # noqa: E731
    if rehearse:
        _rehearse(exp, scale, jobs, echo, validate, [f for kv in rehearse_set for f in ("--set", kv)])
        return
    folder = exp.folder(results, scale)
    check_writable(folder)
    _refuse_uncounted_runs(exp, scale, seeds, results, folder, dry_run, echo)
    code, ran = 0, set()
    while True:  # the selection runs of a grid decide which judging runs exist: run, then look again
        ev, done = evidence(exp, scale, results, _setting_key)
        cells = exp.cells(scale, seeds, ev)
        missing = [(setting, seed) for setting, seed in cells if (setting.label, seed) not in done]
        pending = exp.pending_judging_runs(scale, seeds, ev)
        todo = [cell for cell in missing if (cell[0].label, cell[1]) not in ran]
        if not ran:
            _say_plan(experiment, scale, spec, cells, missing, pending, jobs, echo)
        argvs = [[*setting.argv, "--seed", str(seed), "--out", str(folder), *QUIET] for setting, seed in todo]
        if dry_run:
            for (setting, seed), argv in zip(todo, argvs):
                validate(argv)
                echo(f"repro run {' '.join(argv)}  # {_estimate(spec.minutes(setting), scale)}")
            return
        if not argvs:
            break
        ran |= {(setting.label, seed) for setting, seed in todo}
        if spec.launcher == "emulated-cluster":  # each cell one job on two network-namespace nodes, one at a time
            from repro.emulated_cluster import run_cells as cluster_cells

            code = cluster_cells(argvs, validate=validate, echo=echo)
        else:
            code = run_cells(argvs, jobs, None, shard, False, validate=validate, echo=echo, quiet=True)
        if code:
            break
    _draw_and_report(exp, scale, results)
    if code:
        raise SystemExit(code)


def _refuse_uncounted_runs(exp, scale: str, seeds: Optional[int], results: Path, folder: Path, dry_run: bool,
                           echo) -> None:
    """Runs made before a claim's rule commit keep their cells' identities, so they would be skipped as done while
    the report drops them: refuse (a dry run only warns) until they are moved aside. Runs on seeds the plan does not
    run (an earlier plan's seeds that a new plan took as its pilot) take no cell's place and stay where they are."""
    from repro.experiments import evidence
    from repro.report import uncounted_runs

    spec = exp.scales[scale]
    planned = set(spec.judging_seeds(seeds)) | (set(spec.selection_seeds) if spec.grids() else set())
    ev = evidence(exp, scale, results, _setting_key)[0]
    seed_of = {run.path: run.seed for runs in ev.runs.values() for run in runs}
    stale = [(path, why) for path, why in uncounted_runs(exp, ev, results) if seed_of.get(path) in planned]
    if not stale:
        return
    (path, why), more = stale[0], f" and {len(stale) - 1} more" if len(stale) > 1 else ""
    text = (f"{path.name}{more} in {folder} would count as done but no claim counts it ({why}): move "
            f"{'them' if more else 'it'} aside, e.g. to {folder.name}-superseded/, and run again")
    if not dry_run:
        raise UsageError(text)
    echo(f"warning: {text}")


def _estimate(minutes: float, scale: str) -> str:
    if not minutes:
        return "no time estimate"
    return f"~{minutes / 60:.2f} GPU-hours" if scale == "paper" else f"~{minutes:.0f} min on the reference 2-core CPU"


def _say_plan(experiment, scale, spec, cells, missing, pending, jobs, echo) -> None:
    minutes = sum(spec.minutes(setting) for setting, _ in missing)
    pending_minutes = 0.0
    if pending:  # a chosen cell's estimate: its grid's mean
        grid_settings = [s for s in spec.settings if s.grid]
        pending_minutes = pending * sum(spec.minutes(s) for s in grid_settings) / max(1, len(grid_settings))
    line = f"{experiment} ({scale}): {len(cells)} runs known, {len(cells) - len(missing)} complete, {len(missing)} to run"
    if pending:
        line += f", then {pending} judging runs of the grids' chosen settings once their selection runs are complete"
    if minutes or pending_minutes:
        total = minutes + pending_minutes
        line += (f"; estimate {total / 60:.2f} GPU-hours in all" if scale == "paper" else
                 f"; about {total / jobs:.0f} min with --jobs {jobs} (estimate per run on the reference machine)")
    echo(line)


def _rehearse(exp, scale: str, jobs: int, echo, validate, extra: list[str]) -> None:
    """Every setting shape of ``scale`` once, two steps, into a temporary folder that is removed afterwards."""
    import tempfile

    from repro.experiments import rehearsal_settings
    from repro.sweep import QUIET, run_cells

    spec = exp.scales[scale]
    seed = spec.selection_seeds[0] if spec.grids() else spec.judging_seeds()[0]
    settings = rehearsal_settings(spec.settings)
    with tempfile.TemporaryDirectory(prefix="repro-rehearsal-") as out:
        argvs = [[*s.argv, *extra, *REHEARSAL, "--seed", str(seed), "--out", out, *QUIET] for s in settings]
        echo(f"{exp.name} ({scale}): rehearsing {len(argvs)} settings (two steps each; one per shape of "
             f"{len(spec.settings)})")
        if spec.launcher == "emulated-cluster":  # node 0 alone would wait for node 1 forever
            from repro.emulated_cluster import run_cells as cluster_cells

            code = cluster_cells(argvs, validate=validate, echo=echo)
        else:
            code = run_cells(argvs, jobs, None, None, False, validate=validate, echo=echo, quiet=True)
    if code:
        raise SystemExit(code)


def _draw_and_report(exp, scale: str, results: Path) -> None:
    from repro.figures import FIGURES
    from repro.report import judge_all, write

    folder = exp.folder(results, scale)
    for figure in exp.figures:
        try:
            for path in FIGURES.get(figure)(folder, folder / "figures", preset=None):
                typer.echo(str(path), err=True)
        except UsageError as e:  # a figure with nothing to draw yet is not an error of the runs
            typer.echo(f"figure {figure}: {e}", err=True)
    judged, run_dirs = judge_all(results, _setting_key)
    for path in write(results, judged, run_dirs):
        typer.echo(str(path))


@app.command("report")
def report(results: Path = typer.Option(Path("results"), help="Results root (as given to `repro reproduce`).")):
    """Judge every claim of the experiments (`repro list`) from the runs under RESULTS: RESULTS/REPORT.md and
    REPORT.html."""
    from repro.report import judge_all, write

    if not results.is_dir():
        raise UsageError(f"results folder {results} does not exist")
    judged, run_dirs = judge_all(results, _setting_key)
    for path in write(results, judged, run_dirs):
        typer.echo(str(path))
    counts = {}
    for j in judged:
        counts[j.verdict.outcome] = counts.get(j.verdict.outcome, 0) + 1
    typer.echo("claims: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())), err=True)


@app.command("plot")
def plot(figure: Optional[str] = typer.Argument(None, help="Figure name (see `repro list`); without it, every "
                                                           "figure the runs allow."),
         results: Path = typer.Option(Path("results"), help="Folder of run directories."),
         out: Optional[Path] = typer.Option(None, help="Where PNG and PDF files go (default: RESULTS/figures; without "
                                                       "FIGURE, each run folder's own figures/)."),
         preset: Optional[str] = typer.Option(None, help="Only runs of this preset.")):
    """Redraw a paper figure from the CSV logs under --results (PNG + PDF). Without FIGURE: every figure that the
    runs under --results allow, also in experiments' folders (RESULTS/EXPERIMENT/SCALE/figures); it names the
    figures it drew and where, and those it could not draw for lack of runs."""
    from repro.figures import FIGURES
    from repro.runlog import check_writable

    if not results.is_dir():
        raise UsageError(f"results folder {results} does not exist")
    if figure is None:
        _plot_every(results, out, preset)
        return
    draw = FIGURES.get(figure)
    out = out or results / "figures"
    check_writable(out)
    for path in draw(results, out, preset=preset):
        typer.echo(str(path))


def _plot_every(results: Path, out: Optional[Path], preset: Optional[str]) -> None:
    """`repro plot` without a figure: one line per figure drawn (where) and per figure not drawn (why)."""
    from repro.figures._every import draw_every

    outcome = draw_every(results, out, preset)
    for figure, source, paths in outcome.drawn:
        typer.echo(f"drew {figure} from {source.runs}: {len(paths)} files in {source.out}")
    for figure, why in outcome.not_drawn.items():
        typer.echo(f"not drawn {figure}: {why}")
    for figure, source, error in outcome.failed:
        typer.echo(f"failed {figure} from {source.runs}: {error}", err=True)
    if outcome.failed:
        raise SystemExit(1)
    if not outcome.drawn:
        raise UsageError(f"no figure could be drawn from the runs under {results}"
                         + (f" with preset {preset}" if preset else "") + " (each one's reason above)")


@app.command("summarize")
def summarize(results: Path = typer.Argument(..., help="Folder of run directories (RESULTS/TASK/RUN)."),
              out: Optional[Path] = typer.Option(None, help="Where summary.csv, .md and .tex go (default: RESULTS)."),
              task: Optional[str] = typer.Option(None, help="Only runs of this task."),
              preset: Optional[str] = typer.Option(None, help="Only runs of this preset.")):
    """Final metrics per setting (runs differing only in their seed together): mean, std and n, as CSV, Markdown
    and LaTeX."""
    from repro.results import by_setting, load_runs, require
    from repro.runlog import check_writable
    from repro.seeds import summary_table, write_summary

    if not results.is_dir():
        raise UsageError(f"results folder {results} does not exist")
    runs = load_runs(results, (task,) if task else None, preset)
    require(runs, "runs" + (f" of task {task}" if task else "") + (f" with preset {preset}" if preset else ""),
            results, "run e.g. `repro run TASK --seed 1` (and --seed 2, 3) first")
    complete = [r for r in runs if r.complete]
    require(complete, "complete runs", results, f"{len(runs)} run(s) have no summary.json yet (still running or stopped)")
    out = out or results
    check_writable(out)
    if len(complete) < len(runs):
        typer.echo(f"note: left out {len(runs) - len(complete)} incomplete run(s) (no summary.json)")
    groups = by_setting(complete)
    for path in write_summary(summary_table(groups), out):
        typer.echo(str(path))
    typer.echo(f"{len(groups)} setting(s) from {len(complete)} run(s)")


def _usage_message(error: BaseException) -> str | None:
    """The one-line message of a command-line usage error (bad flag, non-number, unknown option...).

    Typer raised click's exceptions up to 0.25 and raises its vendored copy's from 0.26 on; both carry
    ``format_message()`` and ``exit_code``, so duck typing keeps this independent of either's module path."""
    if callable(getattr(error, "format_message", None)) and isinstance(getattr(error, "exit_code", None), int):
        return " ".join(error.format_message().split())
    return None


def main() -> None:
    code = _main()
    if "torch" in sys.modules:  # a worker of torchrun/srun must not end in SIGABRT; others skip torch's teardown
        from repro.process_exit import exit_process

        exit_process(code)
    sys.exit(code)


def _main() -> int:
    """The command's exit code: 0 done, 1 a failed run, 2 a usage error, 130/143 interrupted."""
    command = typer.main.get_command(app)
    returned = []
    code = _exit_code(lambda: returned.append(command.main(sys.argv[1:] or ["--help"], prog_name="repro",
                                                           standalone_mode=False)))
    # Outside standalone mode Typer returns (not raises) an Exit's code; a Ctrl-C that lands outside repro's own
    # handlers becomes Exit(130) there. No command returns an int of its own (they raise SystemExit).
    exit_code = returned[0] if returned and type(returned[0]) is int else 0
    if not code and exit_code == 130:
        print("repro: interrupted by SIGINT", file=sys.stderr)
    return code or exit_code


def _exit_code(command) -> int:
    """``command()``'s outcome as an exit code; errors a user can fix as one line on stderr."""
    try:
        command()
    except UsageError as e:
        print(f"repro: error: {e}", file=sys.stderr)
        return 2
    except WorkersFailed as e:
        print(f"repro: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("repro: interrupted by SIGINT", file=sys.stderr)
        return 130
    except SystemExit as e:  # raised on purpose (an interrupted run: 130/143), returned as the code
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # noqa: BLE001 - only usage errors and Typer's Exit/Abort are handled here
        message = _usage_message(e)
        if message is not None:
            print(f"repro: error: {message}", file=sys.stderr)
            return 2
        kind = type(e).__name__
        if kind == "Exit":  # --help or --version already printed; exit with its code
            return int(getattr(e, "exit_code", 0))
        if kind == "Abort":  # Ctrl-C at a prompt
            return 130
        raise
    return 0
