"""P3 -- SGDOL: the stepsize learned online by FTRL on surrogate losses, against SGD, Adam and AdaGrad.

Source: the authors' zhenxun-zhuang/SGDOL at 4b2494f (MNIST/main.py, mnistconvnet.py, mnist_data_loader.py, sgdol.py);
"main.py:N" below is a line of MNIST/main.py there. Defaults: 30 epochs, batch 100, seed 0, SGDOL with M = alpha = 10;
the baselines' default lr is 1e-3 (tuned over a grid by repro/experiments/sgdol.py). The CNN and the input
normalization are tasks/mnist.py's (mnistconvnet.py; mnist_data_loader.py:32). docs/sgdol.md has the deviations.

SGDOL's two gradients of a step: main.py computes both on the same minibatch (its inner `for _ in range(num_grads)`
reuses `inputs`; only the dropout masks differ), one step per minibatch: the paper recipe's pairing "same-batch".
The quick recipe keeps the default "fresh-batch" (two minibatches per step, the paper's independent g and g').
"""
from repro.recipes import P3, Recipe, register

TASKS = ("convnet-mnist", "convnet-fashion-mnist")
BASELINE_LR = 1e-3  # main.py:34: --lr default 1e-3 for SGD / Adam / Adagrad (plain torch.optim, main.py:69-78)

for _scale, _task, _train, _summary in (
        ("paper", dict(batch_size=100,  # main.py:23: --train-batchsize 100; all 60,000 images (valid_ratio=0, :47)
                       eval_batch_size=100),  # mnist_data_loader.py:60,67: both scoring loaders use that batch size
         dict(epochs=30, machines=1, seed=0),  # main.py:21: --train-epochs 30; main.py:19: --seed 0
         "the authors' MNIST setting: 30 epochs, batch 100"),
        ("quick", dict(batch_size=100, train_subset=6000, test_subset=2000),
         dict(epochs=5, machines=1, seed=0),  # 300 gradient evaluations: 150 SGDOL steps
         "laptop scale: 6,000 training / 2,000 test images, 5 epochs")):
    register(Recipe(
        name=f"sgdol-mnist-{_scale}", tasks=TASKS, preset=_scale, source=P3 if _scale == "paper" else "laptop scale",
        summary=f"SGDOL, M = alpha = 10; {_summary}", task=_task,
        optimizer=dict(name="sgdol", smoothness=10.0, alpha=10.0),  # main.py:30,32: --smoothness 10 --alpha 10
        # main.py:90-95: both gradients of a step on the same minibatch, one step per batch (docs/sgdol.md, "Pairing")
        train=dict(_train, pairing="same-batch") if _scale == "paper" else _train))
    for _optimizer in ("sgd", "adam", "adagrad"):
        register(Recipe(
            name=f"{_optimizer}-mnist-{_scale}", tasks=TASKS, preset=_scale, for_optimizers=(_optimizer,),
            source=P3 if _scale == "paper" else "laptop scale",
            summary=f"baseline {_optimizer}, lr 1e-3 (main.py's default; sweep --lr to tune); {_summary}",
            task=_task, optimizer=dict(name=_optimizer, lr=BASELINE_LR), train=_train))
