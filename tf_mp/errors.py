"""The one exception type tf_mp raises for mistakes a user can make."""


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
