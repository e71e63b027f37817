"""MONNA -- robust collaborative learning with faulty workers (Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan,
ICML 2023).

Source of the MoNNA values: the authors' LPD-EPFL/robust-collaborative-learning at 3425aa1; "reproduce.py" below is
its MNIST block (``params_mnist`` and the loops under it), "peerToPeer.py" its training script. docs/decentralized.md
has the deviations (the partition over all ranks, NNA's neighbourhood, the attacks on models).
"""
from repro.recipes import Recipe, paper, register

MONNA = paper("MONNA", "Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan: Robust Collaborative Learning with "
                       "Linear Gradient Overhead (MoNNA), ICML 2023")

TASKS = ("simple-conv-mnist",)  # reproduce.py: "model": "simples-conv" (tasks/mnist.py's SimpleConvNet)
STEPS_PER_EPOCH = 50  # reproduce.py: "learning-rate-decay": 50, "learning-rate-decay-delta": 50 -> one lr per 50 steps
BATCH = 25  # reproduce.py: "batch-size": 25 (per worker)
EPOCHS = 12  # reproduce.py: "nb-steps": 600 = 12 x 50

# MoNNA: EMA momentum beta = dampening = 0.99 (reproduce.py: params["momentum"] = params["dampening"] = 0.99), lr 0.75
# (reproduce.py: "learning-rate": 0.75) divided by (1 + steps / 50) every 50 steps (peerToPeer.py's
# compute_new_learning_rate): with 50-step epochs that is the hyperbolic schedule with a half-life of one epoch;
# the l2 term 1e-4 (reproduce.py: "l2-regularize": 1e-4) is weight decay (the same gradient).
OPTIMIZER = dict(name="monna", lr=0.75, beta=0.99, weight_decay=1e-4)
SCHEDULE = dict(name="hyperbolic", half_life=1.0)
PARTITION = dict(name="dirichlet", alpha=1.0)  # reproduce.py: alphas = [1, 5]; 1 here (--partition-opt alpha=5)


def _recipe(scale: str, workers: int, faults: int, images: int, test_images: int, epochs: int,
            summary: str) -> Recipe:
    # ``images`` = workers x 50 x 25: an epoch is exactly the 50 steps between two of the authors' lr updates
    return register(Recipe(
        name=f"monna-mnist-{scale}", tasks=TASKS, preset=scale, source=MONNA if scale == "paper" else "laptop scale",
        summary=summary,
        task=dict(batch_size=BATCH, train_subset=images, test_subset=test_images),
        optimizer=OPTIMIZER, schedule=SCHEDULE,
        sync=dict(name="robust", aggregator="nna", f=faults),  # reproduce.py: gars "cva" (NNA), "nb-decl-byz": 5
        components={"partition": PARTITION},
        train=dict(epochs=epochs, machines=workers, seed=0)))


# reproduce.py: "nb-workers": 26, byzcounts = [5]; all 10,000 test images (evaluation-delta 5: every 5 steps there,
# every 50 here). 26 x 50 x 25 = 32,500 training images per 50-step epoch (the authors draw from all 60,000).
_recipe("paper", 26, 5, 26 * STEPS_PER_EPOCH * BATCH, 0, EPOCHS,
        "MoNNA on MNIST as the authors' reproduce.py: 26 workers (f = 5 declared), simples-conv, batch 25, lr 0.75 "
        "halved-hyperbolically every 50 steps, 600 steps, beta 0.99, l2 1e-4, Dirichlet alpha 1")
# The 2-core scale: 5 workers, f = 1 (the authors' f / n = 5/26 = 0.19, here 0.2), the same batch, lr, momentum
# and schedule for 200 of their 600 steps (a 50-step probe of one faulty arm took 31 s of training on the shared
# machine); 5 x 50 x 25 = 6,250 training images, 2,000 test images.
_recipe("quick", 5, 1, 5 * STEPS_PER_EPOCH * BATCH, 2000, 4,
        "laptop scale: 5 workers (f = 1 declared), 6,250 training / 2,000 test MNIST images, 200 of the authors' "
        "600 steps of batch 25, lr 0.75 / (1 + steps/50), beta 0.99, l2 1e-4, Dirichlet alpha 1")
