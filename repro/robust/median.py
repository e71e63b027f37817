"""Coordinate-wise median (Yin et al. 2018). With an even count, the mean of the two middle values (the textbook
median; torch.median would take the lower one). Sorting puts NaN last, so a NaN sender is outvoted like any outlier."""
from repro.robust import below_half, register


@register("median", below_half)
def median(vectors, f, own_index):
    n = vectors.shape[0]
    ordered = vectors.sort(dim=0).values
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
