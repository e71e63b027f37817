"""Plain SGD: torch's own implementation is exactly the update the papers use."""
import torch

from repro.optim import OPTIMIZERS


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0):
    """x <- x - lr * (g + weight_decay * x), with torch's (dampening-free) heavy-ball momentum."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
