"""Every experiment's paper-scale settings start on the CPU and take two steps with a few evaluation batches
(`repro reproduce NAME --scale paper --rehearse`), so the first run on a GPU box does not find a broken recipe."""
import pytest

from conftest import SHARED_DATA, run_repro
from repro.experiments import EXPERIMENTS

PAPER_SCALE = [name for name in EXPERIMENTS.names() if "paper" in EXPERIMENTS.get(name).scales]


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("experiment", PAPER_SCALE)
def test_every_paper_cell_starts_and_takes_two_steps(experiment):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no offline data copies in {SHARED_DATA}")
    done = run_repro("reproduce", experiment, "--scale", "paper", "--rehearse", "--data-root", SHARED_DATA,
                     timeout=3600)
    settings = len(EXPERIMENTS.get(experiment).scales["paper"].settings)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"rehearsing {settings} settings" in done.stderr and done.stderr.count("] done in ") == settings, done.stderr
