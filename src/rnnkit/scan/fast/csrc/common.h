// Shared pieces of the engine's C++ loops (see steps.cpp): vectorisable exp/tanh, LayerNorm row
// helpers, broadcast keep factors, oneDNN's packed GEMM. Everything here is in the namespace
// ``rnnkit_native`` and inline, so each .cpp may include it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <tuple>
#include <utility>
#include <vector>

namespace rnnkit_native {

using at::Tensor;
using OptTensor = std::optional<Tensor>;


// exp without libm, written so that a loop of it vectorises: x = n ln2 + r with |r| <= ln2 / 2,
// exp(r) by its Taylor polynomial (degree 13 for double, 7 for float: below 1 ulp of rounding
// error on that interval), 2^n by building the exponent bits. Inputs are clamped to the finite
// range first, so saturated gates give exactly 0 or 1 in the activations below, never NaN.
template <typename S> struct Exp;

template <> struct Exp<double> {
  static inline double eval(double x) {
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    // adding 1.5 * 2^52 rounds x log2(e) to an integer n held in the low mantissa bits
    const double kd = x * 1.4426950408889634 + 6755399441055744.0;
    const double n = kd - 6755399441055744.0;
    const double r = (x - n * 0.6931471803691238) - n * 1.9082149292705877e-10;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t bits;
    std::memcpy(&bits, &kd, sizeof bits);
    bits = (bits + 1023) << 52;  // 2^n: n + 1023 into the exponent field
    double scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
  }
};

template <> struct Exp<float> {
  static inline float eval(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float kf = x * 1.44269504f + 12582912.0f;  // 1.5 * 2^23: n in the low mantissa bits
    const float n = kf - 12582912.0f;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    std::memcpy(&bits, &kf, sizeof bits);
    bits = (bits + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
  }
};

template <typename S> inline S sigmoid(S x) { return S(1) / (S(1) + Exp<S>::eval(-x)); }

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): no cancellation for large |x|; for
// small |x| the (1 - e) loses relative accuracy, so below 0.0625 an odd Taylor polynomial is used.
template <typename S> inline S tanh_(S x) {
  const S a = x < S(0) ? -x : x;
  const S e = Exp<S>::eval(S(-2) * a);
  S big = (S(1) - e) / (S(1) + e);
  const S x2 = x * x;
  // tanh x = x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - 1382x^11/155925 (error < x^13 / 46)
  S small = S(-1382.0 / 155925.0);
  small = small * x2 + S(62.0 / 2835.0);
  small = small * x2 + S(-17.0 / 315.0);
  small = small * x2 + S(2.0 / 15.0);
  small = small * x2 + S(-1.0 / 3.0);
  small = small * x2 * x + x;
  big = x < S(0) ? -big : big;
  return a < S(0.0625) ? small : big;
}

// y = x W^T with W packed by oneDNN for this batch size (torch.ops.mkldnn._reorder_linear_weight):
// 2-4.5x faster than MKL's GEMM at batch 4-64 and H >= 256 on the development machine (AVX-512),
// the kernel torch.nn.LSTM's oneDNN path gets; the Python side decides when to pack.
inline Tensor packed_linear(const Tensor& x, const Tensor& w_packed) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                                     c10::List<std::optional<c10::Scalar>>, std::optional<c10::string_view>)>();
  return op.call(x, w_packed, std::nullopt, "none", c10::List<std::optional<c10::Scalar>>(), std::nullopt);
}

// out (B, N) = a (B, K) @ w (K, N), all row-major and contiguous, for a step's GEMM with few rows
// (B <= 32), where MKL's and oneDNN's calls cost ~12 us whatever the size ((8, 128) @ (128, 512)
// on the development machine). Register-blocked: 8 rows by two vectors of columns accumulate over
// k, reading each w row once per block; the column blocks are split over the threads. Returns
// false (nothing written) for what it does not take: more rows, N not a multiple of the block, or
// a weight over 2 MiB.
template <typename S> constexpr int64_t kColBlock = 128 / sizeof(S);  // two AVX-512 vectors

template <typename S, int RB>
inline void small_gemm_rows(const S* a, int64_t K, const S* w, int64_t N, S* out, int64_t n0, int64_t n1) {
  constexpr int64_t NB = kColBlock<S>;
  for (int64_t nb = n0; nb < n1; nb += NB) {
    S acc[RB][NB];
    for (int r = 0; r < RB; ++r)
      for (int64_t j = 0; j < NB; ++j) acc[r][j] = S(0);
    for (int64_t k = 0; k < K; ++k) {
      const S* wk = w + k * N + nb;
      for (int r = 0; r < RB; ++r) {
        const S av = a[r * K + k];
#pragma omp simd
        for (int64_t j = 0; j < NB; ++j) acc[r][j] += av * wk[j];
      }
    }
    for (int r = 0; r < RB; ++r)
      for (int64_t j = 0; j < NB; ++j) out[r * N + nb + j] = acc[r][j];
  }
}

// Whether small_gemm takes (B, K) @ (K, N); a weight beyond 2 MiB leaves the cache, and oneDNN's
// packed GEMM is faster there (rnnkit/scan/fast/lstm.py, _small_gemm_takes, asks the same).
template <typename S> inline bool small_gemm_takes(int64_t B, int64_t K, int64_t N) {
  return B <= 32 && N % kColBlock<S> == 0 && K * N * int64_t(sizeof(S)) <= (int64_t(2) << 20);
}

template <typename S>
inline bool small_gemm(const S* a, int64_t B, int64_t K, const S* w, int64_t N, S* out) {
  constexpr int64_t NB = kColBlock<S>;
  if (!small_gemm_takes<S>(B, K, N)) return false;
  const int64_t blocks = N / NB;
  at::parallel_for(0, blocks, std::max<int64_t>(1, 4096 / (K * std::max<int64_t>(B, 1))), [&](int64_t c0, int64_t c1) {
    const int64_t n0 = c0 * NB, n1 = c1 * NB;
    int64_t r = 0;
    for (; r + 8 <= B; r += 8) small_gemm_rows<S, 8>(a + r * K, K, w, N, out + r * N, n0, n1);
    for (; r + 4 <= B; r += 4) small_gemm_rows<S, 4>(a + r * K, K, w, N, out + r * N, n0, n1);
    for (; r < B; ++r) small_gemm_rows<S, 1>(a + r * K, K, w, N, out + r * N, n0, n1);
  });
  return true;
}

// LayerNorm of one row of n values: mean and rstd = 1 / sqrt(biased variance + eps), two passes
// (as ATen's; the centred second pass keeps float32 accurate).
template <typename S> inline void row_stats(const S* a, int64_t n, double eps, S& mean, S& rstd) {
  S m = 0;
#pragma omp simd reduction(+ : m)
  for (int64_t j = 0; j < n; ++j) m += a[j];
  m /= S(n);
  S v = 0;
#pragma omp simd reduction(+ : v)
  for (int64_t j = 0; j < n; ++j) v += (a[j] - m) * (a[j] - m);
  mean = m;
  rstd = S(1) / std::sqrt(v / S(n) + S(eps));
}

// LayerNorm backward of one row: dx = rstd (g - mean(g) - x^ mean(g x^)), g = dy * w, x^ = (a - mean)
// rstd; adds dy x^ and dy to the step's weight and bias gradients.
template <typename S>
inline void row_ln_backward(const S* dy, const S* a, S mean, S rstd, const S* w, int64_t n, S* dx, S* dw, S* db) {
  S sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
  for (int64_t j = 0; j < n; ++j) {
    const S xh = (a[j] - mean) * rstd, g = dy[j] * w[j];
    sg += g;
    sgx += g * xh;
  }
  sg /= S(n);
  sgx /= S(n);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const S xh = (a[j] - mean) * rstd;
    dw[j] += dy[j] * xh;
    db[j] += dy[j];
    dx[j] = rstd * (dy[j] * w[j] - sg - xh * sgx);
  }
}

// A (T, B|1, K|1) keep factor's strides at one step (0 where it broadcasts).
struct Keep {
  const void* data = nullptr;
  int64_t st = 0, sb = 0, sk = 0;
  explicit Keep(const OptTensor& k) {
    if (!k.has_value()) return;
    const Tensor& t = *k;
    data = t.data_ptr();
    st = t.stride(0);
    sb = t.size(1) > 1 ? t.stride(1) : 0;
    sk = t.size(2) > 1 ? t.stride(2) : 0;
  }
  template <typename S> inline S at(int64_t t, int64_t b, int64_t k) const {
    return static_cast<const S*>(data)[t * st + b * sb + k * sk];
  }
  // One row of the state leaving step t: out = cand + d (prev - cand), keeping a fraction d of the
  // previous state (zoneout, lengths); with on false (before keep_from, or no factor) out = cand.
  template <typename S>
  inline void blend(int64_t t, int64_t b, bool on, const S* cand, const S* prev, S* out, int64_t w) const {
    for (int64_t j = 0; j < w; ++j) out[j] = on ? cand[j] + at<S>(t, b, j) * (prev[j] - cand[j]) : cand[j];
  }
};

inline void check_cpu_contiguous(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// Rows of (B, K) over which a step's elementwise pass runs; threads only when there is enough work
// to pay for them (at::parallel_for runs inline below the grain).
constexpr int64_t kGrain = 8192;


}  // namespace rnnkit_native
