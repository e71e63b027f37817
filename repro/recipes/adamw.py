"""P2 -- AdamW vs Adam-l2 (and AdamProx) on CIFAR ResNets / DenseNet, with and without BatchNorm.

Sources: the authors' repository zhenxun-zhuang/AdamW-Scale-free (README commands: batch 128, 300 epochs, constant
step size, beta = (0.9, 0.999), eps = 1e-8) and its table of the best (lr, lambda) per network, which ADAMW_BEST
copies. docs/adamw.md has the details and the grid.
"""
from repro.recipes import P2, Recipe, register

# The (lr, lambda) grid of the paper's heat maps.
ADAMW_GRID = {"lr": (5e-5, 1e-4, 5e-4, 1e-3, 5e-3), "weight_decay": (0, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)}

# Best (lr, lambda) per (network, BN or not, loss multiplier), from the authors' README.
ADAMW_BEST = {
    ("resnet20", False, 1): {"adam-l2": (1e-3, 5e-4), "adamw": (1e-3, 5e-5)},
    ("resnet44", False, 1): {"adam-l2": (5e-4, 5e-4), "adamw": (5e-4, 5e-5)},
    ("resnet56", False, 1): {"adam-l2": (5e-4, 5e-4), "adamw": (5e-4, 5e-5)},
    ("resnet110", False, 1): {"adam-l2": (1e-3, 5e-4), "adamw": (5e-4, 1e-4)},
    ("resnet218", False, 1): {"adam-l2": (5e-4, 5e-3), "adamw": (5e-4, 5e-5)},
    ("resnet110", True, 1): {"adam-l2": (5e-3, 0.0), "adamw": (5e-3, 0.0)},
    ("resnet110", False, 10): {"adam-l2": (1e-3, 5e-3), "adamw": (5e-4, 1e-4)},
    ("resnet110", False, 100): {"adam-l2": (1e-4, 1e-1), "adamw": (5e-4, 1e-4)},
    ("densenet100", False, 1): {"adam-l2": (5e-4, 1e-3), "adamw": (1e-3, 5e-5)},
    ("densenet100", True, 1): {"adam-l2": (5e-3, 0.0)},
}
ADAM_BETAS = dict(beta1=0.9, beta2=0.999, eps=1e-8)  # authors' code: torch defaults
TASK_OF = {"densenet100": "densenet100-cifar100"}


def _preset(bn: bool, multiplier: int) -> str:
    return "paper" + ("-bn" if bn else "") + (f"-x{multiplier}" if multiplier > 1 else "")


def _register_paper(net: str, bn: bool, multiplier: int) -> None:
    best = ADAMW_BEST[(net, bn, multiplier)]
    # AdamProx was not tuned by the authors: it gets AdamW's cell (Adam-l2's where AdamW has none).
    cells = {**best, "adamprox": best.get("adamw", best["adam-l2"])}
    default = "adamw" if "adamw" in best else "adam-l2"
    suffix = f"{net}-{'bn' if bn else 'nobn'}" + (f"-loss{multiplier}x" if multiplier > 1 else "") + "-paper"
    for optimizer, (lr, lam) in cells.items():
        register(Recipe(
            name=f"{optimizer}-{suffix}", tasks=(TASK_OF.get(net, f"{net}-cifar10"),), preset=_preset(bn, multiplier),
            for_optimizers=() if optimizer == default else (optimizer,), source=P2,
            summary=f"{net} {'with' if bn else 'without'} BN, loss x{multiplier}: the authors' best cell for "
                    f"{'AdamW' if optimizer == 'adamprox' else optimizer}",
            task=dict(bn=bn, batch_size=128),  # README: --batch-size 128
            optimizer=dict(name=optimizer, lr=lr, weight_decay=lam, **ADAM_BETAS),  # README's best-cell table
            train=dict(epochs=300,  # README: --epochs 300, constant step size
                       machines=1, seed=0, loss_multiplier=float(multiplier)),
        ))


for _net, _bn, _mult in ADAMW_BEST:
    _register_paper(_net, _bn, _mult)

# quick: work a 2-core CPU finishes in minutes per cell: a fixed class-balanced subset of 2,000 training and
# 1,000 test images, no BN, constant step size, 6 epochs; batch 32 rather than 128, because a BN-free ResNet needs
# about a hundred steps to leave chance level and small batches buy more steps per image; (lr, lambda) as the
# paper's best ResNet-20 cell per optimizer.
QUICK_CELLS = {**ADAMW_BEST[("resnet20", False, 1)], "adamprox": ADAMW_BEST[("resnet20", False, 1)]["adamw"]}
RESNETS = tuple(f"resnet{d}-cifar10" for d in (20, 32, 44, 56, 110, 218))
for _optimizer, (_lr, _lam) in QUICK_CELLS.items():
    for _tasks, _name, _batch in ((RESNETS, "cifar", 32), (("densenet100-cifar100",), "densenet", 64)):
        register(Recipe(
            name=f"{_optimizer}-{_name}-quick", tasks=_tasks, preset="quick",
            for_optimizers=() if _optimizer == "adamw" else (_optimizer,), source="laptop scale (not from the paper)",
            summary=f"{_name} without BN on 2,000/1,000 images, batch {_batch}, 6 epochs, ResNet-20's best cell",
            task=dict(bn=False, batch_size=_batch, train_subset=2000, test_subset=1000),
            optimizer=dict(name=_optimizer, lr=_lr, weight_decay=_lam, **ADAM_BETAS),
            train=dict(epochs=6, machines=1, seed=0),
        ))
