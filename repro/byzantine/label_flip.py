"""Label flip: a faulty worker follows the protocol but trains on flipped labels (label -> classes - 1 - label, as
the authors' ``labelflipping``). Needs a task that has labels to flip (``flip_labels``); refused otherwise."""
from repro.byzantine import register


def options():
    pass


register("label-flip", acts_on="labels", options=options)(None)
