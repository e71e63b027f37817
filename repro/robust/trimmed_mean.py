"""Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate drop the f smallest and f largest values and
average the n - 2f left."""
from repro.robust import below_half, register


@register("trimmed-mean", below_half)
def trimmed_mean(vectors, f, own_index):
    n = vectors.shape[0]
    return vectors.sort(dim=0).values[f:n - f].mean(dim=0)
