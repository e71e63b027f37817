"""A little is enough (ALIE, Baruch et al. NeurIPS 2019): send mean + z * std, the honest vectors' coordinate-wise
mean and standard deviation. ``factor`` fixes z; else with ``search`` = an aggregator name z is the authors'
line search (``evals`` evaluations, maximising the aggregate's distance to the honest mean, ``declared_f`` its f,
default the number of faulty vectors); else the closed form of the paper, z = Phi^-1((n - s) / n) with
s = floor(n/2 + 1) - f and n = h + f workers. ``search="auto"``: the sync policy's own aggregator and f."""
import math

from repro.byzantine import check_search, normal_quantile, register, repeated, searched_factor


def closed_form_z(n: int, f: int) -> float:
    supporters = math.floor(n / 2 + 1) - f  # honest workers the faulty ones need on their side
    return normal_quantile((n - supporters) / n)


@register("alie")
def alie(factor: float | None = None, search: str | None = None, declared_f: int | None = None, evals: int = 16):
    check_search(search, evals)

    def forge(honest, f):
        mean = honest.mean(dim=0)
        std = honest.std(dim=0, correction=1 if honest.shape[0] > 1 else 0)
        if factor is not None:
            z = float(factor)
        elif search is not None:
            z = searched_factor(honest, std, f, search, declared_f, evals)
        else:
            z = closed_form_z(honest.shape[0] + f, f)
        return repeated(mean + z * std, f)
    return forge
