"""Which LSH band shapes reach a recall: plain arithmetic, so the config can check its settings without
importing numpy or datasketch (whose LSH module takes 0.6 s to import)."""

from __future__ import annotations

import math


def band_options(threshold: float, num_perm: int, min_recall: float = 0.99) -> list[tuple[int, int]]:
    """(bands, rows) for each band size r: the fewest bands whose recall at `threshold` is >= `min_recall`,
    with bands*rows <= num_perm (more bands only add false positives). Empty when none fits."""
    out = []
    for r in range(1, num_perm + 1):
        p = threshold**r
        if r * 2 > num_perm:
            break
        if p >= 1.0:  # threshold 1: any band catches an identical set
            b = 2
        elif math.log1p(-p) == 0.0:
            break
        else:
            b = max(2, math.ceil(math.log1p(-min_recall) / math.log1p(-p)))
            if b * r > num_perm:  # the bands needed only grow with r
                break
            while 1.0 - (1.0 - p) ** b < min_recall:  # guard against rounding in the logarithms
                b += 1
        if b * r > num_perm:
            break
        out.append((b, r))
    return out
