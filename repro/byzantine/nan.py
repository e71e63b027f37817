"""Not-a-number: every faulty worker sends NaN everywhere (the authors' ``nan`` attack): a robust rule must outvote
it and the honest metrics must not see it."""
import torch

from repro.byzantine import register


@register("nan")
def nan():
    return lambda honest, f: torch.full((f, honest.shape[1]), float("nan"), dtype=honest.dtype, device=honest.device)
