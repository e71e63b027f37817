"""Label flip: a faulty worker follows the protocol but trains on flipped labels (label -> classes - 1 - label, as
the authors' ``labelflipping``). Needs a task that has labels to flip; refused otherwise."""
from repro.byzantine import register


@register("label-flip", acts_on="labels")
def label_flip():
    return None
