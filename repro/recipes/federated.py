"""FED -- asynchronous federated averaging with heterogeneous clients (Fraboni, Vidal, Kameni, Lorenzi, JMLR 2023).

Source: the authors' `asynchronous_FL` branch of Accenture/Labs-Federated-Learning ("lets.py:N" below is a line of
list_exp_to_run.py there; FL.py's argument defaults). Their MNIST runs: M = 10 clients, F-80 speeds, batch 64, SGD
momentum 0.9 (FL/client.py), K local steps, lr_l 1e-3 for the K sweeps, η_g = 1, uniform p_i. Horizons T of 10^4 -
2·10^5 emulated time units are beyond a laptop: the quick recipe runs 40. docs/federated.md has the deviations.
"""
from repro.recipes import Recipe, paper, register

FED = paper("FED", "Fraboni, Vidal, Kameni, Lorenzi: asynchronous and heterogeneous federated optimization, JMLR 2023")
QADAM = paper("QADAM", "Chen, Shen, Huang, Liu: Quantized Adam with error feedback, ACM TIST 2021")

TASKS = ("logreg-mnist", "logreg-fashion-mnist")

register(Recipe(
    name="fed-logreg-quick", tasks=TASKS, preset="quick", source="laptop scale",
    summary="10 clients, F-80 speeds, K = 10 local SGD steps (momentum 0.9, lr 1e-3, batch 64), FedAvg, "
            "emulated horizon 40 (a row every 2)",
    task=dict(batch_size=64),  # lets.py: l_B = [64]
    optimizer=dict(name="sgd", lr=1e-3, momentum=0.9),  # lets.py: lr_l 0.001 (K sweeps); FL/client.py: momentum=0.9
    components={"strategy": dict(name="fedavg", clients=10,  # lets.py: l_M = [10] (MNIST)
                                 spread=0.8,  # lets.py: time_scenario "F-80"
                                 local_steps=10,  # lets.py: n_SGD 10 (CIFAR/Shakespeare; MNIST sweeps 1-20)
                                 horizon=40.0, eval_every=2.0)},
    train=dict(epochs=1, machines=1, seed=0)))
