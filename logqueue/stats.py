"""The one percentile definition every figure of the project uses."""
from __future__ import annotations

import math
from typing import Sequence


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The ``ceil(q * n)``-th smallest of ``sorted_values`` (nearest-rank percentile).

    ``sorted_values`` must be sorted ascending and non-empty; ``q`` is in (0, 1]. The
    result is always one of the observed values (never interpolated), so p100 is the max.
    """
    if not sorted_values:
        raise ValueError("nearest_rank of no values")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]
