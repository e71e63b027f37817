"""Runs that differ only in their seed (``results.by_setting``), reduced to mean, std and n: the curves and heat-map
cells of every figure, and the table of final metrics that ``repro summarize`` writes.

Runs of one setting evaluate at the same epochs, so their metrics are aligned by row: row i is every seed's i-th
evaluation (not by the value of ``epoch`` or ``wall_seconds``: the latter differs between seeds). A seed that has
fewer rows (still running) counts only in the rows it has, so n is given per row.

std is the sample standard deviation (ddof=1) and NaN when n = 1: one seed says nothing about the spread, and a 0
would read as "no spread at all". Figures draw no band and tables print no ± where it is NaN.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from repro.results import Run

# metrics.csv columns that count or time the run rather than score the model: not "final metrics"; also every
# column of the sync policies' byte ledgers (bytes_sent, eval_bytes_received, bytes_sent_<role>, ...).
BOOKKEEPING = {"epoch", "iteration", "grad_evals", "wall_seconds", "lr", "clip_fraction", "comm_rounds", "comm_bytes",
               "eval_comm_rounds", "eval_comm_bytes", "worker_spread", "status"}
BOOKKEEPING_PREFIXES = ("bytes_", "eval_bytes_")
HPARAMS = ("lr", "weight_decay", "clip", "momentum", "smoothness", "alpha")  # the ones a summary row shows


def aligned(runs: list[Run], column: str) -> pd.DataFrame:
    """One column per run (in the order given), one row per evaluation; NaN where a run has no value."""
    return pd.concat([pd.to_numeric(r.metrics[column], errors="coerce").reset_index(drop=True)
                      if column in r.metrics else pd.Series(dtype=float) for r in runs], axis=1, ignore_index=True)


def curve(runs: list[Run], x: str, y: str) -> pd.DataFrame:
    """Per evaluation: ``x`` (its mean over the runs), and the ``mean``, ``std`` and ``n`` of ``y`` over the runs
    that logged it there; rows where none did (e.g. test_ppl before the last epoch) are left out."""
    ys = aligned(runs, y)
    table = pd.DataFrame({x: aligned(runs, x).mean(axis=1), "mean": ys.mean(axis=1), "std": ys.std(axis=1, ddof=1),
                          "n": ys.count(axis=1)})
    return table[table["n"] > 0].reset_index(drop=True)


def metric_columns(runs: list[Run]) -> list[str]:
    """The numeric score columns of these runs' metrics (val_loss, test_acc, train_loss...), in first-seen order."""
    seen: dict[str, None] = {}
    for run in runs:
        for column in run.metrics.columns:
            if column not in BOOKKEEPING and not column.startswith(BOOKKEEPING_PREFIXES) and pd.api.types.is_numeric_dtype(run.metrics[column]):
                seen[column] = None
    return list(seen)


def final_stats(runs: list[Run], columns: list[str] | None = None) -> dict[str, tuple[float, float, int]]:
    """Per metric: (mean, std, n) of the runs' last-row values; a run whose last row has no value there (a
    diverged run's loss) is not counted in that metric's n."""
    out = {}
    for column in columns if columns is not None else metric_columns(runs):
        last = pd.Series([pd.to_numeric(r.metrics[column], errors="coerce").iloc[-1] if column in r.metrics
                          else math.nan for r in runs], dtype=float).dropna()
        out[column] = (float(last.mean()) if len(last) else math.nan, float(last.std(ddof=1)) if len(last) > 1 else math.nan,
                       len(last))
    return out


def describe(run: Run) -> dict:
    """The columns that name a setting in a summary row."""
    c = run.config
    hparams = c["optimizer"]["hparams"]
    return {"task": run.task, "preset": run.preset or "", "recipe": c["task"].get("recipe") or "",
            "optimizer": c["optimizer"]["name"], **{k: hparams[k] for k in HPARAMS if k in hparams},
            "sync": c["sync"]["name"], "interval": c["sync"]["options"].get("interval"),
            "world_size": int(c.get("world_size", c["train"]["machines"])), "schedule": c["schedule"]["name"],
            "epochs": c["train"]["epochs"]}


def summary_table(groups: dict[str, list[Run]]) -> pd.DataFrame:
    """One row per setting: what it is, its seeds, and mean/std/n of every final metric (columns METRIC_mean,
    METRIC_std, METRIC_n); the ``setting`` hash tells apart settings whose shown columns are equal."""
    metrics = metric_columns([r for runs in groups.values() for r in runs])
    rows = []
    for key, runs in groups.items():
        row = {**describe(runs[0]), "setting": key, "seeds": " ".join(str(r.seed) for r in runs)}
        for column, (mean, std, n) in final_stats(runs, metrics).items():
            row.update({f"{column}_mean": mean, f"{column}_std": std, f"{column}_n": n})
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table.drop(columns=[k for k in ("interval", *HPARAMS) if k in table and table[k].isna().all()])
    if "interval" in table:
        table["interval"] = table["interval"].astype("Int64")
    keys = [k for k in ("task", "preset", "optimizer", "sync", "interval", "world_size", *HPARAMS) if k in table]
    return table.sort_values(keys, na_position="first", kind="stable").reset_index(drop=True)


def _number(v: float, digits: int) -> str:
    return f"{v:.{digits}g}"


def _cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]], int]:
    """Header, text cells and the number of number columns (at the end) for the Markdown and LaTeX tables: a
    metric is one column "mean ± std", with (n=k) added where fewer seeds than the setting's have it."""
    metrics = [c[:-5] for c in table.columns if c.endswith("_mean")]
    plain = [c for c in table.columns if not c.endswith(("_mean", "_std", "_n")) and c != "setting"]
    header = plain + ["n"] + metrics
    body = []
    for _, row in table.iterrows():
        seeds = len(str(row["seeds"]).split())
        cells = ["" if pd.isna(row[c]) else _number(row[c], 6) if isinstance(row[c], float) else str(row[c])
                 for c in plain] + [str(seeds)]
        for m in metrics:
            mean, std, n = row[f"{m}_mean"], row[f"{m}_std"], int(row[f"{m}_n"])
            text = "" if pd.isna(mean) else _number(mean, 4) + ("" if pd.isna(std) else f" ± {_number(std, 2)}")
            cells.append(text + (f" (n={n})" if n != seeds else ""))
        body.append(cells)
    return header, body, len(metrics) + 1


def to_markdown(table: pd.DataFrame) -> str:
    header, body, _ = _cells(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"


def _tex(text: str) -> str:
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text.replace("±", "$\\pm$")


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""
    header, body, numbers = _cells(table)
    lines = [f"\\begin{{tabular}}{{{'l' * (len(header) - numbers) + 'r' * numbers}}}", "\\toprule",
             " & ".join(_tex(h) for h in header) + " \\\\", "\\midrule",
             *(" & ".join(_tex(c) for c in row) + " \\\\" for row in body), "\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_summary(table: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "summary.csv", out / "summary.md", out / "summary.tex"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(to_markdown(table))
    paths[2].write_text(to_latex(table))
    return paths
