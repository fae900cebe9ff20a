"""tf.distribute strategies around the model-parallel model: none, mirrored, multi_worker.

Model parallelism runs *inside* each replica: a replica owns a group of
devices, one per sub-model, and its sub-models compute on that group. Data
parallelism runs *across* replicas with TensorFlow's own engine:

  none          the default strategy; one group, pure model parallelism.
  mirrored      `tf.distribute.MirroredStrategy`, one replica per device group
                (`cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5` is two replicas).
  multi_worker  `tf.distribute.MultiWorkerMirroredStrategy` from `TF_CONFIG`;
                one replica per worker, each over its own local group.

Variables of a replicated model are mirrored, one copy per replica on the
replica's lead device (the first device of its group): that is TensorFlow's
rule, a mirrored variable cannot be pinned to another device inside a replica.
The computation can: `StrategyLayout.replica_placement` remaps the devices the
model was built for (the first group) to the running replica's group.
"""

import contextlib
import dataclasses
import json
import re
from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from tf_mp.devices import remapped_devices
from tf_mp.devices import (canonical_device, ensure_logical_cpus, short_device_name,
                           resolve_devices, split_device_list)
from tf_mp.errors import TfMpError
from tf_mp.model import ModelConfig, build_model
from tf_mp import cluster_security
from tf_mp import peer_wait

STRATEGIES = ('none', 'mirrored', 'multi_worker')

# What a collective raises when a peer died or stopped answering.
COLLECTIVE_FAILURES = (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
                       tf.errors.CancelledError, tf.errors.AbortedError)


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


GroupSpec = Union[None, str, Sequence[str], Sequence[Sequence[str]]]


@dataclasses.dataclass(frozen=True)
class ClusterTask:
  """This process's place in a multi-worker cluster, parsed from `TF_CONFIG`."""
  cluster: dict  # job name -> list of 'host:port'.
  task_type: str
  task_index: int

  @property
  def is_chief(self) -> bool:
    """The chief writes checkpoints: the `chief` task, or worker 0 without one."""
    if 'chief' in self.cluster:
      return self.task_type == 'chief'
    return self.task_type == 'worker' and self.task_index == 0

  @property
  def num_workers(self) -> int:
    return sum(len(self.cluster.get(job, ())) for job in ('chief', 'worker'))


@dataclasses.dataclass(frozen=True)
class StrategyLayout:
  """A strategy and the device group of each of its local replicas.

  Attributes:
    kind: 'none', 'mirrored' or 'multi_worker'.
    strategy: the `tf.distribute.Strategy`; None for 'none'.
    groups: per local replica, one canonical device per sub-model. The model is
      built on `groups[0]`; replica r computes on `groups[r]`.
    task: the cluster task for 'multi_worker', else None.
    collective_timeout: seconds after which a blocked collective fails (None:
      wait forever); 'multi_worker' only.
  """
  kind: str
  strategy: Optional[tf.distribute.Strategy]
  groups: Tuple[Tuple[str, ...], ...]
  task: Optional[ClusterTask] = None
  collective_timeout: Optional[float] = None

  @property
  def distributed(self) -> bool:
    return self.strategy is not None

  @property
  def num_replicas(self) -> int:
    """Replicas in sync across all workers."""
    return self.strategy.num_replicas_in_sync if self.strategy else 1

  @property
  def is_chief(self) -> bool:
    return self.task.is_chief if self.task else True

  def scope(self):
    """The strategy's scope (nothing for 'none'): create variables inside it."""
    return self.strategy.scope() if self.strategy else contextlib.nullcontext()

  def build_model(self, config: Optional[ModelConfig] = None):
    """`tf_mp.build_model` on the first group, variables created under `scope()`."""
    devices = list(self.groups[0]) if any(self.groups[0]) else None
    with self.scope():
      return build_model(devices, config)

  def local_replica(self, replica_id: int) -> int:
    """The index into `groups` of the replica with this global id."""
    return replica_id % len(self.groups)

  def replica_placement(self):
    """Inside a replica function: runs the model's ops on this replica's group.

    The model's modules name the devices of `groups[0]`; in replica r each of
    them is replaced by the matching device of `groups[r]`. Outside a replica
    (or with one group) it changes nothing.
    """
    if len(self.groups) == 1:
      return contextlib.nullcontext()
    context = tf.distribute.get_replica_context()
    if context is None:
      return contextlib.nullcontext()  # Cross-replica context: no replica.
    replica_id = tf.get_static_value(context.replica_id_in_sync_group)
    if replica_id is None:
      raise TfMpError('replica id is not known while tracing; the mirrored '
                      'strategies need a static replica id')
    group = self.groups[self.local_replica(int(replica_id))]
    return remapped_devices(dict(zip(self.groups[0], group)))

  def describe(self) -> str:
    """One line, e.g. `mirrored: 2 replicas, groups cpu:0,cpu:1,cpu:2 | ...`."""
    groups = ' | '.join(','.join(short_device_name(d) for d in g) for g in self.groups)
    text = f'{self.kind}: {self.num_replicas} replica(s) in sync, local groups {groups}'
    if self.task:
      text += (f'; task {self.task.task_type}:{self.task.task_index} of '
               f'{self.task.num_workers} workers')
    if self.collective_timeout:
      text += f'; collective timeout {self.collective_timeout:g}s'
    return text


def check_strategy_name(name) -> str:
  """Returns `name` lower-cased, or raises TfMpError listing the choices."""
  text = name.strip().lower() if isinstance(name, str) else name
  if text not in STRATEGIES:
    raise TfMpError(f'strategy {name!r} is unknown; expected one of '
                    f'{", ".join(STRATEGIES)}')
  return text


def parse_device_groups(spec: GroupSpec = 'auto', group_size: int = 3) -> list:
  """Turns a device-group request into lists of checked device names.

  Args:
    spec: `'auto'`; groups separated by `;` (`'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5'`),
      each one device per sub-model (a shorter group is used round-robin); a
      flat list (`'cpu:0,...,cpu:5'`), cut into consecutive groups of
      `group_size`; or a list of lists. `auto`: the GPUs in groups of
      `group_size` (one round-robin group when there are fewer); without GPUs
      the logical CPU devices in groups of `group_size`, creating
      `2 * group_size` of them when the runtime has not started.
    group_size: devices per group: the number of sub-models.

  Returns:
    A list of groups, each a list of `group_size` canonical device names.

  Raises:
    TfMpError: a device is malformed or missing, a flat list cannot be divided
      into groups, or two groups share a device.
  """
  if spec is None:
    raise TfMpError('device groups are needed for a replicated strategy; got '
                    'None, expected e.g. "cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5"')
  if isinstance(spec, str) and spec.strip().lower() == 'auto':
    return _auto_groups(group_size)
  if isinstance(spec, str):
    if ';' in spec:
      parts = [part.strip() for part in spec.split(';')]
      if any(not part for part in parts):
        raise TfMpError(f'device groups {spec!r} have an empty group; expected '
                        'groups separated by ";", e.g. "cpu:0,cpu:1,cpu:2;cpu:3,'
                        'cpu:4,cpu:5"')
      raw_groups = [split_device_list(part) for part in parts]
    else:
      raw_groups = _cut(split_device_list(spec), group_size, spec)
  else:
    items = list(spec)
    if items and all(isinstance(item, str) for item in items):
      raw_groups = _cut(items, group_size, ','.join(items))
    else:
      raw_groups = [list(group) for group in items]
  if not raw_groups:
    raise TfMpError('device groups are empty; expected at least one group')
  _make_cpus_for(name for group in raw_groups for name in group)
  groups = [resolve_devices(group, group_size) for group in raw_groups]
  owner = {}
  for index, group in enumerate(groups):
    for device in set(group):
      if device in owner:
        raise TfMpError(f'device {short_device_name(device)} is in group {owner[device] + 1} '
                        f'and group {index + 1}; expected disjoint groups')
      owner[device] = index
  return groups


def _make_cpus_for(names) -> None:
  """Creates the logical CPUs up to the highest local `cpu:k` named, at once.

  `resolve_devices` starts the runtime when it checks a group, so the devices
  of all groups must be created before the first group is checked.
  """
  highest = -1
  for name in names:
    spec = tf.DeviceSpec.from_string(canonical_device(name))
    if spec.device_type == 'CPU' and spec.job in (None, 'localhost'):
      highest = max(highest, spec.device_index or 0)
  if highest >= 0:
    try:
      ensure_logical_cpus(highest + 1)
    except TfMpError:
      pass  # Reported by resolve_devices as a missing device.


def _cut(names: list, group_size: int, as_written: str) -> list:
  if len(names) % group_size:
    raise TfMpError(
        f'{len(names)} devices ({as_written!r}) cannot be divided into groups of '
        f'{group_size} (one device per sub-model); give a multiple of {group_size} '
        'devices or separate groups with ";"')
  return [names[i:i + group_size] for i in range(0, len(names), group_size)]


def _auto_groups(group_size: int) -> list:
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    names = [f'/device:GPU:{i}' for i in range(len(gpus))]
  else:
    try:
      ensure_logical_cpus(2 * group_size)
    except TfMpError:
      pass  # Already started: use what exists.
    names = [canonical_device(d.name) for d in tf.config.list_logical_devices('CPU')]
  if len(names) < group_size:
    return [resolve_devices(names, group_size)]
  count = len(names) // group_size
  return [names[i * group_size:(i + 1) * group_size] for i in range(count)]


def parse_tf_config(text: Optional[str]) -> ClusterTask:
  """Checks a `TF_CONFIG` value and returns the task it describes.

  Expected: `{"cluster": {"worker": ["host:port", ...]}, "task": {"type":
  "worker", "index": i}}` (a `chief` job is allowed too).

  Raises:
    TfMpError: the value is missing, not JSON, or not of that form.
  """
  example = ('expected e.g. {"cluster": {"worker": ["127.0.0.1:12345", '
             '"127.0.0.1:12346"]}, "task": {"type": "worker", "index": 0}}')
  if text is None or not text.strip():
    raise TfMpError(f'strategy multi_worker needs the TF_CONFIG environment '
                    f'variable; it is not set; {example}')
  try:
    config = json.loads(text)
  except ValueError as e:
    raise TfMpError(f'TF_CONFIG {_clip(text)!r} is not valid JSON ({e}); '
                    f'{example}') from None
  if not isinstance(config, dict):
    raise TfMpError(f'TF_CONFIG {_clip(text)!r} is not a JSON object; {example}')
  cluster = config.get('cluster')
  if not isinstance(cluster, dict) or not cluster.get('worker') and not cluster.get('chief'):
    raise TfMpError(f'TF_CONFIG has no "cluster" with a "worker" list; {example}')
  for job, addresses in cluster.items():
    if job not in ('chief', 'worker'):
      raise TfMpError(f'TF_CONFIG cluster job {job!r} is not supported; '
                      'expected "worker" (and optionally "chief")')
    if not isinstance(addresses, list) or not addresses:
      raise TfMpError(f'TF_CONFIG cluster job {job!r} is {addresses!r}; '
                      'expected a non-empty list of "host:port"')
    for address in addresses:
      host, _, port = address.rpartition(':') if isinstance(address, str) else ('', '', '')
      if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TfMpError(f'TF_CONFIG address {address!r} in job {job!r} is not '
                        '"host:port" with a port in 1..65535')
  task = config.get('task')
  if not isinstance(task, dict):
    raise TfMpError(f'TF_CONFIG has no "task" object; {example}')
  task_type, index = task.get('type'), task.get('index')
  if task_type not in cluster:
    raise TfMpError(f'TF_CONFIG task type {task_type!r} is not a job of the '
                    f'cluster ({", ".join(sorted(cluster))})')
  if isinstance(index, bool) or not isinstance(index, int) or not (
      0 <= index < len(cluster[task_type])):
    raise TfMpError(f'TF_CONFIG task index {index!r} is not in '
                    f'[0, {len(cluster[task_type])}) for job {task_type!r}')
  return ClusterTask({job: list(a) for job, a in cluster.items()}, task_type, index)


def _clip(text: str, limit: int = 60) -> str:
  text = ' '.join(text.split())
  return text if len(text) <= limit else text[:limit] + '...'


def create_strategy(kind: str = 'none',
                    devices: GroupSpec = 'auto',
                    *,
                    tf_config: Optional[str] = None,
                    collective_timeout: Optional[float] = None,
                    peer_timeout: Optional[float] = 120,
                    group_size: int = 3) -> StrategyLayout:
  """Creates the strategy and chooses the device groups, before any tensor exists.

  Args:
    kind: 'none', 'mirrored' or 'multi_worker'.
    devices: for 'none' and 'multi_worker' this process's one group (any
      `tf_mp.resolve_devices` spec); for 'mirrored' the groups
      (`parse_device_groups`).
    tf_config: 'multi_worker' only: the `TF_CONFIG` JSON (read from the
      environment by the caller).
    collective_timeout: 'multi_worker' only: seconds after which a collective
      waiting for a dead worker fails (None or 0: no limit).
    peer_timeout: 'multi_worker' only: seconds to wait for the other workers
      to start before giving up (None or 0: no limit). The worker says on
      stderr which tasks it waits for once one is missing for 2 seconds;
      SIGINT/SIGTERM while waiting raise `peer_wait.PeerWaitInterrupted`.
      Before waiting it writes one line on stderr saying that the gRPC server
      listens unauthenticated on all interfaces (`cluster_security`).
    group_size: the number of sub-models.

  Returns:
    A `StrategyLayout`.

  Raises:
    TfMpError: an unknown kind, bad devices or groups, a malformed TF_CONFIG, a
      negative timeout, a busy port of this worker, or a peer that did not
      start within `peer_timeout`.
    peer_wait.PeerWaitInterrupted: SIGINT or SIGTERM while waiting for peers.
  """
  kind = check_strategy_name(kind)
  if collective_timeout is not None and (
      isinstance(collective_timeout, bool) or
      not isinstance(collective_timeout, (int, float)) or collective_timeout < 0):
    raise TfMpError(f'collective timeout must be a number of seconds >= 0, got '
                    f'{collective_timeout!r}')
  if kind != 'mirrored' and isinstance(devices, str) and ';' in devices:
    raise TfMpError(f'strategy {kind} runs one device group per process; got '
                    f'groups {devices!r}; use --strategy mirrored for several')
  if kind == 'none':
    group = resolve_devices(devices, group_size)
    return StrategyLayout('none', None, (tuple(group),))
  if kind == 'mirrored':
    groups = parse_device_groups(devices, group_size)
    strategy = tf.distribute.MirroredStrategy(devices=[g[0] for g in groups])
    return StrategyLayout('mirrored', strategy, tuple(map(tuple, groups)))
  peer_timeout = peer_wait.check_peer_timeout(peer_timeout)
  task = parse_tf_config(tf_config)
  # Collectives must be configured before the runtime starts, and checking
  # devices starts it: create the logical CPUs, then the strategy, then check.
  if isinstance(devices, str) and devices.strip().lower() == 'auto':
    gpus = tf.config.list_physical_devices('GPU')
    if not gpus:
      ensure_logical_cpus(group_size)
    first = '/device:GPU:0' if gpus else '/device:CPU:0'
  elif devices is not None:
    names = split_device_list(devices) if isinstance(devices, str) else list(devices)
    _make_cpus_for(names)
    first = canonical_device(names[0]) if names else None
  else:
    first = None
  cluster_security.warn_exposure(task)
  # The strategy blocks, uninterruptibly, until every task has started: after
  # the local checks above, wait for the peers here, where a line, a time
  # limit and signals work (peer_wait.py).
  remaining = peer_wait.wait_for_peers(task, peer_timeout)
  options = tf.distribute.experimental.CommunicationOptions(
      timeout_seconds=collective_timeout or None)
  # One replica per worker: its lead device is GPU:0 when the group starts
  # there, else the worker's CPU (the strategy counts accelerators from this).
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(task.cluster), task_type=task.task_type,
      task_id=task.task_index, rpc_layer='grpc',
      num_accelerators={'GPU': 1} if first == '/device:GPU:0' else None)
  with peer_wait.backstop(remaining):
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver, communication_options=options)
  group = resolve_devices(devices, group_size)
  return StrategyLayout('multi_worker', strategy, (tuple(group),), task,
                        collective_timeout or None)
