"""Sign flip (Allen-Zhu et al. 2021; the authors' ``signflipping``): every faulty worker sends minus the honest mean."""
from repro.byzantine import register, repeated


@register("sign-flip")
def sign_flip():
    return lambda honest, f: repeated(-honest.mean(dim=0), f)
