"""Checks the CUDA concat kernel on a GPU, without TensorFlow.

Builds `tf_mp/ops/concat_kernel.cu` with `tools/gpu_check_harness.cu` into one
shared object (nvcc, CUDA runtime linked statically), loads it with ctypes, and

1. for several shapes (1 to 40 inputs, zero widths, zero rows, misaligned
   pointers) and float32, float16, float64 and bfloat16 (as uint16 bit
   patterns), fills the inputs with fresh random bits, poisons the output,
   runs the kernel and compares the output with numpy's concatenate bit for
   bit;
2. times the kernel against a device-to-device copy of the same bytes
   (GB/s of bytes read plus written, medians of 5 timings).

With --emulate it runs step 1 on the host instead, through
`TfMpConcatHostEmulation`: the kernel's own per-element function, chunk choice
and batching, without a GPU (it does not check the launch itself, the 32-bit
index path or timing).

Needs numpy and an NVIDIA driver, not TensorFlow (so no absl either: plain
argparse). Exit status: 0 all equal, 1 a mismatch, 2 no GPU or no library.

  python tools/gpu_check.py                       # build if needed, check
  python tools/gpu_check.py --build_only          # on a machine with nvcc
  python tools/gpu_check.py --emulate             # no GPU needed
  python tools/gpu_check.py --library build/gpu_check/libconcat_gpu_check.so
"""

import argparse
import ctypes
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = os.path.join(ROOT, 'tf_mp', 'ops', 'concat_kernel.cu')
HEADER = os.path.join(ROOT, 'tf_mp', 'ops', 'concat_kernel.h')
HARNESS = os.path.join(ROOT, 'tools', 'gpu_check_harness.cu')
DEFAULT_BUILD_DIR = os.path.join(ROOT, 'build', 'gpu_check')
LIBRARY_NAME = 'libconcat_gpu_check.so'
GENCODES_FILE = os.path.join(ROOT, 'tf_mp', 'ops', 'gencodes.py')


def _load_gencodes():
  """The op build's list, loaded by path: importing tf_mp needs TensorFlow."""
  spec = importlib.util.spec_from_file_location('_tf_mp_gencodes',
                                                GENCODES_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.GENCODES


GENCODES = _load_gencodes()

# name -> (numpy dtype of the bit patterns, dtype name shown)
DTYPES = {
    'float32': np.uint32,
    'float16': np.uint16,
    'float64': np.uint64,
    'bfloat16': np.uint16,
}

# (rows, widths in elements, misaligned inputs)
CASES = (
    (1, (1,), False),
    (7, (3, 0, 5), False),
    (64, (64, 64, 64), False),
    (1000, (1, 13, 2, 0, 5), False),
    (257, (5, 11, 3), True),
    (3, (1,) * 40, False),  # more than 32 inputs: two launches
    (4096, (1024, 1024, 1024), False),
    (0, (4, 4), False),
    (5, (0, 0), False),
)

# Rows of three float32 inputs [rows, cols] each, for the timing table.
TIMING_SHAPES = ((64, 64), (256, 256), (1024, 1024), (4096, 1024),
                 (16384, 1024))
POISON = 0xA5


class CheckError(Exception):
  """A CUDA call failed or the GPU is missing."""


def build(build_dir: str, nvcc: str) -> str:
  """Compiles the harness unless it is newer than its sources; returns it."""
  library = os.path.join(build_dir, LIBRARY_NAME)
  sources = (KERNEL, HEADER, HARNESS, GENCODES_FILE)
  if (os.path.exists(library) and
      os.path.getmtime(library) > max(map(os.path.getmtime, sources))):
    return library
  os.makedirs(build_dir, exist_ok=True)
  staging = library + '.tmp'
  command = [nvcc, '-shared', '-O3', '-Xcompiler', '-fPIC', '--cudart=static',
             *[f'-gencode={g}' for g in GENCODES],
             '-I', os.path.dirname(KERNEL), KERNEL, HARNESS, '-o', staging]
  proc = subprocess.run(command, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise CheckError(f'nvcc failed (exit {proc.returncode}): '
                     f'{" ".join(command)}\n{proc.stdout}{proc.stderr}')
  os.replace(staging, library)
  return library


class Gpu:
  """The harness library, with errors turned into CheckError."""

  def __init__(self, library: str):
    self.lib = ctypes.CDLL(library)
    self.lib.gc_error_string.restype = ctypes.c_char_p
    self.lib.gc_malloc.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                   ctypes.c_size_t]
    for name in ('gc_to_device', 'gc_to_host'):
      getattr(self.lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_size_t]
    self.lib.gc_fill.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                 ctypes.c_size_t]
    self.lib.gc_free.argtypes = [ctypes.c_void_p]
    pointers = ctypes.POINTER(ctypes.c_void_p)
    widths = ctypes.POINTER(ctypes.c_int64)
    self.lib.gc_concat.argtypes = [pointers, widths, ctypes.c_int,
                                   ctypes.c_int64, ctypes.c_void_p]
    self.lib.gc_time.argtypes = [pointers, widths, ctypes.c_int,
                                 ctypes.c_int64, ctypes.c_void_p, ctypes.c_int,
                                 ctypes.c_int, ctypes.POINTER(ctypes.c_float)]

  def call(self, name: str, *args) -> None:
    error = getattr(self.lib, name)(*args)
    if error != 0:
      text = self.lib.gc_error_string(error).decode()
      raise CheckError(f'{name} failed: {text} (cudaError {error})')

  def device(self) -> str:
    count = ctypes.c_int(0)
    error = self.lib.gc_device_count(ctypes.byref(count))
    if error != 0 or count.value == 0:
      why = (self.lib.gc_error_string(error).decode() if error
             else 'no devices')
      runtime = ctypes.c_int(0)
      self.lib.gc_runtime_version(ctypes.byref(runtime))
      raise CheckError(
          f'no usable CUDA GPU: cudaGetDeviceCount says "{why}" (this check '
          'needs an NVIDIA GPU and a driver for CUDA '
          f'{runtime.value // 1000}.{runtime.value % 1000 // 10} or newer)')
    name = ctypes.create_string_buffer(256)
    self.call('gc_device_name', 0, name, 256)
    return f'{name.value.decode()} ({count.value} visible)'

  def alloc(self, nbytes: int) -> int:
    pointer = ctypes.c_void_p()
    self.call('gc_malloc', ctypes.byref(pointer), nbytes)
    return pointer.value

  def free(self, pointer: int) -> None:
    self.call('gc_free', pointer)


class HostEmulation(Gpu):
  """The same calls on host memory, the concat by TfMpConcatHostEmulation."""

  def __init__(self, library: str):
    super().__init__(library)
    self.lib.TfMpConcatHostEmulation.argtypes = (
        self.lib.gc_concat.argtypes)
    self._buffers = {}

  def device(self) -> str:
    return 'none: host emulation of the kernel (--emulate)'

  def alloc(self, nbytes: int) -> int:
    buffer = np.empty(nbytes + 16, np.uint8)
    address = buffer.ctypes.data + (-buffer.ctypes.data) % 16
    self._buffers[address] = buffer
    return address

  def free(self, pointer: int) -> None:
    del self._buffers[pointer]

  def call(self, name: str, *args) -> None:
    if name in ('gc_to_device', 'gc_to_host'):
      ctypes.memmove(*args)
    elif name == 'gc_fill':
      ctypes.memset(*args)
    elif name == 'gc_concat':
      super().call('TfMpConcatHostEmulation', *args)
    else:
      raise CheckError(f'{name} is not available in --emulate mode')


def _arrays(pointers, row_bytes):
  return ((ctypes.c_void_p * max(1, len(pointers)))(*pointers),
          (ctypes.c_int64 * max(1, len(row_bytes)))(*row_bytes))


def check_case(gpu: Gpu, rng, rows: int, widths, misaligned: bool,
               dtype: str) -> bool:
  """Runs one concat on the GPU; True when it matches numpy bit for bit."""
  bits = DTYPES[dtype]
  size = np.dtype(bits).itemsize
  hosts = [rng.integers(0, np.iinfo(bits).max, size=(rows, w), dtype=bits,
                        endpoint=True) for w in widths]
  expected = np.concatenate(hosts, axis=-1)
  shift = size if misaligned else 0  # breaks the 16-byte alignment
  buffers, pointers = [], []
  out = None
  try:
    for host in hosts:
      base = gpu.alloc(host.nbytes + shift)
      buffers.append(base)
      pointers.append(base + shift)
      if host.nbytes:
        gpu.call('gc_to_device', base + shift, host.ctypes.data, host.nbytes)
    out = gpu.alloc(expected.nbytes + shift)
    gpu.call('gc_fill', out, POISON, expected.nbytes + shift)
    inputs, row_bytes = _arrays(pointers, [w * size for w in widths])
    gpu.call('gc_concat', inputs, row_bytes, len(widths), rows, out + shift)
    got = np.full_like(expected, 0)
    if expected.nbytes:
      gpu.call('gc_to_host', got.ctypes.data, out + shift, expected.nbytes)
    return got.tobytes() == expected.tobytes()
  finally:
    for base in buffers:
      gpu.free(base)
    if out is not None:
      gpu.free(out)


def time_case(gpu: Gpu, rng, rows: int, cols: int):
  """GB/s (read + written) of the concat and of a copy of the same bytes."""
  nbytes = rows * cols * 4
  inputs = [gpu.alloc(nbytes) for _ in range(3)]
  source = gpu.alloc(3 * nbytes)
  out = gpu.alloc(3 * nbytes)
  try:
    data = rng.integers(0, 2**32, size=rows * cols, dtype=np.uint32)
    for pointer in inputs:
      gpu.call('gc_to_device', pointer, data.ctypes.data, nbytes)
    iterations = int(max(10, min(2000, 4e9 // (6 * nbytes))))
    concat_args = _arrays(inputs, [cols * 4] * 3) + (3, rows, out)
    copy_args = _arrays([source], [3 * cols * 4]) + (1, rows, out)
    results = []
    for copy, args in ((0, concat_args), (1, copy_args)):
      timings = []
      for _ in range(5):
        ms = ctypes.c_float()
        gpu.call('gc_time', *args, copy, iterations, ctypes.byref(ms))
        timings.append(ms.value)
      results.append(2 * 3 * nbytes / (statistics.median(timings) * 1e-3) /
                     1e9)
    return results
  finally:
    for pointer in inputs + [source, out]:
      gpu.free(pointer)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--library', help='a prebuilt harness library')
  parser.add_argument('--build_dir', default=DEFAULT_BUILD_DIR)
  parser.add_argument('--nvcc', default=os.environ.get('NVCC', 'nvcc'))
  parser.add_argument('--build_only', action='store_true',
                      help='build the harness and stop')
  parser.add_argument('--emulate', action='store_true',
                      help='check the kernel logic on the host, no GPU')
  parser.add_argument('--seed', type=int, default=None,
                      help='seed of the random data (default: fresh)')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    library = args.library
    if library is None:
      nvcc = shutil.which(args.nvcc)
      prebuilt = os.path.join(args.build_dir, LIBRARY_NAME)
      if nvcc:
        library = build(args.build_dir, nvcc)
      elif os.path.exists(prebuilt):
        library = prebuilt
      else:
        raise CheckError(f'nvcc ({args.nvcc}) not found and no {prebuilt}; '
                         'build it with --build_only where nvcc exists')
    print(f'harness: {os.path.relpath(library, ROOT)}')
    if args.build_only:
      return 0
    gpu = HostEmulation(library) if args.emulate else Gpu(library)
    print(f'device: {gpu.device()}')
    seed = (args.seed if args.seed is not None
            else int(np.random.SeedSequence().entropy % 2**32))
    print(f'seed: {seed}')
    rng = np.random.default_rng(seed)

    failures = 0
    print(f'\n{"rows":>6}  {"widths":<22} {"misaligned":<10} ' +
          ' '.join(f'{d:<8}' for d in DTYPES))
    for rows, widths, misaligned in CASES:
      shown = (f'{len(widths)} x 1' if len(set(widths)) == 1 and
               len(widths) > 5 else ','.join(map(str, widths)))
      results = []
      for dtype in DTYPES:
        ok = check_case(gpu, rng, rows, widths, misaligned, dtype)
        failures += not ok
        results.append('equal' if ok else 'DIFFERS')
      print(f'{rows:>6}  {shown:<22} {str(misaligned):<10} ' +
            ' '.join(f'{r:<8}' for r in results))

    if not args.emulate:
      print('\nthree float32 inputs [rows, cols] each; GB/s = bytes read + '
            'written per second, median of 5')
      print(f'{"inputs":>14}  {"out MB":>8}  {"concat GB/s":>11}  '
            f'{"copy GB/s":>9}  {"concat/copy":>11}')
    for rows, cols in () if args.emulate else TIMING_SHAPES:
      concat, copy = time_case(gpu, rng, rows, cols)
      print(f'{f"{rows}x{cols}":>14}  {3 * rows * cols * 4 / 2**20:>8.2f}  '
            f'{concat:>11.1f}  {copy:>9.1f}  {concat / copy:>11.2f}')
  except (CheckError, OSError) as e:
    print(f'gpu_check: {e}', file=sys.stderr)
    return 2
  print(f'\n{"all equal" if not failures else f"{failures} MISMATCHES"} '
        f'({time.perf_counter() - start:.1f} s)')
  return 0 if not failures else 1


if __name__ == '__main__':
  sys.exit(main())
