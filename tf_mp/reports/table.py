"""The one table printer the reports share."""

from typing import Sequence

from tf_mp.checks import short_repr
from tf_mp.errors import TfMpError


def format_table(rows: Sequence[Sequence[str]]) -> str:
  """Left-aligned columns two spaces apart; the first row is the header.

  Raises:
    TfMpError: `rows` is not a non-empty list of rows of strings, all as long
      as the header.
  """
  if (not isinstance(rows, (list, tuple)) or not rows or not all(
      isinstance(r, (list, tuple)) and all(isinstance(c, str) for c in r)
      for r in rows)):
    raise TfMpError(f'rows must be a non-empty list of rows of strings, got '
                    f'{short_repr(rows)}')
  for i, row in enumerate(rows):
    if len(row) != len(rows[0]):
      raise TfMpError(f'row {i} has {len(row)} cells; expected {len(rows[0])} '
                      'like the header')
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                   for r in rows)
