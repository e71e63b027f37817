"""Every experiment's paper-scale settings start on the CPU and take two steps with a few evaluation batches
(`repro reproduce NAME --scale paper --rehearse`), so the first run on a GPU box does not find a broken recipe."""
import pytest

from conftest import SHARED_DATA, run_repro, unavailable
from repro.experiments import EXPERIMENTS, rehearsal_settings

PAPER_SCALE = [name for name in EXPERIMENTS.names() if "paper" in EXPERIMENTS.get(name).scales]


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("experiment", PAPER_SCALE)
def test_every_paper_cell_starts_and_takes_two_steps(experiment):
    if not SHARED_DATA.is_dir():
        unavailable(f"no offline data copies in {SHARED_DATA}")
    spec = EXPERIMENTS.get(experiment).scales["paper"]
    # the paper recipes read CIFAR's python version, which this offline copy lacks: rehearse on its JPEG copy
    cifar = ["--rehearse-set", "data_format=jpeg"] if any("cifar" in s.argv[0] for s in spec.settings) else []
    done = run_repro("reproduce", experiment, "--scale", "paper", "--rehearse", "--data-root", SHARED_DATA, *cifar,
                     timeout=3600)
    settings = len(rehearsal_settings(spec.settings))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"rehearsing {settings} settings" in done.stderr and done.stderr.count("] done in ") == settings, done.stderr


def test_a_rehearsal_starts_each_recipe_shape_once():
    from repro.experiments import Setting

    grid = [Setting(f"{o} {lr}", ("resnet110-cifar10", "--optimizer", o, "--lr", lr, "--weight-decay", wd))
            for o in ("adamw", "adam-l2") for lr in ("1e-3", "5e-3") for wd in ("0", "1e-2")]
    assert [s.label for s in rehearsal_settings(grid)] == ["adamw 1e-3", "adam-l2 1e-3"]
    # an averaging interval is a value too; another algorithm or worker count is another shape
    celgc = [Setting(label, ("resnet56-cifar10", *argv)) for label, argv in (
        ("naive", ("--algo", "naive-parallel-clip")), ("I4", ("--algo", "celgc", "--interval", "4")),
        ("I16", ("--algo", "celgc", "--interval", "16")), ("I16 N2", ("--algo", "celgc", "--interval", "16",
                                                                      "--machines", "2")))]
    assert [s.label for s in rehearsal_settings(celgc)] == ["naive", "I4", "I16 N2"]
