"""CELGC (Liu et al. 2022), language models: training loss, validation and test perplexity against epochs, and
training loss and validation perplexity against wall-clock time, one curve per communication interval I plus the
every-step baseline (mean ± std over seeds). Runs logged before test perplexity was scored every epoch show it at
their last epoch only."""
from __future__ import annotations

from pathlib import Path

from repro.figures import FIGURES
from repro.figures._curves import draw_interval_curves
from repro.results import load_runs, require

LM_TASKS = ("lstm-ptb", "lstm-wt2", "lstm-text")
PANELS = (("epoch", "train_loss", "epochs", "running training loss"), ("epoch", "val_ppl", "epochs", "validation perplexity"),
          ("epoch", "test_ppl", "epochs", "test perplexity"),
          ("wall_seconds", "train_loss", "wall-clock (s)", "running training loss"),
          ("wall_seconds", "val_ppl", "wall-clock (s)", "validation perplexity"),
          ("wall_seconds", "test_ppl", "wall-clock (s)", "test perplexity"))


@FIGURES.register("celgc-lm")
def draw(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    runs = [r for r in load_runs(results, LM_TASKS, preset) if r.config["optimizer"]["name"] == "clipped-sgd"]
    require(runs, "clipped-sgd language-model runs", results,
            "run e.g. `repro run lstm-ptb --algo celgc --interval 4` and `--algo naive-parallel-clip` first")
    return draw_interval_curves(runs, out, "celgc-lm", PANELS, log_y={"val_ppl", "test_ppl"},
                                summary_columns=("train_loss", "val_ppl", "test_ppl"))
