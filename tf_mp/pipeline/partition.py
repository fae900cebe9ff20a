"""Splitting a sequence of layers into pipeline stages of even cost."""

from typing import List, Sequence

import numpy as np


def best_split(times: Sequence[float], parts: int) -> List[int]:
  """Cut points splitting `times` into `parts` contiguous runs minimising the max sum."""
  n = len(times)
  prefix = np.concatenate([[0.0], np.cumsum(times)])
  inf = float('inf')
  # best[k][i]: the smallest max-sum splitting the first i items into k runs.
  best = [[inf] * (n + 1) for _ in range(parts + 1)]
  cut = [[0] * (n + 1) for _ in range(parts + 1)]
  best[0][0] = 0.0
  for k in range(1, parts + 1):
    for i in range(k, n + 1):
      for j in range(k - 1, i):
        cost = max(best[k - 1][j], prefix[i] - prefix[j])
        if cost < best[k][i]:
          best[k][i], cut[k][i] = cost, j
  bounds, i = [], n
  for k in range(parts, 0, -1):
    bounds.append(i)
    i = cut[k][i]
  return sorted(bounds)
