// One CUDA launch that joins several matrices on their last axis.
// (TfMpConcatHostEmulation runs the same per-element code on the host, for
// checks on machines without a GPU.)
//
// This file includes CUDA headers only (no TensorFlow headers): it is built by
// nvcc, whose CUDA version may differ from the headers inside the TensorFlow
// wheel, and it is also loaded without TensorFlow by tools/gpu_check.py.
//
// TensorFlow's own GPU concat of a few inputs along the last axis launches one
// Eigen slice assignment per input; here one kernel writes the whole output.
// Every output element is written by exactly one thread, and the copy moves
// raw bytes in the widest chunk (16, 8, 4, 2 or 1 bytes) that every pointer
// and every row width is a multiple of, so the result is bit-exact for any
// dtype and the 3 x [batch, 64] float32 concat of the model moves 16 bytes per
// thread.

#include <cuda_runtime.h>
#include <stdint.h>

#include "concat_kernel.h"

namespace {

// Kernel parameters are passed by value; 32 inputs keep them under 1 KB.
constexpr int kMaxSegments = 32;
constexpr int kThreadsPerBlock = 256;
constexpr int kBlocksPerMultiprocessor = 16;

struct Segments {
  const void* src[kMaxSegments];
  // Column (in chunks) where segment j starts in this launch's slice of the
  // output; begin[count] is the slice's width.
  int64_t begin[kMaxSegments + 1];
  int count;
};

// Element i of this launch's slice: output[r, col_offset + c] with
// r = i / width, c = i % width, where width is the slice's width. All in units
// of Chunk. Shared by the kernel and by the host emulation below.
template <typename Chunk, typename Index>
__host__ __device__ __forceinline__ void CopyElement(
    const Segments& seg, Chunk* __restrict__ out, Index i, Index width,
    Index out_width, Index col_offset) {
  const Index r = i / width;
  const Index c = i - r * width;
  int j = 0;
  while (c >= static_cast<Index>(seg.begin[j + 1])) ++j;
  const Index start = static_cast<Index>(seg.begin[j]);
  const Index w = static_cast<Index>(seg.begin[j + 1]) - start;
  const Chunk* __restrict__ src = static_cast<const Chunk*>(seg.src[j]);
  out[r * out_width + col_offset + c] = src[r * w + (c - start)];
}

// Every element of the slice, once: a grid-stride loop over rows * width.
template <typename Chunk, typename Index>
__global__ void __launch_bounds__(kThreadsPerBlock)
    ConcatRowsKernel(const __grid_constant__ Segments seg,
                     Chunk* __restrict__ out, Index rows, Index out_width,
                     Index col_offset) {
  const Index width = static_cast<Index>(seg.begin[seg.count]);
  const Index total = rows * width;
  const Index stride = static_cast<Index>(blockDim.x) * gridDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < total; i += stride) {
    CopyElement(seg, out, i, width, out_width, col_offset);
  }
}

template <typename Chunk>
cudaError_t Launch(const Segments& seg, void* output, int64_t rows,
                   int64_t out_width, int64_t col_offset, int blocks,
                   cudaStream_t stream) {
  const int64_t total = rows * seg.begin[seg.count];
  const int64_t grid = (total + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const int launch_blocks = static_cast<int>(grid < blocks ? grid : blocks);
  if (launch_blocks == 0) return cudaSuccess;
  Chunk* out = static_cast<Chunk*>(output);
  // 32-bit index arithmetic is much cheaper; use it when nothing can overflow.
  const int64_t largest = rows * out_width +
                          int64_t{launch_blocks} * kThreadsPerBlock;
  if (largest < INT32_MAX) {
    ConcatRowsKernel<Chunk, int32_t>
        <<<launch_blocks, kThreadsPerBlock, 0, stream>>>(
            seg, out, static_cast<int32_t>(rows),
            static_cast<int32_t>(out_width), static_cast<int32_t>(col_offset));
  } else {
    ConcatRowsKernel<Chunk, int64_t>
        <<<launch_blocks, kThreadsPerBlock, 0, stream>>>(
            seg, out, rows, out_width, col_offset);
  }
  return cudaGetLastError();
}

// The widest chunk that divides every row width and aligns every pointer.
int ChunkBytes(const void* const* inputs, const int64_t* row_bytes,
               int num_inputs, int64_t out_row_bytes, const void* output) {
  uint64_t bits = static_cast<uint64_t>(out_row_bytes) |
                  reinterpret_cast<uintptr_t>(output);
  for (int j = 0; j < num_inputs; ++j) {
    if (row_bytes[j] == 0) continue;
    bits |= static_cast<uint64_t>(row_bytes[j]) |
            reinterpret_cast<uintptr_t>(inputs[j]);
  }
  for (int chunk = 16; chunk > 1; chunk /= 2) {
    if ((bits & (chunk - 1)) == 0) return chunk;
  }
  return 1;
}

// Returns f(Chunk{}) for the Chunk type of `chunk` bytes.
template <typename F>
cudaError_t WithChunk(int chunk, F&& f) {
  switch (chunk) {
    case 16:
      return f(uint4{});
    case 8:
      return f(uint2{});
    case 4:
      return f(uint32_t{});
    case 2:
      return f(uint16_t{});
    default:
      return f(uint8_t{});
  }
}

// Splits the non-empty inputs into batches of at most kMaxSegments and calls
// run(seg, col_offset) for each; stops at the first error.
template <typename Run>
cudaError_t ForEachBatch(const void* const* inputs, const int64_t* row_bytes,
                         int num_inputs, int chunk, Run&& run) {
  Segments seg;
  seg.count = 0;
  seg.begin[0] = 0;
  int64_t col_offset = 0;  // in chunks, where the current batch starts
  cudaError_t status = cudaSuccess;
  for (int j = 0; j <= num_inputs && status == cudaSuccess; ++j) {
    const bool flush = j == num_inputs || seg.count == kMaxSegments;
    if (flush && seg.count > 0) {
      status = run(seg, col_offset);
      col_offset += seg.begin[seg.count];
      seg.count = 0;
    }
    if (j == num_inputs || row_bytes[j] == 0) continue;
    seg.src[seg.count] = inputs[j];
    seg.begin[seg.count + 1] = seg.begin[seg.count] + row_bytes[j] / chunk;
    ++seg.count;
  }
  return status;
}

}  // namespace

extern "C" int TfMpConcatGpu(const void* const* inputs,
                             const int64_t* row_bytes, int num_inputs,
                             int64_t rows, void* output, void* stream) {
  int64_t out_row_bytes = 0;
  for (int j = 0; j < num_inputs; ++j) out_row_bytes += row_bytes[j];
  if (rows == 0 || out_row_bytes == 0) return cudaSuccess;

  // The runtime launches into its current device's context: make that the
  // stream's device (TensorFlow's streams live in each device's primary
  // context, which is what cudaSetDevice selects).
  cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);
  int previous_device = 0;
  cudaError_t status = cudaGetDevice(&previous_device);
  if (status != cudaSuccess) return status;
  int device = previous_device;
  if (cuda_stream != nullptr) {
    status = cudaStreamGetDevice(cuda_stream, &device);
    if (status != cudaSuccess) return status;
    if (device != previous_device) {
      status = cudaSetDevice(device);
      if (status != cudaSuccess) return status;
    }
  }
  int multiprocessors = 0;
  status = cudaDeviceGetAttribute(&multiprocessors,
                                  cudaDevAttrMultiProcessorCount, device);
  if (status == cudaSuccess) {
    const int chunk = ChunkBytes(inputs, row_bytes, num_inputs, out_row_bytes,
                                 output);
    const int blocks = multiprocessors * kBlocksPerMultiprocessor;
    status = ForEachBatch(
        inputs, row_bytes, num_inputs, chunk,
        [&](const Segments& seg, int64_t col_offset) {
          return WithChunk(chunk, [&](auto chunk_type) {
            using Chunk = decltype(chunk_type);
            return Launch<Chunk>(seg, output, rows, out_row_bytes / chunk,
                                 col_offset, blocks, cuda_stream);
          });
        });
  }
  if (device != previous_device) cudaSetDevice(previous_device);
  return status;
}

extern "C" int TfMpConcatHostEmulation(const void* const* inputs,
                                       const int64_t* row_bytes,
                                       int num_inputs, int64_t rows,
                                       void* output) {
  int64_t out_row_bytes = 0;
  for (int j = 0; j < num_inputs; ++j) out_row_bytes += row_bytes[j];
  if (rows == 0 || out_row_bytes == 0) return cudaSuccess;
  const int chunk = ChunkBytes(inputs, row_bytes, num_inputs, out_row_bytes,
                               output);
  return ForEachBatch(
      inputs, row_bytes, num_inputs, chunk,
      [&](const Segments& seg, int64_t col_offset) {
        return WithChunk(chunk, [&](auto chunk_type) {
          using Chunk = decltype(chunk_type);
          const int64_t width = seg.begin[seg.count];
          for (int64_t i = 0; i < rows * width; ++i) {
            CopyElement<Chunk, int64_t>(seg, static_cast<Chunk*>(output), i,
                                        width, out_row_bytes / chunk,
                                        col_offset);
          }
          return cudaSuccess;
        });
      });
}

extern "C" int TfMpConcatGpuProbe() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) return status;
  return count > 0 ? cudaSuccess : cudaErrorNoDevice;
}

extern "C" const char* TfMpConcatGpuErrorString(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}
