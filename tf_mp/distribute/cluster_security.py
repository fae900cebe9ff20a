"""What a multi-worker process exposes on the network, said in one line.

TensorFlow 2.21 starts one gRPC server per worker (`MultiWorkerMirroredStrategy`
calls `enable_collective_ops`, which builds a `GrpcServer`). That server:

* listens on **every interface**: `GrpcServer::Init` in
  tensorflow/core/distributed_runtime/rpc/grpc_server_lib.cc calls
  `builder.AddListeningPort(strings::StrCat("0.0.0.0:", requested_port), ...)`;
  only the port comes from the cluster spec (or `ServerDef.port`), the host
  part of the task's address is used for naming, never for binding. `ServerDef`
  has no address field (`cluster, job_name, replica, task_index,
  default_session_config, protocol, port, cluster_device_filters`), the only
  protocol registered is "grpc", and no environment variable changes the host
  (`TF_GRPC_REUSE_PORT` only toggles SO_REUSEPORT). gRPC turns the 0.0.0.0
  wildcard into a dual-stack `[::]` socket, so `ss -ltn` shows `*:PORT`.
* uses `InsecureServerCredentials()`: no authentication, no encryption.

So this project cannot narrow the listening address; it says so at the start
of every multi-worker run (`warn_exposure`) and docs/security.md says where the
trust boundary is. `listening_sockets` reads what a process really listens on,
so tests check the line against the kernel's view rather than against this
comment.
"""

import dataclasses
import ipaddress
import os
import sys
from typing import List, Optional, TextIO, Union

# The host TensorFlow's GrpcServer binds, whatever the cluster spec says (see
# the module docstring for the source line).
TF_GRPC_LISTEN_HOST = '0.0.0.0'

SECURITY_DOC = 'docs/security.md'


@dataclasses.dataclass(frozen=True)
class ListeningSocket:
  """One TCP socket in LISTEN state: its local address and port."""
  host: str  # '0.0.0.0', '::', '127.0.0.1', ...
  port: int

  @property
  def is_wildcard(self) -> bool:
    """True when it accepts connections on every interface."""
    return ipaddress.ip_address(self.host).is_unspecified

  @property
  def is_loopback(self) -> bool:
    address = ipaddress.ip_address(self.host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
      address = address.ipv4_mapped
    return address.is_loopback


def _decode_address(text: str) -> str:
  """`0100007F` -> '127.0.0.1'; 32 hex digits -> an IPv6 address (/proc order)."""
  raw = bytes.fromhex(text)
  # /proc/net/tcp* prints each 32-bit word in host (little-endian) order.
  words = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
  return str(ipaddress.ip_address(words))


def listening_sockets(pid: Union[int, str] = 'self') -> List[ListeningSocket]:
  """The TCP sockets in LISTEN state that process `pid` holds (Linux /proc).

  Matches the socket inodes among `/proc/<pid>/fd` with the LISTEN rows
  (state 0A) of `/proc/<pid>/net/tcp` and `tcp6`.

  Args:
    pid: a process id, or 'self'.

  Returns:
    The listening sockets, sorted by port then host.

  Raises:
    OSError: /proc cannot be read for that process (not Linux, or no rights).
  """
  inodes = set()
  fd_dir = f'/proc/{pid}/fd'
  for name in os.listdir(fd_dir):
    try:
      target = os.readlink(os.path.join(fd_dir, name))
    except OSError:
      continue  # Closed meanwhile.
    if target.startswith('socket:['):
      inodes.add(target[len('socket:['):-1])
  found = set()
  for table in ('tcp', 'tcp6'):
    try:
      with open(f'/proc/{pid}/net/{table}') as f:
        rows = f.read().splitlines()[1:]
    except FileNotFoundError:
      continue  # No IPv6 on this machine.
    for row in rows:
      fields = row.split()
      if len(fields) < 10 or fields[3] != '0A' or fields[9] not in inodes:
        continue
      host, port = fields[1].split(':')
      found.add(ListeningSocket(_decode_address(host), int(port, 16)))
  return sorted(found, key=lambda s: (s.port, s.host))


def exposure_line(task) -> str:
  """The one-line warning for this task of a multi-worker cluster.

  Args:
    task: a `ClusterTask` (from `parse_tf_config`).

  Returns:
    E.g. `tf_mp: warning: this worker's TensorFlow gRPC server listens on port
    12345 on all network interfaces (0.0.0.0 and [::]), although TF_CONFIG names
    127.0.0.1:12345 ...`, one line.
  """
  address = task.cluster[task.task_type][task.task_index]
  host, _, port = address.rpartition(':')
  peers = [a for job in task.cluster for i, a in enumerate(task.cluster[job])
           if (job, i) != (task.task_type, task.task_index)]
  narrower = ''
  if host.strip('[]') not in ('0.0.0.0', '::', '*'):
    narrower = (f', although TF_CONFIG names {address} (TensorFlow 2.21 binds '
                'every interface and has no option to bind one address)')
  to = f' to the {len(peers)} other worker(s)' if peers else ''
  return (f"tf_mp: warning: this worker's TensorFlow gRPC server listens on port "
          f'{port} on all network interfaces (0.0.0.0 and [::]){narrower}; its '
          'connections are unauthenticated and unencrypted, so anyone who can '
          'reach the port can run TensorFlow ops with your rights: run the '
          f'cluster only on a trusted network and keep the port firewalled except'
          f'{to or " for the cluster"} (see {SECURITY_DOC})')


def warn_exposure(task, stream: Optional[TextIO] = None) -> str:
  """Writes `exposure_line(task)` to `stream` (stderr) and returns it."""
  line = exposure_line(task)
  stream = stream or sys.stderr
  stream.write(line + '\n')
  stream.flush()
  return line
