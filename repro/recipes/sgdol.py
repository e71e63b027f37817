"""P3 -- SGDOL: the stepsize learned online by FTRL on surrogate losses, against SGD, Adam and AdaGrad.

Source: the authors' zhenxun-zhuang/SGDOL, MNIST/main.py defaults (30 epochs, batch 100, seed 0, SGDOL with
M = alpha = 10; the baselines' default lr there is 1e-3). docs/sgdol.md has the details.

SGDOL's two gradients of a step: main.py computes both on the same minibatch (its inner `for _ in range(num_grads)`
reuses `inputs`; only the dropout masks differ), one step per minibatch: the paper recipe's pairing "same-batch".
The quick recipe keeps the default "fresh-batch" (two minibatches per step, the paper's independent g and g').
"""
from repro.recipes import P3, Recipe, register

TASKS = ("convnet-mnist", "convnet-fashion-mnist")
BASELINE_LR = 1e-3  # main.py: --lr default 1e-3 for sgd / adam / adagrad (tuned per task in the paper)

for _scale, _task, _train, _summary in (
        ("paper", dict(batch_size=100),  # main.py: --batch-size 100
         dict(epochs=30, machines=1, seed=0),  # main.py: --epochs 30, --seed 0
         "the authors' MNIST setting: 30 epochs, batch 100"),
        ("quick", dict(batch_size=100, train_subset=6000, test_subset=2000),
         dict(epochs=5, machines=1, seed=0),  # 300 gradient evaluations: 150 SGDOL steps
         "laptop scale: 6,000 training / 2,000 test images, 5 epochs")):
    register(Recipe(
        name=f"sgdol-mnist-{_scale}", tasks=TASKS, preset=_scale, source=P3 if _scale == "paper" else "laptop scale",
        summary=f"SGDOL, M = alpha = 10; {_summary}", task=_task,
        optimizer=dict(name="sgdol", smoothness=10.0, alpha=10.0),  # main.py: --smoothness 10 --alpha 10
        # main.py: both gradients of a step on the same minibatch (docs/sgdol.md, "Pairing")
        train=dict(_train, pairing="same-batch") if _scale == "paper" else _train))
    for _optimizer in ("sgd", "adam", "adagrad"):
        register(Recipe(
            name=f"{_optimizer}-mnist-{_scale}", tasks=TASKS, preset=_scale, for_optimizers=(_optimizer,),
            source=P3 if _scale == "paper" else "laptop scale",
            summary=f"baseline {_optimizer}, lr 1e-3 (main.py's default; sweep --lr to tune); {_summary}",
            task=_task, optimizer=dict(name=_optimizer, lr=BASELINE_LR), train=_train))
