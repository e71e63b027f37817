"""P2 -- AdamW vs Adam-l2 with and without BatchNorm, over depth, and under a scaled loss (Zhuang, Liu, Cutkosky,
Orabona, TMLR 2022)."""
from __future__ import annotations

from repro import claims
from repro.claims import Claim, Evidence, Verdict
from repro.experiments import Experiment, Scale, Setting, register
from repro.recipes.adamw import ADAMW_BEST

NAMES = {"adamw": "AdamW", "adam-l2": "Adam-l2"}
LAMBDAS = (5e-5, 5e-4, 5e-3)  # one point per decade of the paper's grid around both optimizers' best cells
# quick: a class-balanced 8,000 / 2,000-image subset, batch 32, constant lr, 10 epochs, one worker
QUICK_DATA = ("--set", "data_format=jpeg", "--set", "train_subset=8000", "--set", "test_subset=2000",
              "--batch-size", "32", "--epochs", "10", "--machines", "1")


def _grid(net: str, bn: bool, quick: bool) -> tuple[Setting, ...]:
    base = (f"{net}-cifar10", "--preset", "quick" if quick else ("paper-bn" if bn else "paper"),
            *(QUICK_DATA if quick else ()), "--set", f"bn={'true' if bn else 'false'}")
    return tuple(Setting(f"{NAMES[opt]} lambda={lam:g}", (*base, "--optimizer", opt, "--lr", "0.001",
                                                           "--weight-decay", f"{lam:g}"))
                 for opt in NAMES for lam in LAMBDAS)


def _best(ev: Evidence, optimizer: str, prefix: str = "") -> tuple[str | None, list[float]]:
    labels = [s for s in ev.runs if s.startswith(prefix + NAMES[optimizer] + " ") and ev.final(s, "test_acc")]
    if not labels:
        return None, []
    label = max(labels, key=lambda s: claims.mean_std(ev.final(s, "test_acc"))[0])
    return label, ev.final(label, "test_acc")


def judge_adamw_better(ev: Evidence) -> Verdict:
    (wl, w), (al, a) = _best(ev, "adamw"), _best(ev, "adam-l2")
    outcome, interval = claims.better(w, a, higher_is_better=True, unit=claims.POINTS)
    return Verdict(outcome, f"best cells' test accuracy %: {claims.describe(str(wl), w, 100)} vs "
                            f"{claims.describe(str(al), a, 100)}", interval)


def judge_equal_with_bn(ev: Evidence) -> Verdict:
    (wl, w), (al, a) = _best(ev, "adamw"), _best(ev, "adam-l2")
    outcome, interval = claims.within(w, a, 0.01, unit=claims.POINTS)
    return Verdict(outcome, f"best cells' test accuracy %: {claims.describe(str(wl), w, 100)} vs "
                            f"{claims.describe(str(al), a, 100)}", interval)


def judge_depth(ev: Evidence) -> Verdict:
    """The AdamW - Adam-l2 gap in test accuracy grows from the shallow to the deep network."""
    cells = {(net, opt): ev.final(f"{net} {NAMES[opt]}", "test_acc") for net in ("ResNet-20", "ResNet-56")
             for opt in NAMES}
    if min(len(v) for v in cells.values()) < claims.MIN_SEEDS:
        return Verdict(claims.INCONCLUSIVE, "; ".join(f"{k[0]} {k[1]} n={len(v)}" for k, v in cells.items()),
                       f"fewer than {claims.MIN_SEEDS} seeds")
    gaps = {net: claims.mean_std(cells[(net, "adamw")])[0] - claims.mean_std(cells[(net, "adam-l2")])[0]
            for net in ("ResNet-20", "ResNet-56")}
    # growth of the gap: difference of four independent means; its variance is the sum of the four (s^2 / n)
    variance = sum(claims.mean_std(v)[1] ** 2 / len(v) for v in cells.values())
    df = min(len(v) for v in cells.values()) - 1  # conservative degrees of freedom
    t = claims._T975[df - 1]
    growth = gaps["ResNet-56"] - gaps["ResNet-20"]
    low, high = growth - t * variance ** 0.5, growth + t * variance ** 0.5
    outcome = claims.REPRODUCED if low > 0 else claims.NOT_REPRODUCED if high < 0 else claims.INCONCLUSIVE
    return Verdict(outcome, f"AdamW - Adam-l2 test accuracy gap: ResNet-20 {gaps['ResNet-20'] * 100:+.2f} points, "
                            f"ResNet-56 {gaps['ResNet-56'] * 100:+.2f} points",
                   f"growth 95% CI [{low * 100:.2f}, {high * 100:.2f}] points (df {df}, conservative)")


def judge_scale_free(ev: Evidence) -> Verdict:
    parts, measured, details = [], [], []
    for opt in NAMES:
        base = ev.final(f"{NAMES[opt]} x1", "test_acc")
        for mult in (10, 100):
            scaled = ev.final(f"{NAMES[opt]} x{mult}", "test_acc")
            measured.append(claims.describe(f"{NAMES[opt]} x{mult} - x1 acc %", [], 100) if not scaled else
                            f"{NAMES[opt]} x{mult}: {claims.mean_std(scaled)[0] * 100:.2f} vs x1 "
                            f"{claims.mean_std(base)[0] * 100 if base else float('nan'):.2f}")
            if opt == "adamw":  # unchanged within 1 point
                outcome, interval = claims.within(scaled, base, 0.01, unit=claims.POINTS)
            else:  # changed: the difference's interval excludes 0 (either direction)
                outcome, interval = claims.within(scaled, base, 0.0, unit=claims.POINTS)
                outcome = {claims.NOT_REPRODUCED: claims.REPRODUCED, claims.REPRODUCED: claims.NOT_REPRODUCED}.get(
                    outcome, claims.INCONCLUSIVE)
            parts.append(outcome)
            details.append(f"{NAMES[opt]} x{mult}: {outcome} ({interval})")
    return Verdict(claims.combine(parts), "; ".join(measured), " | ".join(details))


ADAMW_WHY = ("ResNet-20 without BN (the paper's setting where AdamW wins), a class-balanced 8,000 / 2,000-image "
             "subset of CIFAR-10 (JPEG copy), batch 32, constant lr 1e-3 (both optimizers' best lr for ResNet-20 "
             "in the authors' table), 10 epochs, lambda in {5e-5, 5e-4, 5e-3}: a coarse version of the paper's "
             "grid that contains both optimizers' best cells; 18 runs at 3 seeds take a little over an hour on 2 "
             "cores. Chosen before any run of this experiment.")

register(Experiment(
    name="adamw-nobn",
    paper="P2",
    summary="AdamW vs Adam-l2 without BatchNorm: best test accuracy over lambda (the paper's heat maps, no BN)",
    scales={"quick": Scale(_grid("resnet20", False, True), seeds=3, minutes_per_run=4.0, why=ADAMW_WHY),
            "paper": Scale(_grid("resnet110", False, False), seeds=1, minutes_per_run=600.0,
                           why="The paper's ResNet-110 without BN, 300 epochs, batch 128.")},
    claims=(Claim("P2-nobn", "P2", "Without BN, AdamW's best test error is below Adam-l2's",
                  "Zhuang et al. 2022, Sec. 6 (experiments), the heat maps and best-error table without BN",
                  "Welch 95% CI of the best cells' mean test accuracy (AdamW - Adam-l2) above 0 -> reproduced; below "
                  "0 -> not reproduced; best cell per optimizer by mean test accuracy; >= 3 seeds each",
                  judge_adamw_better),),
    figures=("adamw-heatmap",),
))

register(Experiment(
    name="adamw-bn",
    paper="P2",
    summary="AdamW vs Adam-l2 with BatchNorm: best test accuracy over lambda",
    scales={"quick": Scale(_grid("resnet20", True, True), seeds=3, minutes_per_run=4.0,
                           why=ADAMW_WHY.replace("without BN (the paper's setting where AdamW wins)",
                                                 "with BN (where the paper finds both equal)")),
            "paper": Scale(_grid("resnet110", True, False), seeds=1, minutes_per_run=600.0,
                           why="The paper's ResNet-110 with BN.")},
    claims=(Claim("P2-bn", "P2", "With BN, AdamW and Adam-l2 reach the same best test error",
                  "Zhuang et al. 2022, Sec. 6, the heat maps with BN",
                  "equivalence: Welch 95% CI of the best cells' mean test accuracy (AdamW - Adam-l2) inside ±1 point "
                  "-> reproduced; entirely outside -> not reproduced; >= 3 seeds each",
                  judge_equal_with_bn),),
    figures=("adamw-heatmap",),
))


def _depth_settings(quick: bool) -> tuple[Setting, ...]:
    settings = []
    for net, depth in (("ResNet-20", "resnet20"), ("ResNet-56", "resnet56")):
        for opt in NAMES:
            lr, lam = ADAMW_BEST[(depth, False, 1)][opt]  # the authors' best cell for that network
            base = (f"{depth}-cifar10", "--preset", "quick" if quick else "paper", *(QUICK_DATA if quick else ()),
                    "--set", "bn=false")
            settings.append(Setting(f"{net} {NAMES[opt]}", (*base, "--optimizer", opt, "--lr", f"{lr:g}",
                                                           "--weight-decay", f"{lam:g}")))
    return tuple(settings)


register(Experiment(
    name="adamw-depth",
    paper="P2",
    summary="AdamW vs Adam-l2 without BN on a shallow and a deep ResNet (the paper's best error vs depth)",
    scales={"quick": Scale(_depth_settings(True), seeds=3, minutes_per_run=7.0, why=(
        "ResNet-20 and ResNet-56 without BN, each optimizer at the authors' best (lr, lambda) for that network, on "
        "the quick subset (8,000 / 2,000 images, batch 32, 10 epochs): 12 runs. Chosen before any run.")),
            "paper": Scale(_depth_settings(False), seeds=1, minutes_per_run=600.0,
                           why="The paper's networks at 300 epochs; add ResNet-44/110/218 for the full figure.")},
    claims=(Claim("P2-depth", "P2", "Without BN, AdamW's advantage over Adam-l2 grows with depth",
                  "Zhuang et al. 2022, Sec. 6, best test error vs depth without BN",
                  "95% CI of the growth of the gap (AdamW - Adam-l2 test accuracy, ResNet-56 minus ResNet-20; four "
                  "independent means, df = n - 1) above 0 -> reproduced; below 0 -> not reproduced; >= 3 seeds",
                  judge_depth),),
    figures=("adamw-depth",),
))


def _scale_settings(quick: bool) -> tuple[Setting, ...]:
    settings = []
    for opt in NAMES:
        lr, lam = ADAMW_BEST[("resnet20" if quick else "resnet110", False, 1)][opt]
        for mult in (1, 10, 100):
            base = ("resnet20-cifar10" if quick else "resnet110-cifar10", "--preset", "quick" if quick else "paper",
                    *(QUICK_DATA if quick else ()), "--set", "bn=false")
            settings.append(Setting(f"{NAMES[opt]} x{mult}", (*base, "--optimizer", opt, "--lr", f"{lr:g}",
                                                             "--weight-decay", f"{lam:g}",
                                                             "--loss-multiplier", str(mult))))
    return tuple(settings)


register(Experiment(
    name="adamw-scale-free",
    paper="P2",
    summary="Loss multiplied by 10 and 100: AdamW unchanged, Adam-l2 changed (the paper's scale-freeness figure)",
    scales={"quick": Scale(_scale_settings(True), seeds=3, minutes_per_run=4.0, why=(
        "ResNet-20 without BN at each optimizer's best ResNet-20 cell, loss x1, x10, x100, on the quick subset: 18 "
        "runs. Chosen before any run.")),
            "paper": Scale(_scale_settings(False), seeds=1, minutes_per_run=600.0,
                           why="The paper's ResNet-110 without BN at x1, x10, x100.")},
    claims=(Claim("P2-scale-free", "P2",
                  "AdamW is scale-free (loss x10 / x100 leaves its result unchanged); Adam-l2 is not",
                  "Zhuang et al. 2022, Sec. 5 (scale-freeness) and Sec. 6 (loss x10 / x100 experiments)",
                  "AdamW: Welch 95% CI of (x c - x1) test accuracy inside ±1 point for c = 10 and 100; Adam-l2: the "
                  "CI excludes 0 for c = 10 and 100; all four -> reproduced; any contrary -> not reproduced",
                  judge_scale_free),),
    figures=("adamw-loss-scale",),
))
