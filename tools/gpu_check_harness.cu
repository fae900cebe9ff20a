// C entry points around tf_mp/ops/concat_kernel.cu for tools/gpu_check.py.
//
// Built with the kernel into one shared object (CUDA runtime linked
// statically) and driven through ctypes, so the CUDA kernel can be checked on
// a GPU machine that has no TensorFlow. Every function returns a cudaError_t
// (0 is success); gc_error_string turns it into text.

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "concat_kernel.h"

extern "C" {

const char* gc_error_string(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

int gc_runtime_version(int* version) { return cudaRuntimeGetVersion(version); }

int gc_device_count(int* count) {
  *count = 0;
  return cudaGetDeviceCount(count);
}

int gc_device_name(int device, char* name, int length) {
  cudaDeviceProp prop;
  cudaError_t status = cudaGetDeviceProperties(&prop, device);
  if (status != cudaSuccess) return status;
  int i = 0;
  for (; i < length - 1 && prop.name[i]; ++i) name[i] = prop.name[i];
  name[i] = '\0';
  return cudaSuccess;
}

int gc_malloc(void** pointer, size_t bytes) {
  return cudaMalloc(pointer, bytes > 0 ? bytes : 1);
}

int gc_free(void* pointer) { return cudaFree(pointer); }

int gc_to_device(void* device, const void* host, size_t bytes) {
  return cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice);
}

int gc_to_host(void* host, const void* device, size_t bytes) {
  return cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost);
}

int gc_fill(void* device, int byte, size_t bytes) {
  cudaError_t status = cudaMemset(device, byte, bytes);
  if (status != cudaSuccess) return status;
  return cudaDeviceSynchronize();
}

// One concat on a fresh non-default stream (as TensorFlow would pass one),
// then waits for it.
int gc_concat(const void* const* inputs, const int64_t* row_bytes,
              int num_inputs, int64_t rows, void* output) {
  cudaStream_t stream;
  cudaError_t status = cudaStreamCreateWithFlags(&stream,
                                                 cudaStreamNonBlocking);
  if (status != cudaSuccess) return status;
  int error = TfMpConcatGpu(inputs, row_bytes, num_inputs, rows, output,
                            stream);
  cudaError_t sync = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  return error != 0 ? error : sync;
}

// Milliseconds per call over `iterations` calls, after one warm-up call, of
// the concat (copy == 0) or of a device-to-device cudaMemcpyAsync of
// rows * sum(row_bytes) bytes from inputs[0] to output (copy != 0), timed with
// CUDA events on one stream.
int gc_time(const void* const* inputs, const int64_t* row_bytes,
            int num_inputs, int64_t rows, void* output, int copy,
            int iterations, float* milliseconds) {
  int64_t out_bytes = 0;
  for (int j = 0; j < num_inputs; ++j) out_bytes += row_bytes[j] * rows;
  cudaStream_t stream;
  cudaEvent_t start, stop;
  cudaError_t status = cudaStreamCreateWithFlags(&stream,
                                                 cudaStreamNonBlocking);
  if (status != cudaSuccess) return status;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  int error = 0;
  for (int i = 0; i <= iterations && error == 0; ++i) {
    if (i == 1) cudaEventRecord(start, stream);
    if (copy) {
      // gpu_check passes one input as large as the concat's output, so the
      // copy reads and writes the same number of bytes as the concat.
      error = cudaMemcpyAsync(output, inputs[0], out_bytes,
                              cudaMemcpyDeviceToDevice, stream);
    } else {
      error = TfMpConcatGpu(inputs, row_bytes, num_inputs, rows, output,
                            stream);
    }
  }
  cudaEventRecord(stop, stream);
  status = cudaEventSynchronize(stop);
  if (error == 0 && status == cudaSuccess) {
    float total = 0;
    status = cudaEventElapsedTime(&total, start, stop);
    *milliseconds = total / iterations;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  return error != 0 ? error : status;
}

}  // extern "C"
