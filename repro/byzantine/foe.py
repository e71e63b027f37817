"""Fall of empires (FOE, inner-product manipulation, Xie et al. UAI 2019): send mean - factor * mean. The default
factor 1.1 is the paper's epsilon = 0.1 (the faulty vector is -0.1 x the honest mean); with ``search`` = an
aggregator name the factor is the authors' line search (as for ALIE)."""
from repro.byzantine import check_search, register, repeated, searched_factor

EPSILON_FACTOR = 1.1  # Xie et al.'s epsilon = 0.1


@register("foe")
def foe(factor: float | None = None, search: str | None = None, declared_f: int | None = None, evals: int = 16):
    check_search(search, evals)

    def forge(honest, f):
        mean = honest.mean(dim=0)
        if factor is not None:
            c = float(factor)
        elif search is not None:
            c = searched_factor(honest, -mean, f, search, declared_f, evals)
        else:
            c = EPSILON_FACTOR
        return repeated(mean - c * mean, f)
    return forge
