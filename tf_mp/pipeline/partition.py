"""Splitting a sequence of layers into pipeline stages of even cost."""

from typing import List, Sequence

import numpy as np

from tf_mp.checks import finite_number, positive_int, short_repr
from tf_mp.errors import TfMpError


def best_split(times: Sequence[float], parts: int) -> List[int]:
  """Cut points splitting `times` into `parts` contiguous runs minimising the max sum.

  Args:
    times: the cost of each layer, finite numbers >= 0.
    parts: the number of runs (stages), from 1 to `len(times)`.

  Returns:
    The `parts` end indices (exclusive) of the runs, increasing; the last is
    `len(times)`.

  Raises:
    TfMpError: `times` is not a non-empty list of finite numbers >= 0, or
      `parts` is not an integer from 1 to `len(times)`.
  """
  if not isinstance(times, (list, tuple, np.ndarray)) or len(times) == 0:
    raise TfMpError(f'times must be a non-empty list of layer costs, got '
                    f'{short_repr(times)}')
  times = [finite_number(f'times[{i}]', t, minimum=0) for i, t in enumerate(times)]
  parts = positive_int('parts', parts)
  if parts > len(times):
    raise TfMpError(f'parts {parts} is more than the {len(times)} layers; expected '
                    f'at most {len(times)} (a run holds at least one layer)')
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
