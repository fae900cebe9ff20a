"""What the tf_mp programs share: flags, start-up, the one-line error guard, data, the Step logger.

A program is its flags and a call (examples/pipeline.py, examples/tiny_lm.py,
`tf_mp.tutorial`):

  from tf_mp import cli
  cli.define_training_flags(steps=1000, batch_size=64, log_every=100)
  cli.define_devices('One device per stage, e.g. "cpu:0,cpu:1,cpu:2".')

  def main(argv):
    ...

  if __name__ == '__main__':
    cli.run(main, __doc__)

`run` keeps the order that start-up needs: the flags are parsed and `-h` /
`--help` answered before TensorFlow loads; TF_CPP_MIN_LOG_LEVEL is set and
TensorFlow imported with its C++ start-up lines kept off stderr (unless
`--verbose`); only then does `main` run, and it creates its devices
(`tf_mp.distribute.create_strategy`, `tf_mp.resolve_devices`) before any tensor. A
`tf_mp.TfMpError` or a bad flag value ends the program with one line,
`<program>: error: <message>`, and exit status 1; SIGINT and SIGTERM during
training stop it at the next step boundary (`stop_on_signals`), with exit
status 130 or 143.

This module imports neither TensorFlow nor tf_mp's TensorFlow modules at import
time; `import tf_mp` is cheap (see tf_mp/__init__.py). A program imports it
first: from then on a Ctrl-C, even during the imports, ends the program with
one line and status 130 (`_stopped_while_starting`); only one in the
interpreter's own start-up (some tens of milliseconds) still shows Python's
traceback.
"""

# Only what the hook below needs comes before it; every other import after.
import os
import signal
import sys


def _stopped_while_starting(kind, value, traceback, default=sys.excepthook):
  """A Ctrl-C before `run` handles signals (the imports): one line, status 130.

  Nothing has run yet, so there is nothing to save; an uncaught
  KeyboardInterrupt is all this changes (an in-process user, e.g. a test run,
  catches its own).
  """
  if not issubclass(kind, KeyboardInterrupt):
    default(kind, value, traceback)
    return
  sys.stdout.flush()
  sys.stderr.write(f'{os.path.basename(sys.argv[0])}: stopped by SIGINT while '
                   'starting; nothing was run\n')
  sys.stderr.flush()
  os._exit(128 + signal.SIGINT)  # pylint: disable=protected-access


sys.excepthook = _stopped_while_starting

# pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order
import contextlib
import gc
import math
import re
import tempfile
import textwrap
import time
from typing import Callable, Optional

from absl import flags
from absl import logging

from tf_mp.errors import TfMpError, WorkerLostError
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS

# The flags the helpers below define belong to the program that calls them:
# its --help lists them under its own name.
flags.disclaim_key_flags()

STEP_LINE_FORMAT = 'Step: {step} Loss: {loss}'  # The document's line.
# The largest integer a flag may hold: TensorFlow's counters (the step) and
# seeds are int64, and no size or count of the programs gets near it.
INT64_MAX = 2**63 - 1


# Flags, each defined in one place. Every helper takes the program's default
# (and where the meaning differs, its help text); values are checked when the
# flags are parsed, so a bad one ends the program before anything runs.

def define_steps(default: int, help_text: str = 'Training steps (the total, '
                 'counting steps of a resumed run).') -> None:
  flags.DEFINE_integer('steps', default, help_text, lower_bound=1)


def define_batch_size(default: int, help_text: str = 'Examples per step.') -> None:
  flags.DEFINE_integer('batch_size', default, help_text, lower_bound=1)


def define_log_every(default: int) -> None:
  flags.DEFINE_integer('log_every', default,
                       'Print `Step: N Loss: X` every this many steps.',
                       lower_bound=1)


def require_finite(name: str, minimum: float, *, inclusive: bool,
                   note: str = '') -> None:
  """Refuses a float flag that is nan, infinite or below `minimum` (or at it, unless inclusive).

  absl's `lower_bound` lets nan through (nan < 0 is false).
  """
  relation = '>=' if inclusive else '>'
  flags.register_validator(
      name, lambda v: v is None or math.isfinite(v) and (
          v >= minimum if inclusive else v > minimum),
      message=f'--{name} must be a finite number {relation} {minimum:g}{note}')


def require_non_empty(name: str, expected: str) -> None:
  """Refuses a string flag given as '' (unset is None: the flag's default meaning)."""
  flags.register_validator(name, lambda v: v is None or bool(v.strip()),
                           message=f'--{name} is empty; expected {expected}')


def define_learning_rate(default: float = 0.001) -> None:
  flags.DEFINE_float('learning_rate', default, 'Adam learning rate (> 0).')
  require_finite('learning_rate', 0, inclusive=False)


def define_seed(help_text: str = 'Seed of the synthetic data and the initial '
                'weights.') -> None:
  # The initializers take the seed as an int64 (tf.random.stateless_*).
  flags.DEFINE_integer('seed', 0, help_text, lower_bound=0, upper_bound=INT64_MAX)


def define_training_flags(*, steps: int, batch_size: int, log_every: int,
                          steps_help: Optional[str] = None,
                          batch_help: Optional[str] = None,
                          seed_help: Optional[str] = None) -> None:
  """--steps, --batch_size, --log_every, --learning_rate and --seed."""
  define_steps(steps, *([steps_help] if steps_help else []))
  define_batch_size(batch_size, *([batch_help] if batch_help else []))
  define_log_every(log_every)
  define_learning_rate()
  define_seed(*([seed_help] if seed_help else []))


def define_devices(help_text: str, default: str = 'auto') -> None:
  flags.DEFINE_string('devices', default, help_text)


def define_data() -> None:
  flags.DEFINE_string('data', None,
                      'A .npz with x [n, 128] float32 and y [n] integer labels '
                      'in [0, 10); default: the synthetic teacher task.')
  require_non_empty('data', 'the path of a .npz file (leave the flag out for '
                    'the synthetic task)')


def define_checkpoint_flags(every: int = 1000) -> None:
  """--checkpoint_dir and --checkpoint_every."""
  flags.DEFINE_string('checkpoint_dir', None,
                      'Save model, Adam state and step here; a rerun of the '
                      'same command resumes from the newest checkpoint.')
  flags.DEFINE_integer('checkpoint_every', every,
                       'Save a checkpoint every this many steps.', lower_bound=1)


def define_export_dir() -> None:
  flags.DEFINE_string('export_dir', None,
                      'Save the trained model here as a SavedModel (serving: '
                      'features [None, 128] float32 -> logits).')


def define_logdir(help_text: str = 'Write TensorBoard scalars (loss, steps/s) '
                  'here.') -> None:
  flags.DEFINE_string('logdir', None, help_text)


def define_strategy_flags(collective_timeout: float = 60) -> None:
  """--strategy, --collective_timeout and --peer_timeout."""
  flags.DEFINE_string('strategy', 'none',
                      'none (pure model parallelism), mirrored (one replica per '
                      'device group, groups separated by ";" in --devices) or '
                      'multi_worker (one replica per worker, from TF_CONFIG). '
                      '--batch_size is the global batch.')
  flags.DEFINE_float('collective_timeout', collective_timeout,
                     'multi_worker: seconds a collective waits for a dead '
                     'worker before the run fails (0: forever).')
  flags.DEFINE_float('peer_timeout', 120,
                     'multi_worker: seconds to wait at start for the other '
                     'workers of TF_CONFIG before giving up (0: forever).')
  for name in ('collective_timeout', 'peer_timeout'):
    require_finite(name, 0, inclusive=True, note=' (0: wait forever)')


def define_lm_model_flags(*, num_blocks: int = 4, d_model: int = 128, num_heads: int = 4,
                          mlp_units: int = 512, context: int = 128,
                          heads_help: str = 'Attention heads per block.') -> None:
  """The tiny LM's sizes: --num_blocks, --d_model, --num_heads, --mlp_units, --context."""
  for name, default, help_text in (
      ('num_blocks', num_blocks, 'Transformer blocks.'),
      ('d_model', d_model, 'Residual stream width.'),
      ('num_heads', num_heads, heads_help),
      ('mlp_units', mlp_units, 'MLP hidden width.'),
      ('context', context, 'Characters the model reads.')):
    flags.DEFINE_integer(name, default, help_text, lower_bound=1)


def _define_verbose() -> None:
  if 'verbose' not in FLAGS:
    flags.DEFINE_bool('verbose', False, "Show TensorFlow's own start-up messages.")


# Start-up, the error guard and the stop signals.

class Stopped(BaseException):
  """SIGINT or SIGTERM ended the program; it exits with 128 + the signal number.

  A BaseException, as KeyboardInterrupt is: raised from the signal handler
  anywhere (an import, `tf.saved_model.save`), it must not be swallowed by an
  `except Exception` there and the program carry on.
  """

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.exit_code = 128 + signum


class _StopSignals:
  """SIGINT / SIGTERM: during training, a request to stop at the next step boundary."""

  def __init__(self):
    self.signum = None  # The signal received during training, if any.
    self.received = None  # The last signal received at all.
    self.training = False

  def handle(self, signum, frame):
    del frame
    self.received = signum
    if self.training and self.signum is None:
      self.signum = signum
      return
    # Outside training (or a second signal): nothing is half-done, stop now.
    raise Stopped(signum, f'stopped by {signal.Signals(signum).name}')

  def requested(self) -> bool:
    return self.signum is not None


_STOP = _StopSignals()


def program_name() -> str:
  return os.path.basename(sys.argv[0])


def usage(doc: Optional[str]) -> str:
  """The help text: the program's docstring, then its flags (absl's own left out)."""
  lines = [doc.strip('\n').rstrip() if doc else f'usage: {program_name()} [flags]',
           '', 'Flags:', '  -h, --help: show this help and exit.']
  for module, module_flags in sorted(FLAGS.flags_by_module_dict().items()):
    if module.startswith('absl'):
      continue
    for flag in sorted(module_flags, key=lambda f: f.name):
      name = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}'
      default = '' if flag.default is None else f' (default: {flag.default_as_str})'
      lines.append(textwrap.fill(f'{name}: {flag.help}{default}', width=80,
                                 initial_indent='  ', subsequent_indent='    '))
  return '\n'.join(lines)


def _fail(message: str, status: int = 1) -> None:
  # The frozen heap (start_tensorflow) speeds a finished program's exit; a
  # failed or stopped one, perhaps with a runtime still busy (a worker whose
  # peer is mid-collective), exits with every object collectable, as usual.
  gc.unfreeze()
  sys.stdout.flush()
  sys.stderr.write(f'{program_name()}: error: {message}\n')
  sys.exit(status)


def parse_flags(argv, doc: Optional[str] = None) -> list:
  """Parses `argv` into FLAGS; -h/--help prints `usage(doc)` and exits 0.

  A bad flag or value, or an unexpected argument, ends the program with one
  line and exit status 1. Returns the program name followed by no arguments.
  """
  _define_verbose()
  options = argv[1:argv.index('--')] if '--' in argv else argv[1:]
  if any(arg in ('-h', '--help', '-help', '--helpshort', '--helpfull') for arg in options):
    print(usage(doc))
    sys.exit(0)
  try:
    _check_flag_files(options)
  except TfMpError as e:
    _fail(str(e))
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e}; see --help')
  if len(rest) > 1:
    _fail(f'unexpected arguments: {" ".join(rest[1:])}; see --help')
  for name, flag in sorted(FLAGS._flags().items()):  # pylint: disable=protected-access
    value = flag.value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
      _fail(f'flag --{name}={value}: {value} is larger than 2^63 - 1 ({INT64_MAX}), the '
            "largest integer TensorFlow's int64 counters hold; see --help")
  return rest


def _check_flag_files(args, seen: tuple = ()) -> None:
  """Refuses a --flagfile (given or nested in one) that is not a regular file.

  absl reads a flag file to its end: /dev/zero filled the memory, a fifo
  waited forever. (A file already being read is skipped, as absl does.)
  """
  from tf_mp.files import check_input_file  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  for i, arg in enumerate(args):
    name = None
    for prefix in ('--flagfile=', '-flagfile='):
      if arg.startswith(prefix):
        name = arg[len(prefix):]
    if arg in ('--flagfile', '-flagfile') and i + 1 < len(args):
      name = args[i + 1]
    name = os.path.expanduser(name.strip()) if name is not None else ''
    if not name or name in seen:
      continue
    check_input_file(name, '--flagfile', 'expected a text file of flags, one per line')
    with open(name, errors='replace') as f:
      _check_flag_files([line.strip() for line in f], seen + (name,))


@contextlib.contextmanager
def quiet_stderr(quiet: bool = True):
  """Sends file descriptor 2 (where TensorFlow's C++ code writes) to /dev/null."""
  if not quiet:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def start_tensorflow(verbose: bool = False) -> None:
  """Sets the log level, then imports TensorFlow and tf_mp's modules quietly.

  TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, when it loads, and prints some
  C++ lines (CUDA probing, CPU features) whatever the level: both must be
  dealt with before the import. Its Python loggers (tf.distribute, the
  checkpoint saver) log at INFO; they are set to warnings and errors.
  """
  if not verbose:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  # Python's cyclic collector would walk the whole growing heap several times
  # while TensorFlow's ~2,800 modules load, for garbage they hardly make
  # (docs/benchmarks.md, start-up). It waits until they are loaded; what they
  # made is then frozen, out of the collector's sight, so later collections
  # walk only what the program makes.
  collecting = gc.isenabled()
  gc.disable()
  try:
    with quiet_stderr(not verbose):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      import tf_mp  # pylint: disable=g-import-not-at-top
      tf_mp.Trainer  # pylint: disable=pointless-statement  (loads the namespace)
  finally:
    gc.freeze()
    if collecting:
      gc.enable()
  if not verbose:
    tf.get_logger().setLevel('ERROR')
    logging.set_verbosity(logging.WARNING)


def run(main: Callable[[list], Optional[int]], doc: Optional[str] = None,
        check_flags: Optional[Callable[[], None]] = None) -> None:
  """Parses the flags, starts TensorFlow, runs `main(argv)` and exits.

  Args:
    main: the program, given the arguments left after the flags (its name).
    doc: the `--help` text above the flags (the program's docstring).
    check_flags: checks that need no TensorFlow (device counts, output
      directories), run before it loads so that a mistake is reported at once.

  `tf_mp.TfMpError` -> `<program>: error: <message>` on stderr, exit 1;
  `Stopped` (a signal) -> `<program>: <message>` on stderr, exit 130 / 143.
  Neither prints a traceback.
  """
  argv = parse_flags(sys.argv, doc)
  previous = {s: signal.signal(s, _STOP.handle) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    if check_flags is not None:
      check_flags()
    start_tensorflow(FLAGS.verbose)
    status = main(argv)
  except Stopped as e:
    _stopped(e)
  except Exception as e:  # pylint: disable=broad-except
    if _STOP.received is not None and (not isinstance(e, TfMpError) or
                                       isinstance(e, WorkerLostError)):
      # A failure after a stop signal is its consequence: a peer that stopped
      # first breaks this worker's collective (WorkerLostError), and the
      # handler's raise inside a TensorFlow call comes back wrapped. (A
      # TfMpError of its own, e.g. the checkpoint on the way out failing,
      # is reported as such.)
      signum = _STOP.received
      _stopped(Stopped(signum, f'stopped by {signal.Signals(signum).name}'))
    if not isinstance(e, TfMpError):
      raise
    # 130/143 for an interruption while waiting for peers, else 1.
    _fail(str(e), getattr(e, 'exit_status', 1))
  finally:
    # After a stop signal the program is on its way out, its line printed: a
    # second Ctrl-C (or SIGTERM) then, during the interpreter's shutdown, killed
    # it by that signal (status -2/-15, the line's 130/143 lost).
    for s, handler in previous.items():
      signal.signal(s, handler if _STOP.received is None else signal.SIG_IGN)
  # The program is done and has closed what it wrote (checkpoints, exports and
  # state files are written whole and closed; the summary writer is closed).
  # Freezing the heap spares the interpreter's exit its walks of every object
  # TensorFlow made (about 1 s here, docs/benchmarks.md); the process's end
  # frees the memory anyway.
  gc.freeze()
  sys.exit(status or 0)


def _stopped(stop: Stopped) -> None:
  gc.unfreeze()  # As in _fail.
  sys.stdout.flush()
  sys.stderr.write(f'{program_name()}: {stop}\n')
  sys.exit(stop.exit_code)


@contextlib.contextmanager
def stop_on_signals(trainer, save: Optional[Callable[[], Optional[str]]] = None):
  """Training in the block stops at a step boundary on SIGINT or SIGTERM.

  Pass `stop.requested` (the yielded object) as `Trainer.fit(should_stop=...)`.
  When the block ends after a signal, `save()` writes a checkpoint (if given)
  and `Stopped` is raised with the step reached and where it was saved; `run`
  prints it as one line and exits 130 (SIGINT) or 143 (SIGTERM).
  """
  _STOP.signum, _STOP.training = None, True
  try:
    yield _STOP
  finally:
    _STOP.training = False
  if _STOP.signum is not None:
    step = int(trainer.step.numpy())
    saved = save() if save is not None else None
    if saved:
      where = f'checkpoint saved: {saved}'
    elif save is not None:  # A multi-worker non-chief: it took part, the chief wrote.
      where = 'checkpoint saved by the chief'
    else:
      where = 'nothing saved (no checkpoint directory given)'
    raise Stopped(_STOP.signum, f'stopped by {signal.Signals(_STOP.signum).name} '
                  f'at step {step}; {where}')


# Checks before training.

def check_writable_dir(path: str, flag: str) -> None:
  """Raises TfMpError unless files can be written in `path` (created if missing).

  `path` is an existing directory, or its nearest existing ancestor is one;
  a probe file is created there and removed. Nothing else is written.
  """
  if not path:
    raise TfMpError(f'--{flag} is empty; expected a directory path')
  from tf_mp.files import refuse_broken_link  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  refuse_broken_link(path, f'--{flag}')
  absolute = os.path.abspath(path)
  existing = absolute
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    what = 'is a file' if existing == absolute else f'is under a file ({existing!r})'
    raise TfMpError(f'--{flag} {path!r} {what}; expected a directory')
  # The names still to be created must be ones the file system takes (else the
  # export or the summary writer failed only after training).
  path_max = os.pathconf(existing, 'PC_PATH_MAX')
  if len(os.fsencode(absolute)) >= path_max:
    raise TfMpError(f'--{flag} {path[:40]!r}... is {len(os.fsencode(absolute))} bytes long '
                    f'(as an absolute path); expected under {path_max}, the system\'s limit')
  name_max = os.pathconf(existing, 'PC_NAME_MAX')
  for part in os.path.relpath(absolute, existing).split(os.sep):
    if len(os.fsencode(part)) > name_max:
      raise TfMpError(f'--{flag} {path!r} has a name of {len(os.fsencode(part))} bytes '
                      f'({part[:16]}...); expected at most {name_max}, the file '
                      "system's limit")
  try:
    fd, probe = tempfile.mkstemp(prefix='.tf_mp_write_check_', dir=existing)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise TfMpError(f'--{flag} {path!r} cannot be written ({e.strerror} in '
                    f'{existing!r}); expected a writable directory') from None


def check_output_dirs(*flag_names: str) -> None:
  """`check_writable_dir` for each of these flags that is set."""
  for name in flag_names:
    if FLAGS[name].value is not None:
      check_writable_dir(FLAGS[name].value, name)


def check_device_count(spec: Optional[str], count: int, what: str) -> None:
  """Refuses a device list (or any ';'-separated group) naming more than `count` devices.

  Fewer are used round-robin; more would be dropped without a word.
  """
  if spec is None or spec.strip().lower() == 'auto':
    return
  for group in spec.split(';'):
    names = [name for name in group.split(',') if name.strip()]
    if len(names) > count:
      raise TfMpError(f'--devices {group.strip()!r} names {len(names)} devices '
                      f'but the model has {count} {what}; expected at most '
                      f'{count} (one per {what[:-1]})')


def check_local_devices(spec: Optional[str], note: str = '') -> None:
  """Refuses a device of another job (`/job:worker/task:1/...`) in a one-process run.

  Such a device exists only in a cluster; in one process TensorFlow fails at
  the first tensor with "unknown device". `note` ends the message.
  """
  if spec is None:
    return
  for name in spec.replace(';', ',').split(','):
    job = re.search(r'/job:([^/]*)', name)
    if job and job.group(1) != 'localhost':
      raise TfMpError(f'--devices names {name.strip()!r}, a device of job '
                      f'{job.group(1)!r}, but this process is in no cluster; '
                      f'expected local devices such as cpu:0{note}')


def check_export_dir_apart(*flag_names: str) -> None:
  """Refuses --export_dir naming the directory of one of these flags, or one holding it.

  The export directory must be new or empty when the SavedModel is written,
  after training, and these write into theirs during training: sharing
  would end the run, after training, with "already exists and is not
  empty". (An export directory inside theirs is fine: they write no
  sub-directories of that name.)
  """
  if not FLAGS.export_dir:
    return
  export = os.path.realpath(FLAGS.export_dir)
  for name in flag_names:
    path = FLAGS[name].value
    if not path:
      continue
    real = os.path.realpath(path)
    if real == export:
      raise TfMpError(f'--export_dir and --{name} are the same directory '
                      f'({path!r}); expected separate directories (the export '
                      'directory must be empty when the model is exported)')
    if real.startswith(export + os.sep):
      raise TfMpError(f'--{name} {path!r} is inside --export_dir '
                      f'{FLAGS.export_dir!r}; expected separate directories (the '
                      'export directory must be empty when the model is exported)')


# Data and output.

def load_data():
  """`(x, y)` from --data (a .npz), else the synthetic task of --seed."""
  import tf_mp  # pylint: disable=g-import-not-at-top
  if FLAGS.data:
    return tf_mp.load_npz(FLAGS.data)
  return tf_mp.synthetic_data(FLAGS.seed)


class StepLogger:
  """`on_log` for `Trainer.fit`: prints `Step: N Loss: X` as the document does.

  With `logdir`, also writes TensorBoard scalars `loss` and `steps_per_second`;
  a write that fails (a full disk) raises TfMpError, one line, and training
  stops there (checkpoints already saved are untouched).
  """

  def __init__(self, logdir: Optional[str] = None):
    self._writer = None
    self._logdir = logdir
    if logdir:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._writer = tf.summary.create_file_writer(logdir)
    self._last = None

  def __call__(self, step: int, loss) -> None:
    # print() of a numpy float32, as the document's `print('Step:', ...)`.
    print('Step:', step, 'Loss:', loss, flush=True)
    if self._writer is None:
      return
    from tf_mp.summaries import write_scalar  # pylint: disable=g-import-not-at-top
    now = time.perf_counter()
    with self._summary_errors(step), self._writer.as_default():
      write_scalar('loss', loss, step)
      if self._last and step > self._last[0]:
        write_scalar('steps_per_second',
                     (step - self._last[0]) / (now - self._last[1]), step)
    self._last = (step, now)

  def close(self) -> None:
    if self._writer is not None:
      with self._summary_errors(self._last[0] if self._last else 0):
        self._writer.flush()

  @contextlib.contextmanager
  def _summary_errors(self, step: int):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tf_mp.summaries import summary_error  # pylint: disable=g-import-not-at-top
    try:
      yield
    except (tf.errors.OpError, OSError) as e:
      writer, self._writer = self._writer, None
      with contextlib.suppress(tf.errors.OpError, OSError):
        writer.close()  # Its events are lost; a second flush would fail again.
      raise summary_error(self._logdir, step, e) from None


def done_line(result) -> str:
  """The last line of a training run, from a `tf_mp.TrainResult`."""
  return (f'Done: {result.steps} steps, final loss {result.final_loss:.6g}, '
          f'{result.steps_per_second:.1f} steps/s')
