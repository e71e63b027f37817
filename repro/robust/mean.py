"""Plain averaging (D-SGD's mixing with every worker): not robust to a single faulty vector."""
from repro.robust import any_count, register


@register("mean", any_count)
def mean(vectors, f, own_index):
    return vectors.mean(dim=0)
