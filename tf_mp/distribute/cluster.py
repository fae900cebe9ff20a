"""A multi-worker cluster as `TF_CONFIG` describes it: parsing and checking."""

import contextlib
import dataclasses
import json
import socket
from typing import Optional

from tf_mp.checks import non_negative_int, short_repr
from tf_mp.errors import TfMpError


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


def parse_tf_config(text: Optional[str]) -> ClusterTask:
  """Checks a `TF_CONFIG` value and returns the task it describes.

  Expected: `{"cluster": {"worker": ["host:port", ...]}, "task": {"type":
  "worker", "index": i}}` (a `chief` job is allowed too).

  Raises:
    TfMpError: the value is missing, not JSON, or not of that form, or two
      tasks share an address.
  """
  example = ('expected e.g. {"cluster": {"worker": ["127.0.0.1:12345", '
             '"127.0.0.1:12346"]}, "task": {"type": "worker", "index": 0}}')
  if text is not None and not isinstance(text, str):
    raise TfMpError(f'TF_CONFIG must be a JSON string, got {short_repr(text)}; '
                    f'{example}')
  if text is None or not text.strip():
    raise TfMpError(f'strategy multi_worker needs the TF_CONFIG environment '
                    f'variable; it is not set; {example}')
  try:
    config = json.loads(text)
  except RecursionError:
    raise TfMpError(f'TF_CONFIG {_clip(text)!r} is nested too deeply to parse; '
                    f'{example}') from None
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
  tasks_at = {}
  for job, addresses in cluster.items():
    for index, address in enumerate(addresses):
      other = tasks_at.setdefault(address, f'{job}:{index}')
      if other != f'{job}:{index}':
        raise TfMpError(f'TF_CONFIG tasks {other} and {job}:{index} have the same '
                        f'address {address}; expected one address (host:port) per task')
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


def free_loopback_ports(count: int) -> list:
  """`count` distinct ports on 127.0.0.1 that were free a moment ago.

  For a one-machine cluster (tools/run_local_cluster.py, the tests): the ports
  are released before they are returned, so another process may take one in
  between; the workers then fail to start with a clear error.
  """
  count = non_negative_int('count of ports', count)
  try:
    with contextlib.ExitStack() as stack:
      sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
      for s in sockets:
        s.bind(('127.0.0.1', 0))
      return [s.getsockname()[1] for s in sockets]
  except OSError as e:
    # How many sockets a process may open (and how many ports are free) is
    # only known by trying.
    raise TfMpError(f'cannot reserve {count} loopback ports ({e.strerror}); '
                    'expected a count this process can open') from None
