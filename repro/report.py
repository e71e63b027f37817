"""`repro report`: every claim of every experiment judged from the runs under RESULTS, written to
RESULTS/REPORT.md and RESULTS/REPORT.html (with the experiments' figures)."""
from __future__ import annotations

import html
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from repro.claims import NOT_RUN, Verdict
from repro.experiments import EXPERIMENTS, SCALES, Experiment, evidence


@dataclass
class Judged:
    experiment: Experiment
    scale: str
    claim_id: str
    statement: str
    where: str
    rule: str
    verdict: Verdict
    runs: int


def judge_all(results: Path, setting_key: Callable[[list[str]], str]) -> tuple[list[Judged], list[Path]]:
    """Every claim at every scale that has runs (the quick scale always, to show what is missing)."""
    judged, run_dirs = [], []
    for name in EXPERIMENTS.names():
        experiment = EXPERIMENTS.get(name)
        for scale in SCALES:
            if scale not in experiment.scales:
                continue
            ev, done = evidence(experiment, scale, results, setting_key)
            if not done and scale != "quick":
                continue
            run_dirs += list(done.values())
            for claim in experiment.claims:
                verdict = claim.judge(ev) if done else Verdict(NOT_RUN, "no runs yet",
                                                               f"run: repro reproduce {name} --scale {scale}")
                judged.append(Judged(experiment, scale, claim.id, claim.statement, claim.where, claim.rule, verdict,
                                     len(done)))
    return judged, run_dirs


def _environment(run_dirs: list[Path]) -> tuple[str, str]:
    """(hardware, commits) of the runs, from their config.json."""
    machines, commits = Counter(), Counter()
    for run in run_dirs:
        try:
            env = json.loads((Path(run) / "config.json").read_text()).get("environment", {})
        except (OSError, ValueError):
            continue
        gpus = env.get("gpus") or env.get("cuda_devices") or []
        cpu = env.get("cpu") or env.get("processor") or env.get("platform") or "unknown CPU"
        cores = env.get("cpu_count")
        machines[f"{cpu}{f', {cores} cores' if cores else ''}{', GPUs: ' + ', '.join(map(str, gpus)) if gpus else ', no GPU'}"] += 1
        commits[str(env.get("git_commit") or "unknown")[:12]] += 1
    hardware = "; ".join(f"{m} ({n} runs)" for m, n in machines.most_common()) or "no runs"
    return hardware, ", ".join(f"{c} ({n} runs)" for c, n in commits.most_common()) or "none"


def write(results: Path, judged: list[Judged], run_dirs: list[Path]) -> list[Path]:
    hardware, commits = _environment(run_dirs)
    counts = Counter(j.verdict.outcome for j in judged)
    lines = ["# Claims report", "",
             f"Written by `repro report` on {time.strftime('%Y-%m-%d %H:%M %Z')} from the runs under `{results}`.",
             f"Hardware of the runs: {hardware}.", f"Code (git commit) of the runs: {commits}.", "",
             "Each claim's rule is fixed in code (`repro/experiments/`, `repro/claims.py`) before its runs; a verdict "
             "holds for the scale it names only. Numbers are mean ± std (n = seeds).", "",
             "Verdicts: " + ", ".join(f"{n} {o}" for o, n in counts.most_common()), "",
             "| claim | scale | verdict | measured |", "|---|---|---|---|"]
    for j in judged:
        lines.append(f"| {j.claim_id}: {j.statement} | {j.scale} | **{j.verdict.outcome}** | {j.verdict.measured} |")
    lines.append("")
    for name in dict.fromkeys(j.experiment.name for j in judged):
        mine = [j for j in judged if j.experiment.name == name]
        experiment = mine[0].experiment
        lines += [f"## {name} ({experiment.paper})", "", experiment.summary + ".", ""]
        for scale in dict.fromkeys(j.scale for j in mine):
            spec = experiment.scales[scale]
            lines += [f"**{scale}** ({len(spec.settings)} settings x {spec.seeds} seeds; "
                      f"{sum(j.runs for j in mine if j.scale == scale) // max(1, sum(1 for j in mine if j.scale == scale))}"
                      f" complete runs): {spec.why}", ""]
            for j in (j for j in mine if j.scale == scale):
                lines += [f"- **{j.claim_id}** — {j.statement} ({j.where}).", f"  Rule: {j.rule}.",
                          f"  Measured: {j.verdict.measured}.", f"  Verdict: **{j.verdict.outcome}**"
                          + (f" — {j.verdict.detail}" if j.verdict.detail else ""), ""]
            figures = sorted((experiment.folder(results, scale) / "figures").glob("*.png"))
            lines += [f"![{f.stem}]({f.relative_to(results)})" for f in figures] + ([""] if figures else [])
    md = results / "REPORT.md"
    md.write_text("\n".join(lines) + "\n")
    page = results / "REPORT.html"
    page.write_text(_html(lines))
    return [md, page]


def _html(lines: list[str]) -> str:
    """The Markdown report as a plain HTML page (tables, headings, images), no converter needed."""
    out, in_table = ["<!doctype html><meta charset=utf-8><title>repro claims report</title>",
                     "<style>body{font-family:sans-serif;max-width:70em;margin:auto}td,th{border:1px solid #ccc;"
                     "padding:4px;vertical-align:top}table{border-collapse:collapse}img{max-width:100%}</style>"], False
    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            out.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(src)}"></p>')
        elif line.strip():
            out.append(f"<p>{_inline(line.strip())}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)
