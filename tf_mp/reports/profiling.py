"""Reading TensorFlow profiler traces: the host events of a `tf.profiler` window.

Shared by the pipeline's per-device time report and the strategies benchmark.
"""

import glob
import os
from typing import List, Tuple

from tf_mp.errors import TfMpError


def load_trace(logdir: str):
  """The newest profiler trace (`XSpace`) written under `logdir`."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True),
                 key=os.path.getmtime)
  if not files:
    raise TfMpError(f'the profiler wrote no .xplane.pb under {logdir}')
  space = xplane_pb2.XSpace()
  with open(files[-1], 'rb') as f:
    space.ParseFromString(f.read())
  return space


def host_events(space) -> List[Tuple[str, float, float]]:
  """(event name, start ns, end ns) of every host-plane event."""
  events = []
  for plane in space.planes:
    if not plane.name.startswith('/host:'):
      continue
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        start = line.timestamp_ns + event.offset_ps / 1e3
        events.append((names.get(event.metadata_id, ''), start,
                       start + event.duration_ps / 1e3))
  return events


def union_duration(intervals: List[Tuple[float, float]]) -> float:
  """Total length covered by possibly overlapping (start, end) intervals."""
  total, end = 0.0, -float('inf')
  for a, b in sorted(intervals):
    if b <= end:
      continue
    total += b - max(a, end)
    end = b
  return total
