// TfMpConcat: joins N >= 1 tensors on their last axis, as one kernel.
//
// Inputs share their rank (>= 1), their dtype and every dimension but the
// last; the output's last dimension is the sum of the inputs'. Viewed as
// matrices [rows, width_j] (rows = product of the leading dimensions), the
// output row r is the concatenation of every input's row r.
//
// CPU: row-wise memcpy, split over TensorFlow's intra-op worker threads for
// large outputs. GPU (built with -DGOOGLE_CUDA=1 and linked with
// concat_kernel.cu): one kernel launch, called through the plain C function of
// concat_kernel.h with the inputs' device pointers, their row widths in bytes
// and the op's CUDA stream; this file includes no CUDA header.

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/util/work_sharder.h"

#if GOOGLE_CUDA
#include "concat_kernel.h"
#include "xla/stream_executor/stream.h"
#endif  // GOOGLE_CUDA

namespace tf_mp {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpInputList;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// "[2,64], [2,?], <unknown>": every input's shape, for error messages.
std::string InferredShapes(InferenceContext* c) {
  std::vector<std::string> shapes;
  for (int i = 0; i < c->num_inputs(); ++i) {
    shapes.push_back(c->DebugString(c->input(i)));
  }
  return absl::StrJoin(shapes, ", ");
}

absl::Status ConcatShape(InferenceContext* c) {
  const int n = c->num_inputs();
  int rank = InferenceContext::kUnknownRank;
  for (int i = 0; i < n; ++i) {
    if (!c->RankKnown(c->input(i))) continue;
    const int input_rank = c->Rank(c->input(i));
    if (input_rank == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TfMpConcat: input ", i, " is a scalar; expected every input to have "
          "rank >= 1, got shapes ", InferredShapes(c)));
    }
    if (rank != InferenceContext::kUnknownRank && input_rank != rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TfMpConcat: inputs have different ranks; expected equal ranks, got "
          "shapes ", InferredShapes(c)));
    }
    rank = input_rank;
  }
  if (rank == InferenceContext::kUnknownRank) {
    c->set_output(0, c->UnknownShape());
    return absl::OkStatus();
  }

  ShapeHandle leading = c->UnknownShapeOfRank(rank - 1);
  DimensionHandle width = c->MakeDim(0);
  for (int i = 0; i < n; ++i) {
    ShapeHandle input = c->input(i);
    if (!c->RankKnown(input)) {
      width = c->UnknownDim();
      continue;
    }
    ShapeHandle input_leading;
    TF_RETURN_IF_ERROR(c->Subshape(input, 0, rank - 1, &input_leading));
    if (!c->Merge(leading, input_leading, &leading).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TfMpConcat: inputs differ in a dimension other than the last; "
          "expected equal leading dimensions, got shapes ", InferredShapes(c)));
    }
    TF_RETURN_IF_ERROR(c->Add(width, c->Dim(input, rank - 1), &width));
  }
  ShapeHandle output;
  TF_RETURN_IF_ERROR(c->Concatenate(leading, c->Vector(width), &output));
  c->set_output(0, output);
  return absl::OkStatus();
}

}  // namespace
}  // namespace tf_mp

REGISTER_OP("TfMpConcat")
    .Input("values: N * T")
    .Output("output: T")
    .Attr("N: int >= 1")
    .Attr("T: {float, half, bfloat16, double}")
    .SetShapeFn(tf_mp::ConcatShape)
    .Doc(R"doc(
Joins N >= 1 tensors of equal rank (>= 1), dtype and leading dimensions on
their last axis: the output's last dimension is the sum of the inputs'.

values: the tensors to join, e.g. three [batch, 64] sub-model outputs.
output: [leading..., sum of the inputs' last dimensions], e.g. [batch, 192].
)doc");

namespace tf_mp {
namespace {

// Input j viewed as a [rows, widths[j]] matrix, the output as
// [rows, sum(widths)]; all in elements.
struct ConcatPlan {
  int64_t rows = 0;
  std::vector<int64_t> widths;
  int64_t out_width = 0;
};

std::string TensorShapes(const OpInputList& values) {
  std::vector<std::string> shapes;
  for (const Tensor& value : values) {
    shapes.push_back(value.shape().DebugString());
  }
  return absl::StrJoin(shapes, ", ");
}

// Checks the inputs (the shape function cannot, for unknown shapes) and, when
// there is something to copy, allocates the output and says how to fill it.
// `*output` stays null when nothing is left to do: one input (handed on as
// is, as tf.concat does) or an empty output.
absl::Status Prepare(OpKernelContext* context, ConcatPlan* plan,
                     Tensor** output) {
  *output = nullptr;
  OpInputList values;
  TF_RETURN_IF_ERROR(context->input_list("values", &values));
  const Tensor& first = values[0];
  if (first.dims() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TfMpConcat: input 0 is a scalar; expected every input to have rank "
        ">= 1, got shapes ", TensorShapes(values)));
  }
  const int rank = first.dims();
  plan->rows = 1;
  for (int d = 0; d < rank - 1; ++d) plan->rows *= first.dim_size(d);
  for (int i = 0; i < values.size(); ++i) {
    const Tensor& value = values[i];
    if (value.dims() != rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TfMpConcat: input ", i, " has rank ", value.dims(),
          ", input 0 rank ", rank, "; expected equal ranks >= 1, got shapes ",
          TensorShapes(values)));
    }
    for (int d = 0; d < rank - 1; ++d) {
      if (value.dim_size(d) != first.dim_size(d)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "TfMpConcat: input ", i, " differs from input 0 in dimension ", d,
            "; expected equal leading dimensions, got shapes ",
            TensorShapes(values)));
      }
    }
    plan->widths.push_back(value.dim_size(rank - 1));
    plan->out_width += value.dim_size(rank - 1);
  }
  if (values.size() == 1) {
    context->set_output(0, first);
    return absl::OkStatus();
  }
  TensorShape out_shape = first.shape();
  out_shape.set_dim(rank - 1, plan->out_width);
  Tensor* allocated = nullptr;
  TF_RETURN_IF_ERROR(context->allocate_output(0, out_shape, &allocated));
  if (allocated->NumElements() > 0) *output = allocated;
  return absl::OkStatus();
}

// Copies output elements [start, end) (flat indices) from the inputs.
void CopyRange(const std::vector<const char*>& inputs, const ConcatPlan& plan,
               int64_t element_bytes, char* out, int64_t start, int64_t end) {
  const int64_t first_row = start / plan.out_width;
  const int64_t last_row = (end - 1) / plan.out_width;
  for (int64_t r = first_row; r <= last_row; ++r) {
    int64_t column = 0;
    for (size_t j = 0; j < inputs.size(); ++j) {
      const int64_t width = plan.widths[j];
      // The part of input j's row r that falls inside [start, end).
      const int64_t segment = r * plan.out_width + column;
      const int64_t lo = std::max(segment, start);
      const int64_t hi = std::min(segment + width, end);
      if (lo < hi) {
        std::memcpy(out + lo * element_bytes,
                    inputs[j] + (r * width + (lo - segment)) * element_bytes,
                    (hi - lo) * element_bytes);
      }
      column += width;
    }
  }
}

class ConcatCpuOp : public OpKernel {
 public:
  explicit ConcatCpuOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    ConcatPlan plan;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, Prepare(context, &plan, &output));
    if (output == nullptr) return;
    OpInputList values;
    OP_REQUIRES_OK(context, context->input_list("values", &values));
    std::vector<const char*> inputs;
    for (const Tensor& value : values) {
      inputs.push_back(value.tensor_data().data());
    }
    const int64_t element_bytes = tensorflow::DataTypeSize(output->dtype());
    char* out = const_cast<char*>(output->tensor_data().data());
    const int64_t total = output->NumElements();

    // Below 4096 elements a thread hand-off costs more than the copy. Above,
    // Shard (through Eigen's cost model) picks how many of the intra-op
    // threads to use from a cost of about one cycle per byte copied, the
    // same cost tf.concat's CPU kernel declares, so that both split a given
    // output alike.
    auto copy = [&](int64_t start, int64_t end) {
      CopyRange(inputs, plan, element_bytes, out, start, end);
    };
    if (total < 4096) {
      copy(0, total);
      return;
    }
    const auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, total,
                      element_bytes, copy);
  }
};

#define TF_MP_REGISTER_CPU(type)                                     \
  REGISTER_KERNEL_BUILDER(Name("TfMpConcat")                         \
                              .Device(DEVICE_CPU)                    \
                              .TypeConstraint<type>("T"),            \
                          ConcatCpuOp)
TF_MP_REGISTER_CPU(float);
TF_MP_REGISTER_CPU(Eigen::half);
TF_MP_REGISTER_CPU(Eigen::bfloat16);
TF_MP_REGISTER_CPU(double);
#undef TF_MP_REGISTER_CPU

#if GOOGLE_CUDA

class ConcatGpuOp : public OpKernel {
 public:
  explicit ConcatGpuOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    ConcatPlan plan;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, Prepare(context, &plan, &output));
    if (output == nullptr) return;
    OpInputList values;
    OP_REQUIRES_OK(context, context->input_list("values", &values));
    const int64_t element_bytes = tensorflow::DataTypeSize(output->dtype());
    std::vector<const void*> inputs;
    std::vector<int64_t> row_bytes;
    for (int j = 0; j < values.size(); ++j) {
      inputs.push_back(values[j].tensor_data().data());
      row_bytes.push_back(plan.widths[j] * element_bytes);
    }
    auto* stream = context->op_device_context()->stream();
    OP_REQUIRES(context, stream != nullptr,
                absl::InternalError("TfMpConcat: the GPU op has no stream"));
    const int error = TfMpConcatGpu(
        inputs.data(), row_bytes.data(), static_cast<int>(inputs.size()),
        plan.rows, const_cast<char*>(output->tensor_data().data()),
        stream->platform_specific_handle().stream);
    OP_REQUIRES(context, error == 0,
                absl::InternalError(absl::StrCat(
                    "TfMpConcat: CUDA kernel launch failed: ",
                    TfMpConcatGpuErrorString(error))));
  }
};

#define TF_MP_REGISTER_GPU(type)                                     \
  REGISTER_KERNEL_BUILDER(Name("TfMpConcat")                         \
                              .Device(::tensorflow::DEVICE_GPU)      \
                              .TypeConstraint<type>("T"),            \
                          ConcatGpuOp)
TF_MP_REGISTER_GPU(float);
TF_MP_REGISTER_GPU(Eigen::half);
TF_MP_REGISTER_GPU(Eigen::bfloat16);
TF_MP_REGISTER_GPU(double);
#undef TF_MP_REGISTER_GPU

#endif  // GOOGLE_CUDA

}  // namespace
}  // namespace tf_mp
