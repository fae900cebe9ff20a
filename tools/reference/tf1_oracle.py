"""The regression oracle: run the TF1 program once, then compare a tf_mp port with it.

`run_tf1_program` runs `tf1_program.py --dump_dir` in a subprocess (graph mode is
process-global) on given data; `compare` loads the recorded initial checkpoint
into a port with `tf_mp.compat.v1.load_tf1_checkpoint` and measures, against the record:

  forward    max |logits_port - logits_tf1| over all rows of x
  gradients  per variable, max |g_port - g_tf1| / max |g_tf1| (step-0 batch)
  one_step   per variable, the same relative difference of the weight update
             of one Adam step on that batch
  loss_0_10, loss_0_99, loss_all
             max over those steps of |loss_port - loss_tf1| / |loss_tf1|, both
             trained from the same initial values on identical batches

Used by `tests/test_oracle.py` and `tools/oracle_report.py`.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

import tf_mp
from tf_mp.adam import variable_name

PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tf1_program.py')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(PROGRAM)))
DEVICES = ('cpu:0', 'cpu:1', 'cpu:2')

# The tolerances (docs/migrating_from_tf1.md, "How close the port is").
TOLERANCES = {
    'forward': 1e-5,     # absolute
    'gradients': 1e-5,   # relative, per variable
    'one_step': 1e-5,    # relative, per variable
    'loss_0_10': 5e-6,   # relative, steps 0-10
    'loss_0_99': 3e-4,   # relative, steps 0-99
    'loss_all': 3e-3,    # relative, all steps
}
_LOSS_SPANS = {'loss_0_10': 11, 'loss_0_99': 100, 'loss_all': None}
_PROFILE_STEPS = (0, 1, 2, 5, 10, 20, 50, 99, 150, 199)


def random_data(seed: int, num_examples: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
  """Standard-normal x `[num_examples, 128]` and teacher labels y, from `seed`."""
  return tf_mp.synthetic_data(seed, num_examples=num_examples)


@dataclasses.dataclass
class Reference:
  """What one run of the TF1 program recorded (see `tf1_program.dump_oracle`)."""
  directory: str
  x: np.ndarray
  y: np.ndarray
  batch_size: int
  logits: np.ndarray
  gradients: Dict[str, np.ndarray]
  loss_0: float
  one_step: Dict[str, np.ndarray]
  losses: np.ndarray
  devices: dict
  stdout: str

  @property
  def initial(self) -> str:
    """The Saver prefix of the initial values."""
    return os.path.join(self.directory, 'initial')

  def tf1_device_indices(self, scope: str, placed: bool = False,
                         backward: bool = False) -> Dict[int, int]:
    """Device index -> op count for the ops of `scope` in the TF1 program.

    Args:
      scope: e.g. 'sub_model_2'.
      placed: the devices the runtime placed the ops on (from the partition
        graphs of one training step), else those requested in the graph (ops
        without a request are not counted).
      backward: the ops under `gradients/<scope>/` instead of `<scope>/`.
    """
    prefix = f'gradients/{scope}/' if backward else f'{scope}/'
    counts = {}
    for name, device in self.devices['placed' if placed else 'requested'].items():
      if (not name.startswith(prefix) or not device or '/Initializer/' in name or
          re.fullmatch(r'_\d+', name.rsplit('/', 1)[-1])):  # Send/Recv pairs.
        continue
      index = tf.DeviceSpec.from_string(device).device_index or 0
      counts[index] = counts.get(index, 0) + 1
    return counts


def run_tf1_program(work_dir: str, x: np.ndarray, y: np.ndarray, *,
                    steps: int = 200, batch_size: int = 64,
                    pools: Sequence[str] = (), timeout: float = 300) -> Reference:
  """Runs the TF1 program on (x, y) in a subprocess and loads what it recorded.

  `pools`: the program's thread-pool flags (a `benchlib.TF1_POOLS` value); none runs it
  with TensorFlow's default session, as the document does.
  """
  os.makedirs(work_dir, exist_ok=True)
  data = os.path.join(work_dir, 'data.npz')
  np.savez(data, x=x, y=y)
  dump = os.path.join(work_dir, 'tf1')
  losses = os.path.join(work_dir, 'tf1_losses.npy')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  command = [sys.executable, PROGRAM, '--data', data, '--steps', str(steps),
             '--batch_size', str(batch_size), '--num_devices', '3',
             '--dump_dir', dump, '--losses_out', losses, *pools]
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
  if result.returncode != 0:
    stderr = '\n'.join(line for line in result.stderr.splitlines()
                       if 'port.cc' not in line and 'cuda' not in line)
    raise RuntimeError(f'{" ".join(command)} exited {result.returncode}:\n{stderr}')
  with np.load(os.path.join(dump, 'forward.npz')) as f:
    logits = f['logits']
  with np.load(os.path.join(dump, 'gradients.npz')) as f:
    gradients = {k: f[k] for k in f.files if k != '__loss__'}
    loss_0 = float(f['__loss__'])
  with np.load(os.path.join(dump, 'one_step.npz')) as f:
    one_step = {k: f[k] for k in f.files}
  with open(os.path.join(dump, 'devices.json')) as f:
    devices = json.load(f)
  return Reference(dump, x, y, batch_size, logits, gradients, loss_0, one_step,
                   np.load(losses), devices, result.stdout)


def make_port(devices=DEVICES, **trainer_kwargs):
  """The port as the README builds it: `build_model(devices)` and `Trainer(model)`."""
  model = tf_mp.build_model(devices if isinstance(devices, str) else list(devices))
  return model, tf_mp.Trainer(model, **trainer_kwargs)


def _relative(got: np.ndarray, want: np.ndarray) -> float:
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  scale = np.abs(want).max()
  diff = np.abs(got - want).max()
  return float(diff / scale) if scale > 0 else float(diff)


@dataclasses.dataclass
class Comparison:
  """Differences between a port and the TF1 record; see the module docstring."""
  forward: float
  gradients: Dict[str, float]
  one_step: Dict[str, float]
  losses: np.ndarray  # the port's per-step losses
  loss_drift: np.ndarray  # per step, |port - tf1| / |tf1|

  def max_differences(self) -> Dict[str, float]:
    """Check name -> the largest difference it measured."""
    out = {'forward': self.forward,
           'gradients': max(self.gradients.values()),
           'one_step': max(self.one_step.values())}
    for name, span in _LOSS_SPANS.items():
      out[name] = float(self.loss_drift[:span].max())
    return out

  def failures(self, tolerances: Optional[Dict[str, float]] = None) -> list:
    """Names of the checks whose difference exceeds its tolerance (NaN fails)."""
    tolerances = tolerances or TOLERANCES
    return [name for name, value in self.max_differences().items()
            if not value <= tolerances[name]]

  def profile(self) -> str:
    """The loss drift at a few steps and the worst variables, for failure messages."""
    steps = [s for s in _PROFILE_STEPS if s < len(self.loss_drift)]
    drift = ', '.join(f'{s}: {self.loss_drift[: s + 1].max():.2e}' for s in steps)
    worst_grad = max(self.gradients, key=self.gradients.get)
    worst_step = max(self.one_step, key=self.one_step.get)
    return (f'forward {self.forward:.2e}; gradients worst {worst_grad} '
            f'{self.gradients[worst_grad]:.2e}; one_step worst {worst_step} '
            f'{self.one_step[worst_step]:.2e}; loss drift (max up to step) {drift}')


def compare(reference: Reference,
            port: Callable[[], Tuple[tf.Module, 'tf_mp.Trainer']] = make_port,
            steps: Optional[int] = None) -> Comparison:
  """Measures a port against `reference`.

  Args:
    reference: from `run_tf1_program`.
    port: builds a fresh `(model, trainer)`; `make_port` is the real port, a
      deviating one proves the comparison can fail.
    steps: training steps to compare (default: all the reference recorded).

  Returns:
    A `Comparison`.
  """
  model, trainer = port()
  tf_mp.compat.v1.load_tf1_checkpoint(model, reference.initial, trainer)
  x, y = reference.x, reference.y
  forward = float(np.abs(model(x).numpy().astype(np.float64) -
                         reference.logits).max())

  rows = tf_mp.batch_indices(0, reference.batch_size, len(x))
  features, labels = tf.constant(x[rows]), tf.constant(y[rows])
  variables = model.trainable_variables
  names = [variable_name(v) for v in variables]

  @tf.function(autograph=False)
  def gradients_of_loss(features, labels):
    return tf.gradients(trainer.compute_loss(features, labels), variables)

  grads = gradients_of_loss(features, labels)
  gradients = {n: _relative(g.numpy(), reference.gradients[n])
               for n, g in zip(names, grads)}

  before = {n: v.numpy() for n, v in zip(names, variables)}
  trainer.train_step(x[rows], y[rows])
  one_step = {n: _relative(v.numpy().astype(np.float64) - before[n],
                           reference.one_step[n].astype(np.float64) - before[n])
              for n, v in zip(names, variables)}

  # Back to the initial values and a fresh Adam state (the initial checkpoint
  # holds zero slots and beta powers), then train as the TF1 program did.
  tf_mp.compat.v1.load_tf1_checkpoint(model, reference.initial, trainer)
  trainer.step.assign(0)
  steps = steps or len(reference.losses)
  result = trainer.fit(x, y, steps=steps, batch_size=reference.batch_size,
                       log_every=1)
  losses = np.array([loss for _, loss in result.logged], np.float64)
  want = reference.losses[:steps].astype(np.float64)
  drift = np.abs(losses - want) / np.abs(want)
  return Comparison(forward, gradients, one_step, losses, drift)


class ReversedConcatModel(tf_mp.ConcatModel):
  """A deviating port for the oracle's own test: concatenates in reverse order."""

  def concat(self, outputs):
    return super().concat(list(outputs)[::-1])


def reversed_concat_port(devices=DEVICES):
  model = make_port(devices)[0]
  model = ReversedConcatModel(model.sub_models, model.head, model.output_device,
                              model.config)
  return model, tf_mp.Trainer(model)


# Ports that must fail the comparison: name -> (builder, checks that must fail).
# Keras' epsilon and a 10% larger learning rate leave the forward pass and the
# gradients alone and show in the first Adam step; a swapped concat shows at once.
DEVIATIONS = {
    'epsilon_1e-7': (lambda devices=DEVICES: make_port(devices, epsilon=1e-7),
                     ('one_step', 'loss_0_10')),
    'learning_rate_0.0011': (lambda devices=DEVICES: make_port(
        devices, learning_rate=0.0011),
                             ('one_step', 'loss_0_10', 'loss_0_99', 'loss_all')),
    'concat_reversed': (reversed_concat_port,
                        ('forward', 'gradients', 'one_step', 'loss_0_10')),
}
