"""Device names, `auto`, logical CPU devices, and placement scopes (`device_scope`, remapping).

Model parallelism needs several devices. A machine without GPUs still has
real, separately scheduled devices once its CPU is split into logical devices
with `tf.config.set_logical_device_configuration`; that must happen before the
TensorFlow runtime starts, which is why `ensure_logical_cpus` exists and why
`resolve_devices` calls it for you.
"""

import contextlib
import os
import re
import threading
from typing import Dict, Optional, Sequence, Union

import tensorflow as tf

from tf_mp.checks import positive_int
from tf_mp.errors import TfMpError

DeviceSpec = Union[None, str, Sequence[str]]
# Device groups (one per replica): see `parse_device_groups`.
GroupSpec = Union[None, str, Sequence[str], Sequence[Sequence[str]]]

_SHORT_NAME = re.compile(r'^/?(?:device:)?(cpu|gpu|tpu):(\d+)$', re.IGNORECASE)


def canonical_device(name: str) -> str:
  """Returns TensorFlow's spelling of a device name.

  Args:
    name: `cpu:1`, `CPU:1`, `/cpu:1`, `/device:CPU:1`, or a full name such as
      `/job:worker/replica:0/task:1/device:GPU:0`.

  Returns:
    `/device:CPU:1` for the short forms; full names normalised by
    `tf.DeviceSpec`.

  Raises:
    TfMpError: the name is not a device name.
  """
  if not isinstance(name, str) or not name.strip():
    raise TfMpError(f'device name {name!r} is not a string such as "cpu:0" or '
                    '"/device:GPU:1"')
  text = name.strip()
  match = _SHORT_NAME.match(text)
  if match:
    _check_index(name, match.group(2))
    return f'/device:{match.group(1).upper()}:{int(match.group(2))}'
  if re.search(r'(?:^|/|:)(?:cpu|gpu|tpu)(?::-|$)', text, re.IGNORECASE):
    raise TfMpError(f'device name {name!r} has no device index >= 0; expected '
                    'e.g. "cpu:0" or "/device:GPU:1"')
  try:
    spec = tf.DeviceSpec.from_string(text)
  except (ValueError, TypeError) as e:
    raise TfMpError(f'device name {name!r} is not a device name such as "cpu:0" '
                    f'or "/device:GPU:1" ({e})') from None
  if spec.device_type is None:
    raise TfMpError(f'device name {name!r} names no device type; expected e.g. '
                    '"cpu:0" or "/job:worker/task:0/device:GPU:1"')
  if spec.device_index is None:
    raise TfMpError(f'device name {name!r} names no device index; expected e.g. '
                    f'"{spec.device_type.lower()}:0"')
  _check_index(name, spec.device_index)
  return spec.to_string()


# TensorFlow keeps a device index in an int32; a larger one is no device at all.
_MAX_DEVICE_INDEX = 2**31 - 1


def _check_index(name: str, index) -> None:
  if not 0 <= int(index) <= _MAX_DEVICE_INDEX:
    raise TfMpError(f'device name {name!r} has index {int(index)}; expected an '
                    f'index from 0 to {_MAX_DEVICE_INDEX}')


def split_device_list(spec: str) -> list:
  """Splits `"cpu:0, cpu:1,cpu:2"` into names (not yet checked)."""
  names = [part.strip() for part in spec.split(',')]
  if any(not part for part in names):
    raise TfMpError(f'device list {spec!r} has an empty entry; expected names '
                    'separated by commas, e.g. "cpu:0,cpu:1,cpu:2"')
  return names


def ensure_logical_cpus(count: int) -> None:
  """Makes at least `count` logical CPU devices exist.

  Splits the first physical CPU into `count` logical devices if the runtime
  has not started yet; afterwards it can only check.

  Raises:
    TfMpError: `count` is not a positive integer, or the runtime already
      started with fewer CPU devices.
  """
  count = positive_int('count of logical CPUs', count)
  cpus = tf.config.list_physical_devices('CPU')
  configured = tf.config.get_logical_device_configuration(cpus[0])
  if configured is not None and len(configured) >= count:
    return
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
    match_threads_to_devices(count)
    return
  except RuntimeError:
    pass  # The runtime is already initialised; see what it has.
  existing = tf.config.list_logical_devices('CPU')
  if len(existing) < count:
    raise TfMpError(
        f'{count} logical CPU devices are needed but TensorFlow already '
        f'started with {len(existing)} ({_names(existing)}); call '
        f'tf_mp.ensure_logical_cpus({count}) before any tensor is created')


THREADS_ENV = 'TF_MP_CPU_THREADS'
# Naming cpu:k creates logical CPUs up to k, but not absurdly many: a larger k
# is reported as a device that does not exist.
MAX_LOGICAL_CPUS = 256


THREAD_MODES = ('exact', 'tensorflow', 'matched')


def thread_mode() -> str:
  """The thread mode `TF_MP_CPU_THREADS` asks for: one of `THREAD_MODES`, default 'exact'.

  Raises:
    TfMpError: `TF_MP_CPU_THREADS` is none of the modes.
  """
  mode = os.environ.get(THREADS_ENV, 'exact').strip().lower() or 'exact'
  if mode not in THREAD_MODES:
    raise TfMpError(f'{THREADS_ENV}={os.environ[THREADS_ENV]!r}; expected one of '
                    f'{", ".join(THREAD_MODES)}')
  return mode


def match_threads_to_devices(count: int) -> None:
  """Sets TensorFlow's thread pools for `count` logical CPU devices, as `TF_MP_CPU_THREADS` says.

  `exact` (the default): TensorFlow's pool sizes, so every op splits its work
    as in the document's TF1 program and the port equals that program bit for
    bit; but a pool thread that runs out of work sleeps at once instead of
    spinning. The document's ops are small and three devices' ops share two
    cores, so spinning threads take the cores from threads with work
    (docs/benchmarks.md measures what this buys).
  `tensorflow`: TensorFlow's pools exactly as it makes them (threads spin).
  `matched`: one intra-op thread per op and `count` inter-op threads (the
    devices' ops in flight at once), no spinning. Faster still, but it changes
    the last bits: the intra-op pool decides how Eigen splits a matrix
    product, and the hidden layers' weight gradients (x^T dh, summed over the
    batch) round differently with one thread, so the port no longer equals
    the TF1 program as written bit for bit (it equals that program given the
    same pools). More inter-op threads alone change no bits.

  Does nothing when GPUs exist or the runtime has started; the pool sizes are
  left alone when the user set them.

  Raises:
    TfMpError: `TF_MP_CPU_THREADS` is none of the modes.
  """
  mode = thread_mode()
  if mode == 'tensorflow' or tf.config.list_physical_devices('GPU'):
    return
  _stop_spinning()
  threading_config = tf.config.threading
  if mode == 'exact' or (threading_config.get_intra_op_parallelism_threads() or
                         threading_config.get_inter_op_parallelism_threads()):
    return  # TensorFlow's sizes, or the user's own choice.
  try:
    threading_config.set_intra_op_parallelism_threads(1)
    threading_config.set_inter_op_parallelism_threads(max(2, count))
  except RuntimeError:
    pass  # The runtime has started: its pools are fixed.


def _stop_spinning() -> None:
  """Sets `ConfigProto.experimental.disable_thread_spinning` for the runtime to come.

  TensorFlow 2 has no public setter for it; the eager context reads this
  ConfigProto when it starts. Without that private attribute (another
  TensorFlow), or once the runtime has started, pools stay as TensorFlow makes them.
  """
  from tensorflow.core.protobuf import config_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  ctx = context.context()
  if getattr(ctx, '_context_handle', True) is not None or not hasattr(ctx, '_config'):
    return
  config = config_pb2.ConfigProto()
  if ctx._config is not None:  # pylint: disable=protected-access
    config.CopyFrom(ctx._config)  # pylint: disable=protected-access
  config.experimental.disable_thread_spinning = True
  ctx._config = config  # pylint: disable=protected-access


def available_devices() -> list:
  """Canonical names of the logical devices that exist now."""
  return [canonical_device(d.name) for d in tf.config.list_logical_devices()]


def resolve_devices(spec: DeviceSpec = 'auto', count: int = 3,
                    what: str = 'placements') -> list:
  """Turns a device request into `count` checked device names.

  Args:
    spec: `None` (no placement: returns `[None] * count`), `'auto'`, a
      comma-separated string (`'cpu:0,cpu:1,cpu:2'`), or a list of names.
      `auto` picks the GPUs when there are any (round-robin when fewer than
      `count`) and otherwise `count` logical CPU devices. Naming `cpu:k` creates
      the logical CPU devices up to k if the runtime has not started.
    count: how many placements are wanted (one per sub-model or stage). A list
      shorter than `count` is used round-robin; a longer one is refused.
    what: what the placements are for, plural (`'sub-models'`, `'stages'`),
      for the message that refuses a list naming more than `count` devices.

  Returns:
    A list of `count` canonical device names (or `None`s).

  Raises:
    TfMpError: `count` is not a positive integer, `spec` is not a device
      request, names more than `count` devices, or a name is malformed or
      names a device that does not exist.
  """
  count = positive_int('count', count)
  if spec is None:
    return [None] * count
  if isinstance(spec, str) and spec.strip().lower() == 'auto':
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
      names = [f'/device:GPU:{i % len(gpus)}' for i in range(count)]
    else:
      ensure_logical_cpus(count)
      names = [f'/device:CPU:{i}' for i in range(count)]
    return names
  requested = device_list(spec)
  check_device_count(requested, count, what, spec)
  names = [canonical_device(name) for name in requested]
  cpu_indices = [
      tf.DeviceSpec.from_string(n).device_index or 0
      for n in names
      if tf.DeviceSpec.from_string(n).device_type == 'CPU' and
      tf.DeviceSpec.from_string(n).job in (None, 'localhost')
  ]
  if cpu_indices and 0 <= max(cpu_indices) < MAX_LOGICAL_CPUS:
    try:
      ensure_logical_cpus(max(cpu_indices) + 1)
    except TfMpError:
      pass  # Reported below as a missing device, with the list of those that exist.
  check_devices_exist(names, requested)
  return [names[i % len(names)] for i in range(count)]


def device_list(spec) -> list:
  """The names of a comma-separated string or a list/tuple (not yet checked).

  Raises:
    TfMpError: `spec` is neither, or the list is empty.
  """
  if isinstance(spec, str):
    requested = split_device_list(spec)
  elif isinstance(spec, (list, tuple)):
    requested = list(spec)
  else:
    raise TfMpError(f'devices {spec!r} is not a device list; expected e.g. '
                    '"cpu:0,cpu:1,cpu:2", ["gpu:0", "gpu:1"], "auto" or None')
  if not requested:
    raise TfMpError('device list is empty; expected at least one device name')
  return requested


def check_device_count(spec, count: int, what: str = 'placements',
                       as_written=None) -> None:
  """Refuses a device request naming more than `count` devices.

  Fewer are used round-robin; more would be dropped without a word. `'auto'`
  and None pass; a `;`-separated string is checked group by group.

  Args:
    spec: a device list (string or sequence of names), `'auto'` or None.
    count: how many devices are used.
    what: what they are used for, plural (`'sub-models'`, `'stages'`).
    as_written: the request as the user wrote it, for the message.

  Raises:
    TfMpError: naming the list, how many it names and how many are used.
  """
  if spec is None or (isinstance(spec, str) and spec.strip().lower() == 'auto'):
    return
  groups = spec.split(';') if isinstance(spec, str) else [spec]
  for group in groups:
    names = ([n for n in group.split(',') if n.strip()] if isinstance(group, str)
             else list(group))
    if len(names) > count:
      shown = as_written if as_written is not None else group
      shown = shown.strip() if isinstance(shown, str) else ','.join(map(str, shown))
      used = f'{count} is' if count == 1 else f'{count} are'
      raise TfMpError(f'devices {shown!r} name {len(names)} devices but only '
                      f'{used} used (one per {what.rstrip("s")}); '
                      f'expected at most {count}')


def check_devices_exist(names: Sequence[str],
                        as_written: Optional[Sequence[str]] = None) -> None:
  """Raises TfMpError naming the first device that does not exist locally."""
  existing = tf.config.list_logical_devices()
  existing_specs = {device_key(d.name) for d in existing}
  jobs = {tf.DeviceSpec.from_string(d.name).job for d in existing}
  for i, name in enumerate(names):
    spec = tf.DeviceSpec.from_string(name)
    shown = as_written[i] if as_written else name
    if spec.job not in (None, 'localhost'):
      if spec.job not in jobs:
        raise TfMpError(f'device {shown!r} is on job {spec.job!r}, but this '
                        'process is in no cluster with that job (its devices: '
                        f'{_names(existing)}); expected a local device such as '
                        '"cpu:0", or strategy multi_worker for a cluster')
      continue  # A device of the cluster: only the cluster can say more.
    # This process is replica 0, task 0 of localhost; another one of either
    # was an "unknown device" error at the first tensor.
    for field in ('replica', 'task'):
      value, ours = getattr(spec, field), sorted(_local_fields(existing, field))
      if value is not None and ours and value not in ours:
        raise TfMpError(f'device {shown!r} names {field} {value} of job localhost, but '
                        f'this process is {field} {", ".join(map(str, ours))}; expected '
                        'a local device such as "cpu:0"')
    if device_key(name) not in existing_specs:
      raise TfMpError(f'device {shown!r} does not exist; this machine has: '
                      f'{_names(existing)}')


def _local_fields(existing, field: str) -> set:
  """The replica or task numbers of this process's own (localhost) devices."""
  specs = [tf.DeviceSpec.from_string(d.name) for d in existing]
  return {getattr(s, field) or 0 for s in specs if s.job in (None, 'localhost')}


def device_key(name: str) -> tuple:
  """`('CPU', 1)` for any spelling of CPU:1 (job and task ignored), to compare devices."""
  spec = tf.DeviceSpec.from_string(name)
  return (spec.device_type, spec.device_index or 0)


def short_device_name(name: Optional[str], unplaced: str = '-') -> str:
  """`'cpu:1'` for any spelling of CPU:1, as the reports print it; `unplaced` for None."""
  if not name:
    return unplaced
  spec = tf.DeviceSpec.from_string(name)
  return f'{spec.device_type.lower()}:{spec.device_index or 0}'


def _names(devices) -> str:
  return ', '.join(short_device_name(d.name) for d in devices) or 'none'


# Per-thread device remapping; MirroredStrategy runs each replica in a thread.
_REMAP = threading.local()


def device_scope(device: Optional[str]):
  """`tf.device(device)`, or nothing when `device` is None.

  Inside `remapped_devices(mapping)`, a device named in `mapping` is replaced
  by its entry, so a model built for one device group can run on another.
  """
  mapping = getattr(_REMAP, 'mapping', None)
  if device and mapping:
    device = mapping.get(device, device)
  return tf.device(device) if device else contextlib.nullcontext()


@contextlib.contextmanager
def remapped_devices(mapping: Dict[str, str]):
  """Within the block (this thread only), `device_scope(a)` places on `mapping[a]`.

  Used by the mirrored strategies: each replica runs the same modules, whose
  `device` attributes name the first group, on its own group of devices.
  Keys and values are canonical names (`tf_mp.canonical_device`).
  """
  previous = getattr(_REMAP, 'mapping', None)
  _REMAP.mapping = dict(mapping)
  try:
    yield
  finally:
    _REMAP.mapping = previous


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
  group_size = positive_int('group_size', group_size)
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
    items = device_list(spec)
    if items and all(isinstance(item, str) for item in items):
      raw_groups = _cut(items, group_size, ','.join(items))
    else:
      raw_groups = [device_list(group) for group in items]
  if not raw_groups:
    raise TfMpError('device groups are empty; expected at least one group')
  make_cpus_for(name for group in raw_groups for name in group)
  groups = [resolve_devices(group, group_size, 'sub-models') for group in raw_groups]
  owner = {}
  for index, group in enumerate(groups):
    for device in set(group):
      if device in owner:
        raise TfMpError(f'device {short_device_name(device)} is in group {owner[device] + 1} '
                        f'and group {index + 1}; expected disjoint groups')
      owner[device] = index
  return groups


def make_cpus_for(names) -> None:
  """Creates the logical CPUs up to the highest local `cpu:k` named, at once.

  `resolve_devices` starts the runtime when it checks a group, so the devices
  of all groups must be created before the first group is checked.
  """
  highest = -1
  for name in names:
    spec = tf.DeviceSpec.from_string(canonical_device(name))
    if spec.device_type == 'CPU' and spec.job in (None, 'localhost'):
      highest = max(highest, spec.device_index or 0)
  if 0 <= highest < MAX_LOGICAL_CPUS:
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
