"""The one table printer the reports share."""

from typing import Sequence


def format_table(rows: Sequence[Sequence[str]]) -> str:
  """Left-aligned columns two spaces apart; the first row is the header."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                   for r in rows)
