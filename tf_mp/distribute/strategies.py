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

A layout knows nothing about models: build yours (the document's model, a
pipeline, the tiny LM, your own `tf.Module`) inside `layout.scope()` on
`layout.devices`, and give the layout to `tf_mp.Trainer(strategy=layout)`:

  layout = tf_mp.distribute.create_strategy('mirrored', 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5')
  with layout.scope():
    model = tf_mp.build_model(layout.devices)
  trainer = tf_mp.Trainer(model, strategy=layout)
"""

import contextlib
import dataclasses
from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from tf_mp.checks import finite_number, positive_int
from tf_mp.devices import (GroupSpec, canonical_device, ensure_logical_cpus,
                           make_cpus_for, parse_device_groups, remapped_devices,
                           resolve_devices, short_device_name, split_device_list)
from tf_mp.distribute import cluster_security, peer_wait
from tf_mp.distribute.cluster import ClusterTask, parse_tf_config
from tf_mp.errors import TfMpError

STRATEGIES = ('none', 'mirrored', 'multi_worker')

# What a collective raises when a peer died or stopped answering.
COLLECTIVE_FAILURES = (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
                       tf.errors.CancelledError, tf.errors.AbortedError)


@dataclasses.dataclass(frozen=True)
class StrategyLayout:
  """A strategy and the device group of each of its local replicas.

  Attributes:
    kind: 'none', 'mirrored' or 'multi_worker'.
    strategy: the `tf.distribute.Strategy`; None for 'none'.
    groups: per local replica, one canonical device per sub-model (or stage,
      or shard). Build the model on `devices` (`groups[0]`) inside `scope()`;
      replica r computes on `groups[r]`.
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

  @property
  def devices(self) -> Optional[list]:
    """The devices to build the model on: the first group (None: no placement)."""
    return list(self.groups[0]) if any(self.groups[0]) else None

  def scope(self):
    """The strategy's scope (nothing for 'none'): create variables inside it.

    Raises:
      TfMpError: called inside the scope of another strategy.
    """
    if self.strategy and tf.distribute.has_strategy() and (
        tf.distribute.get_strategy() is not self.strategy):
      raise TfMpError(f'layout.scope() of this {self.kind} layout was entered inside '
                      "another strategy's scope; TensorFlow cannot mix two "
                      'strategies: leave the other scope first')
    return self.strategy.scope() if self.strategy else contextlib.nullcontext()

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
  if collective_timeout is not None:
    finite_number('collective timeout', collective_timeout, minimum=0)
  # Checked for every kind: a bad value is a mistake even where it is unused.
  peer_timeout = peer_wait.check_peer_timeout(peer_timeout)
  group_size = positive_int('group_size', group_size)
  if kind != 'mirrored' and isinstance(devices, str) and ';' in devices:
    raise TfMpError(f'strategy {kind} runs one device group per process; got '
                    f'groups {devices!r}; use --strategy mirrored for several')
  if kind == 'none':
    group = resolve_devices(devices, group_size, 'sub-models')
    return StrategyLayout('none', None, (tuple(group),))
  if kind == 'mirrored':
    groups = parse_device_groups(devices, group_size)
    leads = [g[0] for g in groups]
    # On CPUs TensorFlow picks collective ops whose keys every MirroredStrategy
    # of a process shares (the key base is a class constant), so a second
    # strategy whose gradients have other shapes fails with "Shape mismatch in
    # the collective instance 100". A reduction on one device has no keys and,
    # for two replicas, adds the same two numbers.
    cross_device_ops = (tf.distribute.ReductionToOneDevice()
                        if all('CPU' in d.upper() for d in leads) else None)
    strategy = tf.distribute.MirroredStrategy(devices=leads,
                                              cross_device_ops=cross_device_ops)
    return StrategyLayout('mirrored', strategy, tuple(map(tuple, groups)))
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
    make_cpus_for(names)
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
    try:
      strategy = tf.distribute.MultiWorkerMirroredStrategy(
          cluster_resolver=resolver, communication_options=options)
    except RuntimeError as e:  # "Collective ops must be configured at program startup"
      raise TfMpError('strategy multi_worker must be created before TensorFlow starts '
                      '(before any tensor or device query in this process); create '
                      f'it first ({e})') from None
  peer_wait.reclaim_sigterm()
  group = resolve_devices(devices, group_size, 'sub-models')
  return StrategyLayout('multi_worker', strategy, (tuple(group),), task,
                        collective_timeout or None)
