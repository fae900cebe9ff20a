"""The exception types tf_mp raises: `TfMpError` for anything a user can cause."""

import re
from typing import Optional


class TfMpError(ValueError):
  """A bad input: a shape, a device name, a data file, a flag value, a checkpoint.

  The message names the offending value and what was expected, in one line, so
  that the command-line programs can print it as is and exit non-zero.
  """


class TrainingDivergedError(TfMpError):
  """The loss became NaN or Inf; `step` is the first step where it did."""

  def __init__(self, step: int, loss: float):
    super().__init__(
        f'loss became non-finite ({loss}) at step {step}; training stopped and '
        'nothing was written after that step')
    self.step = step
    self.loss = loss


class WorkerLostError(TfMpError):
  """A collective failed: another worker died or is unreachable. `step` is where."""

  def __init__(self, step: int, timeout: Optional[float], error: Exception):
    text = str(getattr(error, 'message', error))
    match = re.search(r'\b([A-Z_]{6,}):\s*([^\n\[]+)', text)
    detail = f'{match.group(1)}: {match.group(2).strip()}' if match else (
        ' '.join(text.split())[:120])
    limit = f' within the {timeout:g}s collective timeout' if timeout else ''
    super().__init__(
        f'training stopped at or after step {step}: a collective with the other workers '
        f'did not complete{limit}, so a worker is down or unreachable '
        f'({detail}); restart all workers with the '
        'same command to resume from the last checkpoint')
    self.step = step


def error_line(error: Exception) -> str:
  """The line of `error` that says what went wrong, prefixed by its type.

  An error raised while `tf.function` traces user code reads "in user code:",
  a stack, then the original error on its last line: that last line is taken.
  """
  text = str(getattr(error, 'message', None) or error).strip()
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  if lines[0].startswith('in user code') or lines[0].startswith('in converted code'):
    return lines[-1][:300]
  return f'{type(error).__name__}: {lines[0][:300]}'
