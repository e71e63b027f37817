"""The component table: sections, identities, labels and flags come from it; old spellings and old runs still work."""
import dataclasses
import json
from pathlib import Path

import pytest
import typer

from repro import cli, components
from repro.cli import _invoke_run, translate_shortcuts
from repro.config import RunConfig
from repro.errors import UsageError
from repro.registry import Registry
from repro.runspec import RunRequest, resolve

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _resolved(*argv):
    config, world = _invoke_run([*argv, "--resolve-only"])
    return config, world


def _committed_configs():
    return [p for p in sorted(RESULTS.glob("**/config.json"))]


def test_committed_runs_keep_their_identities_labels_and_settings():
    """`repro report`, `--from` and `--skip-completed` find the committed runs: every recorded version-2 identity is
    what the table-driven RunConfig computes, and version-1 runs keep the identity they had before the table."""
    configs = _committed_configs()
    assert configs, "no committed results/**/config.json: the repository ships its runs"
    checked = 0
    for path in configs:
        data = json.loads(path.read_text())
        if data.get("version", 1) >= 2:
            world = data.get("world_size", 1)
            config = RunConfig.from_dict(data)
            assert config.identity(world) == data["identity"], path
            assert path.parent.name.startswith(config.label(world)), path  # the folder's name is label_identity
            checked += 1
    assert checked >= 10
    # version-1 configs (an older identity scheme is recorded in them): the identities computed before the table
    before = {"convnet-fashion-mnist/adagrad_none_N1_quick_4008036916": "a60c6d4bcd",
              "convnet-fashion-mnist/adam_none_N1_quick_3dd7a86e0a": "0c3dfe8866"}
    for folder, identity in before.items():
        path = RESULTS / folder / "config.json"
        if path.exists():
            data = json.loads(path.read_text())
            assert RunConfig.from_dict(data).identity(data.get("world_size", 1)) == identity


# (old spelling, generic spelling), each resolved on a task whose recipe it applies to
SHORTCUT_CASES = [
    (("lstm-text", "--algo", "celgc", "--clip", "2"), ("lstm-text", "--algo", "celgc", "--optimizer-opt", "clip=2")),
    (("lstm-text", "--momentum", "0.5"), ("lstm-text", "--opt", "momentum=0.5")),
    (("lstm-text", "--weight-decay", "0"), ("lstm-text", "--optimizer-opt", "weight_decay=0")),
    (("lstm-text", "--weight-decay", "1e-4"), ("lstm-text", "--optimizer-opt", "weight_decay=1e-4")),
    (("convnet-mnist", "--optimizer", "sgdol", "--smoothness", "5", "--alpha", "3"),
     ("convnet-mnist", "--optimizer", "sgdol", "--optimizer-opt", "smoothness=5", "--optimizer-opt", "alpha=3")),
    (("resnet20-cifar10", "--param-groups", "no-decay-bias-norm"),
     ("resnet20-cifar10", "--optimizer-opt", "param_groups=no-decay-bias-norm")),
    (("resnet20-cifar10", "--batch-size", "8", "--no-bn"), ("resnet20-cifar10", "--set", "batch_size=8", "--set", "bn=false")),
    (("lstm-text", "--max-steps", "3", "--eval-batches", "2"), ("lstm-text", "--train-opt", "max_steps=3", "--train-opt", "eval_batches=2")),
    (("lstm-text", "--loss-multiplier", "10"), ("lstm-text", "--train-opt", "loss_multiplier=10")),
    (("lstm-text", "--log-stats", "1", "--log-stats", "3"), ("lstm-text", "--train-opt", "log_stats=1,3")),
    (("lstm-text", "--log-stats", "2"), ("lstm-text", "--train-opt", "log_stats=2")),
    (("lstm-text", "--eval-sync", "in-place", "--pairing", "same-batch"),
     ("lstm-text", "--train-opt", "eval_sync=in-place", "--train-opt", "pairing=same-batch")),
    (("resnet20-cifar10", "--tf32", "on", "--deterministic", "--compile", "--channels-last"),
     ("resnet20-cifar10", "--train-opt", "tf32=true", "--train-opt", "deterministic=true", "--train-opt", "compile=true",
      "--train-opt", "channels_last=true")),
    (("resnet20-cifar10", "--tf32", "off"), ("resnet20-cifar10", "--train-opt", "tf32=false")),
    (("resnet56-cifar10", "--preset", "paper", "--algo", "celgc", "--scheduler", "step", "--sched-opt", "milestones=3"),
     ("resnet56-cifar10", "--preset", "paper", "--algo", "celgc", "--schedule", "step", "--schedule-opt", "milestones=3")),
    (("lstm-text", "--sync", "periodic", "--interval", "8"), ("lstm-text", "--sync", "periodic", "--sync-opt", "interval=8")),
    (("lstm-text", "--lr", "2"), ("lstm-text", "--optimizer-opt", "lr=2")),
    (("lstm-text", "--data-dir", "/d", "--epochs", "3", "--seed", "4", "--machines", "2"),
     ("lstm-text", "--set", "data_dir=/d", "--train-opt", "epochs=3", "--train-opt", "seed=4", "--train-opt", "machines=2")),
]


@pytest.mark.parametrize("old, generic", SHORTCUT_CASES, ids=[" ".join(o[1:]) for o, _ in SHORTCUT_CASES])
def test_every_removed_shortcut_still_works_through_the_generic_form(old, generic):
    (a, world_a), (b, world_b) = _resolved(*old), _resolved(*generic)
    assert a.to_dict() == b.to_dict() and world_a == world_b
    assert a.identity(world_a) == b.identity(world_b)
    plain = _resolved(old[0])[0]
    assert a.to_dict() != plain.to_dict() or old[1] in ("--weight-decay", "--tf32")  # the flag did something


def test_generic_values_take_the_declared_types():
    """`--opt clip=1` is the same setting as the old typed `--clip 1` (1.0): the builder's annotation decides."""
    config, _ = _resolved("lstm-text", "--algo", "celgc", "--opt", "clip=1", "--sched-opt", "milestones=2",
                          "--schedule", "step")
    assert config.optimizer.hparams["clip"] == 1.0 and isinstance(config.optimizer.hparams["clip"], float)
    assert config.schedule.options["milestones"] == [2]
    with pytest.raises(UsageError, match="interval must be a whole number"):
        _resolved("lstm-text", "--sync", "periodic", "--sync-opt", "interval=2.5")


def test_how_a_run_is_carried_out_goes_through_run_opt():
    assert translate_shortcuts(["t", "--keep-checkpoints", "3", "--checkpoint-minutes=5", "--timeout", "9",
                                "--skip-completed", "--report", "/tmp/r.json", "--validate-only"]) == [
        "t", "--run-opt", "keep_checkpoints=3", "--run-opt", "checkpoint_minutes=5", "--run-opt", "timeout=9",
        "--run-opt", "skip_completed=true", "--run-opt", "report=/tmp/r.json", "--run-opt", "only=validate"]
    how = cli._settings_of(cli.RunOptions, "run option", ["keep_checkpoints=3", "checkpoint_minutes=5", "timeout=9",
                                                          "skip_completed=true", "report=/tmp/r.json"], "--run-opt")
    assert (how.keep_checkpoints, how.checkpoint_minutes, how.timeout, how.skip_completed, how.report) == \
        (3, 5.0, 9.0, True, "/tmp/r.json")
    for bad, message in (("keep_checkpoints=0", "keep_checkpoints must be at least 1"),
                         ("timeout=0", "timeout must be > 0"), ("colour=1", "unknown run option")):
        with pytest.raises(UsageError, match=message):
            cli._settings_of(cli.RunOptions, "run option", [bad], "--run-opt")
    with pytest.raises(UsageError, match="--tf32 takes on or off, got 'maybe'"):
        translate_shortcuts(["t", "--tf32", "maybe"])


def test_the_rendezvous_and_quiet_are_run_options_never_the_identity():
    """`--run-opt nodes=K node_rank=i master_addr=HOST master_port=P quiet=true`: the old flags are rewritten to
    them (recorded command lines replay); the world counts the nodes, the identity does not change otherwise."""
    assert translate_shortcuts(["t", "--nodes", "2", "--node-rank=1", "--master-addr", "10.0.0.1", "--master-port",
                                "29501", "-q", "--quiet"]) == [
        "t", "--run-opt", "nodes=2", "--run-opt", "node_rank=1", "--run-opt", "master_addr=10.0.0.1",
        "--run-opt", "master_port=29501", "--run-opt", "quiet=true", "--run-opt", "quiet=true"]
    generic, world = _resolved("lstm-text", "--machines", "2", "--run-opt", "nodes=2", "--run-opt", "node_rank=1",
                               "--run-opt", "master_addr=10.0.0.1", "--run-opt", "quiet=true")
    old, old_world = _resolved("lstm-text", "--machines", "2", "--nodes", "2", "--node-rank", "1", "--quiet")
    plain, plain_world = _resolved("lstm-text", "--machines", "2")
    assert world == old_world == 4 and plain_world == 2
    assert generic.to_dict() == old.to_dict() == plain.to_dict() and generic.identity(world) == old.identity(world)
    how = cli._settings_of(cli.RunOptions, "run option", ["nodes=2", "node_rank=1", "master_addr=10.0.0.1",
                                                          "master_port=29501", "quiet=true"], "--run-opt")
    assert (how.nodes, how.node_rank, how.master_addr, how.master_port, how.quiet) == (2, 1, "10.0.0.1", 29501, True)
    for bad, message in (("node_rank=1", "0 <= node_rank < nodes, got nodes=1, node_rank=1"),
                         ("nodes=0", "need nodes >= 1"), ("master_port=70000", "master_port must be a port number"),
                         ("quiet=maybe", "quiet must be true or false")):
        with pytest.raises(UsageError, match=message):
            cli._settings_of(cli.RunOptions, "run option", [bad], "--run-opt")


def test_a_recorded_run_given_as_task_is_replayed_and_from_names_that(tmp_path):
    recorded, world = _resolved("lstm-text", "--algo", "celgc", "--lr", "3", "--machines", "2")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({**recorded.to_dict(), "identity": recorded.identity(world),
                                                     "world_size": world}))
    replay, replay_world = _resolved(str(run_dir))
    assert replay.to_dict() == recorded.to_dict() and replay.identity(replay_world) == recorded.identity(world)
    changed, _ = _resolved(str(run_dir / "config.json"), "--lr", "5")  # flags override the recorded settings
    assert changed.optimizer.hparams["lr"] == 5.0 and changed.sync.name == "periodic"
    with pytest.raises(UsageError, match="--preset does not apply"):
        _resolved(str(run_dir), "--preset", "paper")
    with pytest.raises(UsageError, match="--from is no longer a flag of `repro run`: give the recorded run as TASK"):
        _resolved("lstm-text", "--from", str(run_dir))


def test_run_is_small_and_its_component_flags_come_from_the_table():
    command = typer.main.get_command(cli.app).commands["run"]
    own = [p for p in command.params if p.name not in {n for k in components.KINDS for n in (k.name, f"{k.name}_opt")}]
    assert len(command.params) <= 25, [p.name for p in command.params]  # TASK, its own options and every kind's two
    assert len(command.params) == len(own) + 2 * len(components.KINDS)
    flags = {opt for p in command.params for opt in p.opts}
    assert not flags & {"--quiet", "-q", "--nodes", "--node-rank", "--master-addr", "--master-port", "--from"}
    for kind in components.KINDS:
        assert {kind.flag, kind.opt_flag, *kind.flag_aliases, *kind.opt_aliases} <= flags
    for kept in ("--lr", "--interval", "--machines", "--algo", "--epochs", "--seed", "--data-dir", "--out", "--preset",
                 "--set", "--opt", "--sync-opt", "--sched-opt"):
        assert kept in flags
    from repro.sweep import parse_grid

    cells = parse_grid("t", ["--optimizer-opt", "weight_decay=0,1e-4", "--train-opt", "max_steps=1,2"])
    assert len(cells) == 4 and ["--optimizer-opt", "weight_decay=1e-4"] == cells[-1][1:3]
    (cell,) = parse_grid("lstm-text", ["--train-opt", "log_stats=[1,3]"])  # a bracketed list is one value
    assert _resolved(*cell)[0].train.log_stats == [1, 3]


def test_list_and_help_name_the_components_from_the_registries():
    from typer.testing import CliRunner

    from repro.algorithms import ALGORITHMS

    runner = CliRunner()
    listed = runner.invoke(cli.app, ["list"]).output
    for kind in components.KINDS:
        for name in kind.registry.names():
            assert f"{kind.name:<11} {name} " in listed
    for name in ALGORITHMS:
        assert f"algo        {name} " in listed
    shown = runner.invoke(cli.app, ["run", "--help"], terminal_width=400, env={"COLUMNS": "400"}).output
    assert "periodic" in shown and "clipped-sgd" in shown and "celgc = clipped-sgd + periodic" in shown


@pytest.fixture
def topology_kind(monkeypatch):
    """A kind added the way the next ones will be: a registry plus one entry of the table."""
    registry = Registry("topology")

    @registry.register("none")
    def no_topology():
        return None

    @registry.register("ring")
    def ring(degree: int = 2, weight: float = 1 / 3):
        return None

    import sys
    import types

    module = types.ModuleType("fake_topologies")
    module.TOPOLOGIES = registry
    monkeypatch.setitem(sys.modules, "fake_topologies", module)
    new = components.Kind("topology", "fake_topologies:TOPOLOGIES", "none", "Who talks to whom",
                          label_options=(("degree", "d"),))
    monkeypatch.setattr(components, "KINDS", (*components.KINDS, new))
    return new


def test_a_new_kind_is_a_registry_and_one_entry(topology_kind):
    plain = resolve(RunRequest(task="lstm-text", algo="celgc"))
    assert plain.topology.name == "none" and "topology" in plain.to_dict()
    ring = resolve(RunRequest(task="lstm-text", algo="celgc", components={"topology": "ring"},
                              options={"topology": {"degree": 4, "weight": 1}}))
    assert ring.topology.options == {"degree": 4, "weight": 1.0}
    assert ring.label(4) == "clipped-sgd_periodic-I4_ring-d4_N4_quick"  # the table's order
    assert plain.label(4) == "clipped-sgd_periodic-I4_N4_quick"  # a later kind at its default: not named
    assert ring.identity(4) != plain.identity(4)
    with pytest.raises(UsageError, match="topology 'ring' does not take colour"):
        resolve(RunRequest(task="lstm-text", components={"topology": "ring"}, options={"topology": {"colour": 1}}))
    with pytest.raises(UsageError, match="unknown topology 'star'"):
        resolve(RunRequest(task="lstm-text", components={"topology": "star"}))
    # a run recorded before the kind existed: loads with the default and keeps its identity
    recorded = {k: v for k, v in plain.to_dict().items() if k != "topology"}
    older = RunConfig.from_dict(recorded)
    assert older.topology.name == "none" and older.identity(4) == plain.identity(4)
    # the flags: --topology NAME and --topology-opt KEY=VALUE are generated
    command = cli._with_component_flags(lambda task=None, components=None: components)
    import inspect

    assert {"topology", "topology_opt"} <= set(inspect.signature(command).parameters)
    given = {name: value for k in components.KINDS for name, value in ((k.name, None), (f"{k.name}_opt", []))}
    given.update(topology="ring", topology_opt=["degree=3"])
    assert command(task="x", **given)["topology"] == ("ring", ["degree=3"])


def test_identity_without_the_new_kind_is_the_one_computed_before_it(topology_kind, monkeypatch):
    config = resolve(RunRequest(task="lstm-text", algo="celgc"))
    with_kind, recorded = config.identity(4), {k: v for k, v in config.to_dict().items() if k != "topology"}
    monkeypatch.setattr(components, "KINDS", components.KINDS[:-1])
    without = RunConfig.from_dict(recorded)
    assert without.identity(4) == with_kind


def test_algorithms_are_a_registry_whose_options_flags_override():
    from repro.algorithms import ALGORITHMS, Algorithm

    algo = Algorithm("test-clip", "clipped SGD averaging every 3 steps",
                     {"optimizer": {"name": "clipped-sgd", "clip": 0.5}, "sync": {"name": "periodic", "interval": 3}})
    ALGORITHMS.register(algo.name, algo)
    try:
        config = resolve(RunRequest(task="lstm-text", algo="test-clip"))
        assert config.optimizer.hparams["clip"] == 0.5 and config.sync.options == {"interval": 3}
        flagged = resolve(RunRequest(task="lstm-text", algo="test-clip", sync_options={"interval": 5}, hparams={"clip": 2}))
        assert flagged.sync.options == {"interval": 5} and flagged.optimizer.hparams["clip"] == 2.0
        other = resolve(RunRequest(task="lstm-text", algo="test-clip", sync="every-step"))
        assert other.sync.name == "every-step" and other.sync.options == {"bucketed": True}
    finally:
        ALGORITHMS._items.pop(algo.name)
    with pytest.raises(UsageError, match="unknown algo 'magic'"):
        resolve(RunRequest(task="lstm-text", algo="magic"))


def test_run_request_takes_each_kind_by_its_own_keywords():
    a = RunRequest(task="t", optimizer="adamw", hparams={"lr": 1}, param_groups="no-decay-bias-norm",
                   sync="periodic", sync_options={"interval": 2}, schedule_options={"gamma": 0.5})
    assert a.components == {"optimizer": "adamw", "sync": "periodic"}
    assert a.options == {"optimizer": {"lr": 1, "param_groups": "no-decay-bias-norm"}, "sync": {"interval": 2},
                         "schedule": {"gamma": 0.5}}
    with pytest.raises(TypeError, match="colour"):
        RunRequest(task="t", colour=1)
    assert dataclasses.is_dataclass(a)


def test_the_flags_are_made_without_importing_a_registry():
    """The launcher of several workers never imports torch (tests/test_forkserver.py): the table names its registries
    by module path, and the flags are generated from the names alone."""
    import subprocess
    import sys

    probe = "import sys, repro.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_version_2_configs_upgrade_and_newer_ones_are_refused():
    """Version 3: the table's sections; a version-2 config (the first three kinds) reads as it is, every later kind at
    its default, with the identity it had; a config from a newer repro is refused rather than half read."""
    from repro.config import CONFIG_VERSION, RESUMABLE_SINCE

    now = resolve(RunRequest(task="lstm-text", algo="celgc", hparams={"lr": 3.0}))
    first_three = ("task", "optimizer", "sync", "schedule", "train")
    v2 = {**{k: v for k, v in now.to_dict().items() if k in first_three}, "version": 2}
    upgraded = RunConfig.from_dict(json.loads(json.dumps(v2)))
    assert upgraded.to_dict() == now.to_dict() and upgraded.to_dict()["version"] == CONFIG_VERSION == 3
    assert upgraded.identity(4) == now.identity(4) and upgraded.label(4) == now.label(4)
    assert set(upgraded.components) == {k.name for k in components.KINDS}
    assert RESUMABLE_SINCE == 2  # `repro resume` continues version-2 runs
    with pytest.raises(UsageError, match=f"config version {CONFIG_VERSION + 1} is newer than this repro"):
        RunConfig.from_dict({**v2, "version": CONFIG_VERSION + 1})
