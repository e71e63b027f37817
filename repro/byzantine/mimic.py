"""Mimic (Karimireddy et al. 2022, the authors' naive version): every faulty worker sends a copy of one honest
worker's vector (``target``, default the first), over-weighting that worker's data in every aggregate."""
from repro.errors import UsageError
from repro.byzantine import register, repeated


@register("mimic")
def mimic(target: int = 0):
    if not isinstance(target, int) or target < 0:
        raise UsageError(f"mimic target must be an honest worker's index >= 0, got {target!r}")

    def forge(honest, f):
        if target >= honest.shape[0]:
            raise UsageError(f"mimic target must be an honest worker in [0, {honest.shape[0]}), got {target}")
        return repeated(honest[target], f)
    return forge
