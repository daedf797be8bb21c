// One read of a float32 activation for every statistic the compiled engine needs
// (kerinspect/engine/kernel/__init__.py builds it, kerinspect/engine/compiled.py uses it).
//
// x, of rank >= 2, is read as (samples, positions, units): units on the last axis,
// samples on the first, positions the axes between. The outputs:
//   sums     float64 [samples, units]  each sample's sum over its positions, per unit
//   units    float64 [2, units]        over the samples, each unit's mean of the samples'
//                                      means (sums / positions) and their M2
//   nonzero  int64   [units]           values != 0 per unit (NaN counts as non-zero)
//   moments  float64 [4]               mean, M2 (sum of squared deviations), min, max
// all in float64 from one pass over x. A NaN or Inf makes the sums non-finite (the
// engine sends such a batch to the eager engine); min/max ignore NaN then.
//
// The work is cut into chunks of whole rows (one position's units) inside one sample,
// of a size that depends only on the shape; threads scan chunks, and the chunks are
// merged in their order on the calling thread: the result is the same for every
// number of threads. Each chunk keeps per-unit accumulators (vectorised across units,
// kRows rows per load and store of them) and its moments around its first value (no
// cancellation in float64); chunks merge by Chan's update.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

using tensorflow::int64;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;

constexpr int64 kChunkValues = 1 << 16;  // about 256 KiB of float32 per chunk

struct Moments {
  double n = 0, mean = 0, m2 = 0;
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
};

// Rows a pass over the units reads at once: each unit's accumulators are loaded and
// stored once per kRows values instead of once per value (that traffic, not the
// arithmetic, bounded the scan: 1.2-1.9x faster, the same additions in the same order).
constexpr int kRows = 8;

// One value into a unit's accumulators (in registers): sum, squared deviation from
// `shift`, non-zero count, extremes (a NaN never replaces an extreme).
#define KERINSPECT_STEP(value)       \
  {                                  \
    const float v = (value);         \
    const double d = v;              \
    const double e = d - shift;      \
    s += d;                          \
    q += e * e;                      \
    n += v != 0.0f;                  \
    l = v < l ? v : l;               \
    h = v > h ? v : h;               \
  }

// One chunk: rows x units float32, contiguous. sum/nz: this chunk's per-unit sums and
// non-zero counts (written, not added); sq, lo, hi: scratch of `units` each. Each unit
// takes its values in row order, kRows rows at a time, then the rows left one by one.
__attribute__((target_clones("avx512f", "avx2", "default")))
void scan_chunk(const float* __restrict__ x, int64 rows, int64 units,
                double* __restrict__ sum, int64* __restrict__ nz, double* __restrict__ sq,
                float* __restrict__ lo, float* __restrict__ hi, Moments* out) {
  const double shift = x[0];
  for (int64 u = 0; u < units; ++u) {
    sum[u] = 0;
    sq[u] = 0;
    nz[u] = 0;
    lo[u] = x[u];
    hi[u] = x[u];
  }
  int64 r = 0;
  for (; r + kRows <= rows; r += kRows) {
    const float* __restrict__ p = x + r * units;
    for (int64 u = 0; u < units; ++u) {
      double s = sum[u], q = sq[u];
      int32_t n = 0;  // int32: vectorises with the float lanes
      float l = lo[u], h = hi[u];
      for (int k = 0; k < kRows; ++k) KERINSPECT_STEP(p[k * units + u]);
      sum[u] = s;
      sq[u] = q;
      nz[u] += n;
      lo[u] = l;
      hi[u] = h;
    }
  }
  for (; r < rows; ++r) {
    const float* __restrict__ p = x + r * units;
    for (int64 u = 0; u < units; ++u) {
      double s = sum[u], q = sq[u];
      int64 n = nz[u];
      float l = lo[u], h = hi[u];
      KERINSPECT_STEP(p[u]);
      sum[u] = s;
      sq[u] = q;
      nz[u] = n;
      lo[u] = l;
      hi[u] = h;
    }
  }
  double s = 0, q = 0;
  float l = lo[0], h = hi[0];
  for (int64 u = 0; u < units; ++u) {
    s += sum[u];
    q += sq[u];
    l = std::min(l, lo[u]);
    h = std::max(h, hi[u]);
  }
  const double n = static_cast<double>(rows * units);
  const double dev = s / n - shift;  // the chunk's mean, around its first value
  out->n = n;
  out->mean = s / n;
  out->m2 = std::max(0.0, q - n * dev * dev);
  out->lo = l;
  out->hi = h;
}

#undef KERINSPECT_STEP

void merge(Moments* into, const Moments& c) {
  if (c.n == 0) return;
  const double n = into->n + c.n;
  const double delta = c.mean - into->mean;
  into->mean += delta * (c.n / n);
  into->m2 += c.m2 + delta * delta * (into->n * c.n / n);
  into->n = n;
  into->lo = std::min(into->lo, c.lo);
  into->hi = std::max(into->hi, c.hi);
}

class ActivationStatsOp : public OpKernel {
 public:
  explicit ActivationStatsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    OP_REQUIRES(ctx, input.dims() >= 2,
                absl::InvalidArgumentError("activation statistics need rank >= 2"));
    const int64 samples = input.dim_size(0);
    const int64 units = input.dim_size(input.dims() - 1);
    const int64 positions = samples && units ? input.NumElements() / (samples * units) : 0;
    Tensor* sums = nullptr;
    Tensor* spread = nullptr;
    Tensor* nonzero = nullptr;
    Tensor* moments = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({samples, units}), &sums));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({2, units}), &spread));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({units}), &nonzero));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({4}), &moments));
    double* out_sums = sums->flat<double>().data();
    int64* out_nz = reinterpret_cast<int64*>(nonzero->flat<tensorflow::int64>().data());
    std::fill(out_sums, out_sums + samples * units, 0.0);
    std::fill(out_nz, out_nz + units, 0);
    Moments total;
    if (samples * positions * units > 0) {
      const int64 rows_per = std::max<int64>(1, kChunkValues / units);
      const int64 per_sample = (positions + rows_per - 1) / rows_per;
      const int64 chunks = samples * per_sample;
      std::vector<double> csum(chunks * units);
      std::vector<int64> cnz(chunks * units);
      std::vector<Moments> cmom(chunks);
      const float* x = input.flat<float>().data();
      auto work = [&](int64 begin, int64 end) {
        std::vector<double> sq(units);
        std::vector<float> lo(units), hi(units);
        for (int64 c = begin; c < end; ++c) {
          const int64 sample = c / per_sample;
          const int64 row0 = (c % per_sample) * rows_per;
          const int64 rows = std::min(rows_per, positions - row0);
          scan_chunk(x + (sample * positions + row0) * units, rows, units,
                     csum.data() + c * units, cnz.data() + c * units, sq.data(),
                     lo.data(), hi.data(), &cmom[c]);
        }
      };
      auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
      pool->ParallelFor(chunks, rows_per * units * 4, work);
      for (int64 c = 0; c < chunks; ++c) {  // in order: the same for every thread count
        double* row = out_sums + (c / per_sample) * units;
        const double* cs = csum.data() + c * units;
        const int64* cn = cnz.data() + c * units;
        for (int64 u = 0; u < units; ++u) {
          row[u] += cs[u];
          out_nz[u] += cn[u];
        }
        merge(&total, cmom[c]);
      }
    }
    // per unit, over the samples: the mean and M2 of the samples' means (two passes over
    // the small samples x units matrix), as the engine's TensorFlow operations compute them
    double* unit_mean = spread->flat<double>().data();
    double* unit_m2 = unit_mean + units;
    const double middle = static_cast<double>(std::max<int64>(positions, 1));
    for (int64 u = 0; u < units; ++u) {
      double s = 0;
      for (int64 i = 0; i < samples; ++i) s += out_sums[i * units + u] / middle;
      const double mean = samples ? s / samples : std::numeric_limits<double>::quiet_NaN();
      double q = 0;
      for (int64 i = 0; i < samples; ++i) {
        const double d = out_sums[i * units + u] / middle - mean;
        q += d * d;
      }
      unit_mean[u] = mean;
      unit_m2[u] = q;
    }
    double* m = moments->flat<double>().data();
    m[0] = total.n ? total.mean : std::numeric_limits<double>::quiet_NaN();
    m[1] = total.m2;
    m[2] = total.lo;
    m[3] = total.hi;
  }
};

}  // namespace

REGISTER_OP("KerinspectActivationStats")
    .Input("x: float")
    .Output("sums: double")
    .Output("units: double")
    .Output("nonzero: int64")
    .Output("moments: double")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle in;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &in));
      c->set_output(0, c->Matrix(c->Dim(in, 0), c->Dim(in, -1)));
      c->set_output(1, c->Matrix(2, c->Dim(in, -1)));
      c->set_output(2, c->Vector(c->Dim(in, -1)));
      c->set_output(3, c->Vector(4));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("KerinspectActivationStats").Device(tensorflow::DEVICE_CPU),
                        ActivationStatsOp);
