"""Recipes, the precedence flag > recipe > default, the typed config and the versioned run identity (in process)."""
import json

import pytest

from repro import recipes
from repro.config import CONFIG_VERSION, RunConfig
from repro.errors import UsageError
from repro.results import upgraded
from repro.runspec import RunRequest, resolve
from repro.task import TASKS


def test_every_recipe_resolves_for_every_task_it_names():
    # Unknown keys in a recipe (a typo in a task option, hyperparameter or train setting) fail here.
    for name in recipes.RECIPES.names():
        recipe = recipes.RECIPES.get(name)
        assert recipe.tasks and all(t in TASKS for t in recipe.tasks), name
        config = resolve(RunRequest(task=name))
        assert config.task.recipe == name and config.task.name == recipe.tasks[0]
        assert config.optimizer.name == recipe.optimizer["name"]
        for task in recipe.tasks[1:]:
            if recipe.preset:
                by_alias = resolve(RunRequest(task=task, preset=recipe.preset,
                                              optimizer=recipe.for_optimizers[0] if recipe.for_optimizers else None))
                assert by_alias.task.recipe == name


def test_each_preset_has_exactly_one_default_recipe_per_task():
    for task in TASKS.names():
        for preset in recipes.presets_of(task):
            recipes.by_preset(task, preset, None)  # raises when zero or several defaults


def test_unknown_recipe_keys_are_rejected():
    bad = recipes.Recipe(name="x", tasks=("lstm-text",), summary="", source="", optimizer={"name": "sgd", "lrr": 1})
    recipes.RECIPES._items["typo-recipe"] = bad
    try:
        with pytest.raises(UsageError, match="does not take lrr"):
            resolve(RunRequest(task="typo-recipe"))
    finally:
        del recipes.RECIPES._items["typo-recipe"]


def test_precedence_flag_over_recipe_over_default():
    config = resolve(RunRequest(task="lstm-ptb", preset="paper"))
    assert config.task.recipe == "celgc-ptb-paper"
    assert config.optimizer.hparams["lr"] == 30.0  # recipe
    assert config.task.options["batch_size"] == 3  # recipe
    assert config.task.options["eval_batch_size"] == 10  # recipe
    flagged = resolve(RunRequest(task="lstm-ptb", preset="paper", hparams={"lr": 5.0}, task_options={"batch_size": 7},
                                 train={"epochs": 3}))
    assert flagged.optimizer.hparams["lr"] == 5.0 and flagged.optimizer.hparams["clip"] == 7.5
    assert flagged.task.options["batch_size"] == 7 and flagged.train.epochs == 3 and flagged.train.machines == 8
    quick = resolve(RunRequest(task="lstm-text"))  # default preset quick; dropoute not in the recipe: the default
    assert quick.task.options["dropoute"] == 0.0 and quick.train.eval_sync == "copy"


def test_builder_defaults_are_written_out():
    config = resolve(RunRequest(task="resnet20-cifar10", optimizer="adam"))
    assert config.optimizer.hparams == {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    assert config.sync.options == {} and config.schedule.options == {}
    sched = resolve(RunRequest(task="resnet20-cifar10", schedule="step"))
    assert sched.schedule.options == {"milestones": (), "gamma": 0.1}


def test_another_optimizer_does_not_inherit_the_recipes_hyperparameters():
    # P2's lambda must not become SGDOL's or AdaGrad's weight decay.
    for name in ("sgdol", "adagrad", "sgd"):
        config = resolve(RunRequest(task="resnet56-cifar10", preset="paper", optimizer=name))
        assert config.optimizer.hparams["weight_decay"] == 0.0, name
        assert config.task.options["bn"] is False  # the task setting still comes from the recipe


def test_schedule_flag_keeps_the_recipes_options_and_takes_its_own():
    celgc = resolve(RunRequest(task="resnet56-cifar10", preset="paper", algo="celgc", schedule="step"))
    assert celgc.schedule.options["milestones"] == [80, 120]  # same schedule: the recipe's milestones stay
    custom = resolve(RunRequest(task="resnet20-cifar10", schedule="step", schedule_options={"milestones": [3, 5]}))
    assert custom.schedule.options == {"milestones": [3, 5], "gamma": 0.1}
    with pytest.raises(UsageError, match="does not take colour"):
        resolve(RunRequest(task="resnet20-cifar10", schedule="step", schedule_options={"colour": 1}))


def test_generic_options_are_validated_against_the_builder():
    adam = resolve(RunRequest(task="resnet20-cifar10", optimizer="adamw", hparams={"beta2": 0.99, "eps": 1e-6}))
    assert adam.optimizer.hparams["beta2"] == 0.99 and adam.optimizer.hparams["eps"] == 1e-6
    with pytest.raises(UsageError, match="does not take clip"):
        resolve(RunRequest(task="resnet20-cifar10", optimizer="adamw", hparams={"clip": 1.0}))
    with pytest.raises(UsageError, match="beta2 must be in"):
        resolve(RunRequest(task="resnet20-cifar10", optimizer="adamw", hparams={"beta2": 1.5}))
    with pytest.raises(UsageError, match="does not take interval"):
        resolve(RunRequest(task="lstm-text", sync="every-step", sync_options={"interval": 4}))


def test_presets_give_each_optimizer_its_own_best_cell():
    l2 = resolve(RunRequest(task="resnet110-cifar10", preset="paper-x100", optimizer="adam-l2"))
    w = resolve(RunRequest(task="resnet110-cifar10", preset="paper-x100", optimizer="adamw"))
    assert (l2.optimizer.hparams["lr"], l2.optimizer.hparams["weight_decay"]) == (1e-4, 0.1)
    assert (w.optimizer.hparams["lr"], w.optimizer.hparams["weight_decay"]) == (5e-4, 1e-4)
    assert w.train.loss_multiplier == 100.0 and w.task.options["bn"] is False
    assert w.task.recipe == "adamw-resnet110-nobn-loss100x-paper"


def test_paper_preset_of_resnet56_is_celgcs_for_clipped_sgd_and_p2s_for_adam():
    celgc = resolve(RunRequest(task="resnet56-cifar10", preset="paper", algo="celgc", sync_options={"interval": 8}))
    assert celgc.task.recipe == "celgc-resnet56-paper"
    assert celgc.optimizer.hparams == {"lr": 0.3, "clip": 1.0, "momentum": 0.0, "weight_decay": 5e-4}
    assert celgc.task.options["batch_size"] == 64 and celgc.task.options["bn"] is True
    assert celgc.schedule.name == "step" and celgc.schedule.options == {"milestones": [80, 120], "gamma": 0.1}
    assert celgc.sync.options == {"interval": 8} and celgc.train.machines == 8 and celgc.train.epochs == 160
    baseline = resolve(RunRequest(task="resnet56-cifar10", preset="paper", algo="naive-parallel-clip"))
    assert baseline.sync.name == "every-step" and baseline.optimizer == celgc.optimizer
    adamw = resolve(RunRequest(task="resnet56-cifar10", preset="paper", optimizer="adamw"))
    assert adamw.task.options["bn"] is False and adamw.task.options["batch_size"] == 128
    assert adamw.schedule.name == "constant" and adamw.train.machines == 1


def test_a_recipe_name_runs_without_a_task_name_and_rejects_a_preset():
    config = resolve(RunRequest(task="celgc-wt2-paper"))
    assert config.task.name == "lstm-wt2" and config.train.seed == 1882 and config.train.eval_sync == "in-place"
    with pytest.raises(UsageError, match="is a recipe"):
        resolve(RunRequest(task="celgc-wt2-paper", preset="quick"))
    with pytest.raises(UsageError, match="unknown preset 'huge'"):
        resolve(RunRequest(task="lstm-ptb", preset="huge"))


def test_identity_ignores_defaults_labels_and_data_location():
    a = resolve(RunRequest(task="lstm-text", task_options={"data_dir": "/a"}))
    b = resolve(RunRequest(task="lstm-text", task_options={"data_dir": "/b"}, hparams={"momentum": 0.0}))
    assert a.identity(4) == b.identity(4)
    assert a.identity(4) != a.identity(2)
    c = resolve(RunRequest(task="lstm-text", hparams={"lr": 1.0}))
    assert c.identity(4) != a.identity(4)


def test_a_version_1_config_loads_upgrades_and_keeps_its_identity_meaning():
    v1 = {"task": {"name": "lstm-text", "preset": "quick", "options": {"batch_size": 20, "bptt": 35}},
          "optimizer": {"name": "clipped-sgd", "hparams": {"lr": 20.0, "clip": 5.0}},
          "sync": {"name": "periodic", "options": {"interval": 4}}, "schedule": {"name": "constant", "options": {}},
          "train": {"epochs": 6, "machines": 4, "seed": 0, "max_steps": None, "eval_batches": None,
                    "average_after_nonmono": 0}, "identity": "0123456789", "world_size": 4}
    config = RunConfig.from_dict(v1)
    assert config.optimizer.hparams == {"lr": 20.0, "clip": 5.0, "momentum": 0.0, "weight_decay": 0.0}
    assert config.train.loss_multiplier == 1.0 and config.version == CONFIG_VERSION
    now = resolve(RunRequest(task="lstm-text", preset="quick"))
    assert config.identity(4) == now.identity(4)  # the same experiment under both versions
    assert upgraded(v1)["identity"] == "0123456789" and upgraded(v1)["train"]["eval_sync"] == "copy"
    assert json.loads(json.dumps(config.to_dict()))["version"] == CONFIG_VERSION


def test_replaying_a_recorded_run_with_flags_overriding(tmp_path):
    recorded = resolve(RunRequest(task="lstm-ptb", preset="paper", hparams={"lr": 12.0}))
    (tmp_path / "config.json").write_text(json.dumps({**recorded.to_dict(), "identity": "x", "world_size": 8}))
    from repro.runspec import load_recorded

    base = load_recorded(tmp_path)
    replay = resolve(RunRequest(task="lstm-ptb", base=base))
    assert replay.to_dict() == recorded.to_dict()
    changed = resolve(RunRequest(task="lstm-ptb", base=base, train={"epochs": 2}, sync_options={"interval": 4}))
    assert changed.train.epochs == 2 and changed.sync.options == {"interval": 4}
    assert changed.optimizer.hparams["lr"] == 12.0
    with pytest.raises(UsageError, match="the recorded run is of task lstm-ptb"):
        resolve(RunRequest(task="lstm-wt2", base=base))


def test_setting_groups_runs_that_differ_only_in_their_seed(tmp_path):
    import json

    from repro.results import by_setting, load_runs

    base = resolve(RunRequest(task="lstm-text"))
    seeded = resolve(RunRequest(task="lstm-text", train={"seed": 3}))
    other = resolve(RunRequest(task="lstm-text", hparams={"lr": 5.0}, train={"seed": 3}))
    assert base.setting(2) == seeded.setting(2) != other.setting(2)
    assert base.identity(2) != seeded.identity(2)
    assert base.setting(2) != base.setting(4)  # the world size is part of a setting
    for i, (config, complete) in enumerate([(seeded, False), (base, True), (other, True), (seeded, True)]):
        run = tmp_path / "lstm-text" / f"run{i}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({**config.to_dict(), "world_size": 2}))
        (run / "metrics.csv").write_text("epoch,val_loss\n1,5.0\n")
        if complete:
            (run / "summary.json").write_text("{}")
    groups = by_setting(load_runs(tmp_path))
    assert sorted(len(g) for g in groups.values()) == [1, 2]
    (pair,) = [g for g in groups.values() if len(g) == 2]
    assert [r.seed for r in pair] == [0, 3] and all(r.complete for r in pair)  # seed 3's complete repeat wins


def test_every_subpackage_is_installed_by_pyproject():
    """A non-editable install (the images) gets only the packages pyproject lists."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    line = re.search(r"^packages = \[(.*)\]$", (root / "pyproject.toml").read_text(), re.M).group(1)
    listed = set(re.findall(r'"([^"]+)"', line))
    found = {"repro." + str(p.parent.relative_to(root / "repro")).replace("/", ".") for p in (root / "repro").glob("*/__init__.py")}
    assert found | {"repro", "repro.tasks"} <= listed


def test_sgdol_paper_recipe_pairs_both_gradients_on_one_batch_and_the_flag_overrides_it():
    paper = resolve(RunRequest(task="convnet-mnist", preset="paper"))
    assert paper.task.recipe == "sgdol-mnist-paper" and paper.train.pairing == "same-batch"
    assert resolve(RunRequest(task="convnet-mnist", preset="quick")).train.pairing == "fresh-batch"
    assert resolve(RunRequest(task="convnet-mnist", preset="paper", optimizer="sgd")).train.pairing == "fresh-batch"
    flag = resolve(RunRequest(task="sgdol-mnist-paper", train={"pairing": "fresh-batch"}))
    assert flag.train.pairing == "fresh-batch"
    # the default leaves identities alone: the same as a config recorded before the setting existed
    recorded = {k: v for k, v in flag.to_dict()["train"].items() if k != "pairing"}
    older = RunConfig.from_dict({**flag.to_dict(), "train": recorded})
    assert older.train.pairing == "fresh-batch" and older.identity(1) == flag.identity(1)
    with pytest.raises(UsageError, match="pairing must be one of fresh-batch, same-batch"):
        resolve(RunRequest(task="convnet-mnist", preset="quick", train={"pairing": "same"}))


def test_resolving_checks_optimizer_values_without_importing_dynamo():
    """The launcher validates a run's optimizer without building it (building imports torch._dynamo: ~1.9 s and
    ~150 MB in a process that never steps), and still refuses the values the optimizer refuses."""
    import subprocess
    import sys

    probe = ("import sys\n"
             "from repro.errors import UsageError\n"
             "from repro.runspec import RunRequest, resolve\n"
             "resolve(RunRequest(task='resnet20-cifar10', preset='quick'))\n"
             "try:\n"
             "    resolve(RunRequest(task='resnet20-cifar10', preset='quick', hparams={'beta1': 1.5}))\n"
             "    print('accepted')\n"
             "except UsageError as e:\n"
             "    print(e)\n"
             "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    refused, dynamo = out.stdout.splitlines()
    assert refused == "beta1 must be in [0, 1), got 1.5"
    assert dynamo == "False"
