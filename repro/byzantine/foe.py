"""Fall of empires (FOE, inner-product manipulation, Xie et al. UAI 2019): send mean - factor * mean. The default
factor 1.1 is the paper's epsilon = 0.1 (the faulty vector is -0.1 x the honest mean); with ``search`` = an
aggregator name the factor is the authors' line search (as for ALIE)."""
from repro.byzantine import check_evals, register, repeated, searched_factor


@register("foe")
def foe(honest, f, factor: float | None = None, search: str | None = None, declared_f: int | None = None,
        evals: int = 16):
    mean = honest.mean(dim=0)
    if factor is None and search is not None:
        check_evals(evals)
        factor = searched_factor(honest, -mean, f, search, declared_f, evals)
    elif factor is None:
        factor = 1.1
    return repeated(mean - float(factor) * mean, f)
