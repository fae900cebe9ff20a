"""Waiting for the other workers of a cluster: said, bounded, interruptible.

`tf.distribute.MultiWorkerMirroredStrategy(...)` blocks until every task of
the cluster has registered with the coordination service: inside
`context.ensure_initialized()` (`TFE_EnableCollectiveOps`), a C++ call that
holds the GIL. While it blocks no Python code runs, in any thread: no progress
line, no timeout, and no signal handler (SIGINT only sets a flag; TensorFlow
installs its own SIGTERM handler, which records the signal and returns). Its
own register timeout does not help: on worker 0, the coordination leader,
`cluster_register_timeout_in_ms` is not applied (measured: worker 1 gave up
after twice the value, worker 0 waited until killed).

So the waiting happens *before* that call, in Python: each worker listens on
its own port with a placeholder socket (bound to its own address from
TF_CONFIG, not to every interface), then polls the other workers' ports until
each has accepted a TCP connection once: from its placeholder or, if it got
there first, from its TensorFlow server. Then it closes the placeholder and
creates the strategy, which finds every peer started and returns at once.
Every worker sees every other listening at some point, so none waits forever
for one that is itself waiting.

A peer that dies between its placeholder and its registration can still leave
a worker blocked inside TensorFlow; `faulthandler`'s C watchdog (`backstop`)
then ends the process with status 1 after the remaining time.
"""

import contextlib
import errno
import faulthandler
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, List, Optional, Sequence, TextIO, Tuple

from tf_mp.errors import TfMpError

ANNOUNCE_AFTER_S = 2.0  # Say that we wait once a peer is missing this long.
POLL_S = 0.25
CONNECT_TIMEOUT_S = 0.5
SIGNAL_EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class PeerWaitInterrupted(TfMpError):
  """SIGINT or SIGTERM arrived while waiting; `exit_status` is 130 or 143."""

  def __init__(self, signum: int, missing: Sequence[str]):
    name = signal.Signals(signum).name
    super().__init__(f'interrupted by {name} while waiting for the other workers '
                     f'({", ".join(missing) or "none missing"}); nothing was '
                     'started')
    self.signum = signum
    self.exit_status = SIGNAL_EXIT_STATUS.get(signum, 128 + signum)


def check_peer_timeout(value) -> Optional[float]:
  """Returns `value` as seconds (None or 0: no limit) or raises TfMpError."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      value >= 0) or value == float('inf'):
    raise TfMpError(f'peer timeout must be a finite number of seconds >= 0 '
                    f'(0: wait forever), got {value!r}')
  return float(value) or None


def reclaim_sigterm() -> None:
  """Puts the process's SIGTERM handler back after the strategy has started.

  Starting the multi-worker runtime installs a C++ SIGTERM handler that only
  records the signal (for TensorFlow's preemption handling, unused here): a
  SIGTERM during training was ignored. Python still believes its own handler
  is in place; this installs it again. Main thread only (elsewhere: nothing).
  """
  if threading.current_thread() is not threading.main_thread():
    return
  handler = signal.getsignal(signal.SIGTERM)
  if handler is not None:  # None: installed outside Python, leave it.
    signal.signal(signal.SIGTERM, handler)


def _split(address: str) -> Tuple[str, int]:
  host, _, port = address.rpartition(':')
  return host.strip('[]'), int(port)


def peer_addresses(task) -> List[Tuple[str, str]]:
  """`[(name, 'host:port')]` of every task of the cluster but this one."""
  return [(f'{job}:{index}', address)
          for job in sorted(task.cluster)
          for index, address in enumerate(task.cluster[job])
          if (job, index) != (task.task_type, task.task_index)]


def is_listening(address: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
  """True when a TCP connection to 'host:port' is accepted within `timeout`."""
  try:
    with socket.create_connection(_split(address), timeout=timeout):
      return True
  except OSError:
    return False


def _placeholder(address: str) -> socket.socket:
  """Listens on this task's own port, on its own host when that is local."""
  host, port = _split(address)
  families = []
  try:
    families = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  except socket.gaierror:
    pass
  candidates = [(f, a) for f, _, _, _, a in families] + [(socket.AF_INET, ('', port))]
  for family, sockaddr in candidates:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      sock.bind(sockaddr)
    except OSError as e:
      sock.close()
      if e.errno == errno.EADDRINUSE:
        raise TfMpError(f'port {port} of this worker ({address} in TF_CONFIG) is '
                        'already in use by another process; expected a free '
                        'port') from None
      continue  # Not an address of this machine (NAT, a name): try the next.
    sock.listen(16)
    return sock
  raise TfMpError(f'cannot listen on port {port} of this worker ({address} in '
                  'TF_CONFIG); expected a free port on this machine')


@contextlib.contextmanager
def _signals_raise(missing: Callable[[], Sequence[str]]):
  """SIGINT/SIGTERM raise PeerWaitInterrupted inside the block (main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    del frame
    raise PeerWaitInterrupted(signum, missing())

  saved = {s: signal.signal(s, handler) for s in SIGNAL_EXIT_STATUS}
  try:
    yield
  finally:
    for s, old in saved.items():
      signal.signal(s, old)


def wait_for_peers(task,
                   timeout: Optional[float] = 120,
                   *,
                   announce_after: float = ANNOUNCE_AFTER_S,
                   stream: Optional[TextIO] = None,
                   clock: Callable[[], float] = time.monotonic) -> float:
  """Blocks until every other worker of the cluster listens on its port.

  Args:
    task: this process's `ClusterTask`.
    timeout: seconds to wait in all (None or 0: no limit).
    announce_after: print one line to `stream` once a peer has been missing
      this long: which tasks, at which addresses, and for how long we wait.
    stream: where the waiting line goes (stderr).
    clock: a monotonic clock (seconds).

  Returns:
    The seconds left of `timeout` (None when there is no limit), for
    `backstop`.

  Raises:
    TfMpError: this worker's port is taken, or a peer did not appear within
      `timeout` (one line naming the missing tasks and addresses).
    PeerWaitInterrupted: SIGINT or SIGTERM arrived while waiting.
  """
  timeout = check_peer_timeout(timeout)
  stream = stream or sys.stderr
  peers = peer_addresses(task)
  start = clock()
  if not peers:
    return timeout
  own = task.cluster[task.task_type][task.task_index]
  pending = dict(peers)
  describe = lambda: [f'{name} at {address}' for name, address in pending.items()]
  announced = False
  with contextlib.closing(_placeholder(own)), _signals_raise(describe):
    while True:
      for name, address in list(pending.items()):
        if is_listening(address):
          del pending[name]
      if not pending:
        break
      waited = clock() - start
      if timeout is not None and waited >= timeout:
        raise TfMpError(
            f'gave up after {timeout:g}s waiting for {len(pending)} of '
            f'{len(peers)} other worker(s) to start: {", ".join(describe())} '
            'never answered; start every worker of the TF_CONFIG cluster within '
            'the peer timeout, or raise it (--peer_timeout)')
      if not announced and waited >= announce_after:
        limit = f'giving up after {timeout:g}s' if timeout else 'no time limit'
        stream.write(f'tf_mp: waiting for {len(pending)} of {len(peers)} other '
                     f'worker(s) to start: {", ".join(describe())} ({limit}; '
                     'Ctrl-C to stop)\n')
        stream.flush()
        announced = True
      time.sleep(POLL_S)
  return None if timeout is None else max(timeout - (clock() - start), 0.0)


@contextlib.contextmanager
def backstop(seconds: Optional[float], grace: float = 30.0):
  """Ends the process with status 1 if the block runs `seconds + grace` longer.

  For the TensorFlow call that waits for peers while holding the GIL: no Python
  thread can interrupt it, `faulthandler`'s watchdog is a C thread. Its
  traceback goes to /dev/null.
  """
  if seconds is None:
    yield
    return
  with open(os.devnull, 'w') as devnull:
    faulthandler.dump_traceback_later(seconds + grace, exit=True, file=devnull)
    try:
      yield
    finally:
      faulthandler.cancel_dump_traceback_later()
