"""Nearest-neighbour averaging (NNA, Farhadkhani et al. ICML 2023; the authors' ``cva`` rule in the peer-to-peer
setting): the mean of the n - f vectors nearest the aggregating worker's own (its own included, at distance 0)."""
from repro.robust import below_half, nearest, register


@register("nna", below_half, needs_own=True)
def nna(vectors, f, own_index):
    n = vectors.shape[0]
    return vectors[nearest(vectors, vectors[own_index], n - f)].mean(dim=0)
