"""`repro report`: every claim of every experiment judged from the runs under RESULTS, written to
RESULTS/REPORT.md and RESULTS/REPORT.html (with the experiments' figures).

A claim's verdict uses only the runs made from its rule commit (``Claim.rule_commit``) or a descendant of it: the
run's commit (config.json's ``environment.git_commit``) is checked with ``git merge-base --is-ancestor`` in the
repository that holds RESULTS (else the one holding this package). Other runs are listed as not counted, with why.
For an inconclusive claim the report gives the seeds per arm at which the observed effect would decide.
"""
from __future__ import annotations

import html
import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from repro.claims import INCONCLUSIVE, NOT_RUN, Claim, Evidence, Verdict, recording, verdict_seeds
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
    runs: int  # complete runs the verdict counted
    rule_commit: str = ""  # as the claim names it ("" = not recorded)
    rule_commit_note: str = ""  # the commit's date and subject, or why it cannot be checked
    not_counted: list[tuple[Path, str]] = field(default_factory=list)  # (run folder, why): in this plan's cells
    outside_plan: int = 0  # runs of older commits on seeds this plan does not run (a pilot's, an earlier plan's)


class Lineage:
    """Which commits descend from which, asked of git in the repository holding ``where`` (or this package)."""

    def __init__(self, where: Path):
        self.root = _git_root(Path(where)) or _git_root(Path(__file__).resolve().parent)

    def _git(self, *args: str) -> subprocess.CompletedProcess | None:
        if self.root is None:
            return None
        try:
            return subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None

    @lru_cache(maxsize=None)
    def resolve(self, commit: str) -> str | None:
        """The full hash of ``commit`` if this repository has it."""
        r = self._git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
        return r.stdout.strip() if r is not None and r.returncode == 0 else None

    @lru_cache(maxsize=None)
    def describe(self, commit: str) -> str:
        """The commit's date and the start of its subject."""
        r = self._git("show", "-s", "--format=%cs %s", commit)
        text = r.stdout.strip() if r is not None and r.returncode == 0 else ""
        return text if len(text) <= 90 else text[:89] + "…"

    @lru_cache(maxsize=None)
    def descends(self, ancestor: str, commit: str) -> bool:
        r = self._git("merge-base", "--is-ancestor", ancestor, commit)
        return r is not None and r.returncode == 0


def _git_root(where: Path) -> Path | None:
    probe = where if where.is_dir() else where.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        r = subprocess.run(["git", "-C", str(probe), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(r.stdout.strip()) if r.returncode == 0 else None


def run_commit(run) -> str:
    """The commit a run was made from, without the ``-dirty`` mark ("" if it did not record one)."""
    commit = str((run.config.get("environment") or {}).get("git_commit") or "")
    return commit[:-len("-dirty")] if commit.endswith("-dirty") else commit


def counted_runs(claim: Claim, ev: Evidence, lineage: Lineage) -> tuple[Evidence, list[tuple[Path, str]], str]:
    """The runs of ``ev`` the claim's verdict may use (made from its rule commit or a descendant), the others with
    why, and a note on the rule commit."""
    if not claim.rule_commit:
        return ev, [], "not recorded: every run counts"
    rule = lineage.resolve(claim.rule_commit)
    if rule is None:
        why = ("not in this repository's history (a shallow clone?)" if lineage.root else "no git repository here")
        return Evidence({label: [] for label in ev.runs}, ev.scale), \
            [(run.path, f"cannot check: rule commit {why}") for runs in ev.runs.values() for run in runs], \
            f"cannot be checked: {why}"
    kept, dropped = {}, []
    for label, runs in ev.runs.items():
        kept[label] = []
        for run in runs:
            commit = run_commit(run)
            full = lineage.resolve(commit) if commit else None
            if not commit:
                dropped.append((run.path, "its commit was not recorded"))
            elif full is None:
                dropped.append((run.path, f"made from {commit[:12]}, a commit this repository does not have"))
            elif not lineage.descends(rule, full):
                dropped.append((run.path, f"made from {commit[:12]}, not the rule commit or a descendant"))
            else:
                kept[label].append(run)
    note = lineage.describe(rule)
    if not lineage.descends(rule, "HEAD"):
        note += "; not an ancestor of the checked-out code"
    return Evidence(kept, ev.scale), dropped, note


def in_plan(dropped: list[tuple[Path, str]], ev: Evidence, planned: set[tuple[str, int]]) \
        -> tuple[list[tuple[Path, str]], int]:
    """Of the runs a claim does not count, those on the plan's (label, seed) cells, listed (`repro reproduce` takes
    such a cell as done), and how many others there are (a pilot's or an earlier plan's seeds, never judged)."""
    cell_of = {run.path: (label, run.seed) for label, runs in ev.runs.items() for run in runs}
    listed = [(path, why) for path, why in dropped if cell_of.get(path) in planned]
    return listed, len(dropped) - len(listed)


def uncounted_runs(experiment: Experiment, ev: Evidence, results: Path) -> list[tuple[Path, str]]:
    """The complete runs in ``ev`` that a claim of ``experiment`` would not count (made before its rule commit),
    with why: `repro reproduce` would take their cells as done (same identity) while the report drops them."""
    lineage = Lineage(Path(results))
    stale: dict[Path, str] = {}
    for claim in experiment.claims:
        for path, why in counted_runs(claim, ev, lineage)[1]:
            stale.setdefault(path, f"{why} ({claim.id}'s rule commit {claim.rule_commit[:10]})")
    return sorted(stale.items())


def judge_claim(claim: Claim, ev: Evidence, planned: int = 0) -> Verdict:
    """The claim's verdict, with the seeds per arm that would decide it when it is inconclusive (from the
    comparisons its rule made) unless the rule says so itself: never fewer than the ``planned`` judging seeds, which
    the runs (and rules that wait for their plan) need in any case."""
    with recording() as comparisons:
        verdict = claim.judge(ev)
    if verdict.seeds_to_decide is None and verdict.outcome == INCONCLUSIVE:
        n = verdict_seeds(verdict.outcome, comparisons)
        verdict.seeds_to_decide = None if n is None else max(n, planned)
    return verdict


def judge_all(results: Path, setting_key: Callable[[list[str]], str]) -> tuple[list[Judged], list[Path]]:
    """Every claim at every scale that has runs, and at every scale this machine can run (all but paper) even
    without runs, to show what is missing."""
    judged, run_dirs = [], []
    lineage = Lineage(results)
    for name in EXPERIMENTS.names():
        experiment = EXPERIMENTS.get(name)
        for scale in SCALES:
            if scale not in experiment.scales:
                continue
            ev, done = evidence(experiment, scale, results, setting_key)
            if not done and scale == "paper":
                continue
            run_dirs += list(done.values())
            planned = {(setting.label, seed) for setting, seed in experiment.cells(scale, ev=ev)}
            for claim in experiment.claims:
                mine, dropped, note = counted_runs(claim, ev, lineage)
                dropped, outside = in_plan(dropped, ev, planned)
                counted = sum(len(runs) for runs in mine.runs.values())
                if counted:
                    verdict = judge_claim(claim, mine, experiment.scales[scale].seeds)
                elif done:
                    verdict = Verdict(NOT_RUN, "no run made from the rule commit or a descendant",
                                      f"run: repro reproduce {name} --scale {scale}")
                else:
                    verdict = Verdict(NOT_RUN, "no runs yet", f"run: repro reproduce {name} --scale {scale}")
                judged.append(Judged(experiment, scale, claim.id, claim.statement, claim.where, claim.rule, verdict,
                                     counted, claim.rule_commit, note, dropped, outside))
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
    hardware = "; ".join(f"{m} ({n} run{'s' * (n != 1)})" for m, n in machines.most_common()) or "no runs"
    return hardware, ", ".join(f"{c} ({n} run{'s' * (n != 1)})" for c, n in commits.most_common()) or "none"


def write(results: Path, judged: list[Judged], run_dirs: list[Path]) -> list[Path]:
    hardware, commits = _environment(run_dirs)
    counts = Counter(j.verdict.outcome for j in judged)
    lines = ["# Claims report", "",
             f"Written by `repro report` on {time.strftime('%Y-%m-%d %H:%M %Z')} from the runs under `{results}`.",
             f"Hardware of the runs: {hardware}.", f"Code (git commit) of the runs: {commits}.", "",
             "Each claim's rule is fixed in code (`repro/experiments/`, `repro/claims.py`) before its runs; a verdict "
             "holds for the scale it names only. Numbers are mean ± std (n = seeds).", "",
             "Only runs made from a claim's rule commit or a descendant of it count towards its verdict (checked with "
             "git); \"seeds to decide\" is the number of seeds per arm at which the observed effect, with the observed "
             "spread, would decide an inconclusive claim under its rule.", "",
             "Verdicts: " + ", ".join(f"{n} {o}" for o, n in counts.most_common()), "",
             "| claim | scale | verdict | measured | seeds to decide | rule commit |", "|---|---|---|---|---|---|"]
    for j in judged:
        lines.append(f"| {j.claim_id}: {j.statement} | {j.scale} | **{j.verdict.outcome}** | {j.verdict.measured} | "
                     f"{_seeds_text(j)} | {j.rule_commit[:10] or 'not recorded'} |")
    lines.append("")
    for name in dict.fromkeys(j.experiment.name for j in judged):
        mine = [j for j in judged if j.experiment.name == name]
        experiment = mine[0].experiment
        lines += [f"## {name} ({experiment.paper})", "", experiment.summary + ".", ""]
        for scale in dict.fromkeys(j.scale for j in mine):
            spec = experiment.scales[scale]
            lines += [f"**{scale}** ({spec.plan_text()}; "
                      f"{sum(j.runs for j in mine if j.scale == scale) // max(1, sum(1 for j in mine if j.scale == scale))}"
                      f" complete runs): {spec.why}", ""]
            for j in (j for j in mine if j.scale == scale):
                lines += [f"- **{j.claim_id}** — {j.statement} ({j.where}).", f"  Rule: {j.rule}.",
                          f"  Rule commit: {_commit_text(j)}.",
                          f"  Measured: {j.verdict.measured}.", f"  Verdict: **{j.verdict.outcome}**"
                          + (f" — {j.verdict.detail}" if j.verdict.detail else "")]
                if j.verdict.outcome == INCONCLUSIVE:
                    lines.append(f"  Seeds per arm to decide at the observed effect: {_seeds_text(j)}.")
                if j.not_counted:
                    lines.append(f"  Not counted ({len(j.not_counted)} runs of this plan's cells): "
                                 + "; ".join(f"`{_short(path, results)}` ({why})" for path, why in j.not_counted))
                if j.outside_plan:
                    lines.append(f"  Not counted: {j.outside_plan} runs from before the rule commit on seeds this "
                                 f"plan does not run (a pilot's or an earlier plan's; never judged).")
                lines.append("")
            figures = sorted((experiment.folder(results, scale) / "figures").glob("*.png"))
            lines += [f"![{f.stem}]({f.relative_to(results)})" for f in figures] + ([""] if figures else [])
    md = results / "REPORT.md"
    md.write_text("\n".join(lines) + "\n")
    page = results / "REPORT.html"
    page.write_text(_html(lines))
    return [md, page]


def _seeds_text(j: Judged) -> str:
    if j.verdict.outcome == NOT_RUN:  # what running it costs: the plan's seeds per arm
        return f"{j.experiment.scales[j.scale].seeds} planned"
    if j.verdict.outcome != INCONCLUSIVE:
        return "—"
    n = j.verdict.seeds_to_decide
    return str(n) if n is not None else "cannot be estimated"


def _commit_text(j: Judged) -> str:
    if not j.rule_commit:
        return "not recorded (every run counts)"
    return f"`{j.rule_commit[:12]}` ({j.rule_commit_note})" if j.rule_commit_note else f"`{j.rule_commit[:12]}`"


def _short(path: Path, results: Path) -> str:
    try:
        return str(Path(path).relative_to(results))
    except ValueError:
        return str(path)


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
