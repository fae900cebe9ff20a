"""The GPUs the CUDA concat kernel is compiled for: one list for two builds.

`tf_mp/ops/build.py` (the op) and `tools/gpu_check.py` (the kernel alone) both
pass these to nvcc. This file imports nothing: `tools/gpu_check.py` loads it
by path, so that it runs without TensorFlow.
"""

# SASS for A100 (sm_80), H100/H200 (sm_90) and B200 (sm_100), plus compute_90
# PTX that the driver can JIT for newer GPUs.
GENCODES = ('arch=compute_80,code=sm_80', 'arch=compute_90,code=sm_90',
            'arch=compute_100,code=sm_100', 'arch=compute_90,code=compute_90')
