"""No faulty workers (the default): every rank is honest."""
from repro.byzantine import register


@register("none", acts_on="nothing")
def none():
    return None
