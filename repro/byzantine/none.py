"""No faulty workers (the default): every rank is honest."""
from repro.byzantine import register


def options():
    pass


register("none", acts_on="nothing", options=options)(None)
