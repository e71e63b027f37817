"""No federated clients (the default): the worker processes train with the trainer's loop as the sync policy says."""
from repro.federated.strategies import STRATEGIES


@STRATEGIES.register("none")
def none():
    return None
