"""Splitting a sequence of layers into pipeline stages of even cost."""

from typing import List, Sequence

import numpy as np

from tf_mp.checks import finite_number, positive_int, short_repr
from tf_mp.errors import TfMpError

# The search keeps (parts + 1) x (layers + 1) entries: bounded, so that a
# request cannot take the machine's memory and hours.
_MAX_TABLE = 10**7


def best_split(times: Sequence[float], parts: int) -> List[int]:
  """Cut points splitting `times` into `parts` contiguous runs minimising the max sum.

  Args:
    times: the cost of each layer, finite numbers >= 0.
    parts: the number of runs (stages), from 1 to `len(times)`.

  Returns:
    The `parts` end indices (exclusive) of the runs, increasing; the last is
    `len(times)`.

  Raises:
    TfMpError: `times` is not a non-empty list of finite numbers >= 0,
      `parts` is not an integer from 1 to `len(times)`, or `parts *
      len(times)` is more than 10^7.
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
  if parts * n > _MAX_TABLE:
    raise TfMpError(f'{parts} parts of {n:,} layers make a table of {parts * n:,} '
                    f'entries to search; expected parts x layers at most {_MAX_TABLE:,}')
  prefix = np.concatenate([[0.0], np.cumsum(times)])
  inf = float('inf')
  # best[k][i]: the smallest max-sum splitting the first i items into k runs;
  # cut[k][i]: the smallest j reaching it (the last run is items j..i-1).
  # Over j, best[k-1][j] does not decrease and prefix[i] - prefix[j] does not
  # increase, so the minimum of their max is found by bisection: O(parts * n
  # log n), not O(parts * n^2) (which took minutes for 10^5 layers).
  best = [[inf] * (n + 1) for _ in range(parts + 1)]
  cut = [[0] * (n + 1) for _ in range(parts + 1)]
  best[0][0] = 0.0
  for k in range(1, parts + 1):
    previous = best[k - 1]
    for i in range(k, n + 1):
      last = lambda j, i=i: prefix[i] - prefix[j]  # pylint: disable=unnecessary-lambda-assignment
      # The first j in [k-1, i) where previous[j] >= last(j) (i if none).
      lo, hi = k - 1, i
      while lo < hi:
        mid = (lo + hi) // 2
        if previous[mid] >= last(mid):
          hi = mid
        else:
          lo = mid + 1
      cost, j = (max(previous[lo], last(lo)), lo) if lo < i else (inf, i)
      if lo > k - 1 and last(lo - 1) <= cost:
        cost = last(lo - 1)
        # The smallest j with last(j) == cost (last does not increase in j).
        first, top = k - 1, lo - 1
        while first < top:
          mid = (first + top) // 2
          if last(mid) <= cost:
            top = mid
          else:
            first = mid + 1
        j = first
      best[k][i], cut[k][i] = cost, j
  bounds, i = [], n
  for k in range(parts, 0, -1):
    bounds.append(i)
    i = cut[k][i]
  return sorted(bounds)
