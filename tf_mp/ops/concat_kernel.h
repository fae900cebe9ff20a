// The CUDA concat kernel's C interface: raw pointers, byte widths and a stream.
//
// Both the TensorFlow kernel (concat_op.cc, built with -DGOOGLE_CUDA=1) and
// the TensorFlow-free GPU check (tools/gpu_check.py) call the kernel through
// this header, so neither needs the other's headers: concat_kernel.cu
// includes CUDA headers only, concat_op.cc includes TensorFlow headers only.

#ifndef TF_MP_OPS_CONCAT_KERNEL_H_
#define TF_MP_OPS_CONCAT_KERNEL_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Joins `num_inputs` row-major matrices on their last axis, on the GPU.
//
// Input j is `rows` rows of `row_bytes[j]` bytes each at device address
// `inputs[j]`; the output is `rows` rows of sum(row_bytes) bytes at `output`.
// Inputs with `row_bytes[j] == 0` are allowed (and ignored). The copy is
// enqueued on `stream` (a cudaStream_t; NULL for the legacy default stream)
// in one kernel launch per 32 inputs, so the usual 2-5 inputs take one launch.
// The copy is byte-exact, so one kernel serves every dtype.
//
// Returns 0 (cudaSuccess) or the cudaError_t of the failed launch; see
// TfMpConcatGpuErrorString.
int TfMpConcatGpu(const void* const* inputs, const int64_t* row_bytes,
                  int num_inputs, int64_t rows, void* output, void* stream);

// The same copy done on the host, element by element, through the very
// function each GPU thread runs (with 64-bit indices) and the same chunk
// choice and batching into launches: lets tools/gpu_check.py --emulate check
// the kernel's index arithmetic on a machine without a GPU. Host pointers;
// calls no CUDA API. Returns 0.
int TfMpConcatHostEmulation(const void* const* inputs,
                            const int64_t* row_bytes, int num_inputs,
                            int64_t rows, void* output);

// 0 when this CUDA runtime (linked statically, so of nvcc's version) finds a
// GPU through the installed driver; else the cudaError_t, e.g.
// cudaErrorInsufficientDriver for a driver older than the runtime. The loader
// calls it (from a library without TensorFlow) before choosing the GPU build.
int TfMpConcatGpuProbe(void);

// The text of a cudaError_t returned by TfMpConcatGpu or TfMpConcatGpuProbe.
const char* TfMpConcatGpuErrorString(int error);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // TF_MP_OPS_CONCAT_KERNEL_H_
