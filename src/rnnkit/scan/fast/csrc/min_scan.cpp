// minGRU and minLSTM (rnnkit/cells/minimal.py; Feng et al. 2024): their coefficients and the scan
// h_t = a_t h_{t-1} + b_t in one pass over x_proj, and the adjoint scan with the chain rule back to
// x_proj in one backward pass. In torch ops the same work is a dozen passes over (T, B, H)
// tensors, which is what kept minLSTM at 5-6x torch.nn.GRU on 2 cores.
//
//   minGRU   x_proj = (k, v):        a = sigmoid(-k),          b = sigmoid(k) g(v)
//   minLSTM  x_proj = (k_f, k_i, v): a = f / (f + i),          b = i / (f + i) g(v)
//            with f = sigmoid(k_f), i = sigmoid(k_i); written with exponents <= 0 only:
//            u = -k_f, w = -k_i, m = max(u, w, 0):
//            a = (e^-m + e^(w-m)) / D,  i' = (e^-m + e^(u-m)) / D,  D = 2 e^-m + e^(u-m) + e^(w-m)
//   g(v) = v + 0.5 (v >= 0), sigmoid(v) (v < 0)
//
// The backward: g_t = dL/dh_t + a_{t+1} g_{t+1}; with s = 1 - a (minGRU: sigmoid(k); minLSTM:
// i'), dd = g s a (g(v) - h_{t-1}), dv = g s g'(v); minGRU dk = dd; minLSTM dk_f = -sigmoid(-k_f)
// dd, dk_i = sigmoid(-k_i) dd (d = log i' - log f' = softplus(-k_f) - softplus(-k_i)).
// Past a sequence's end (lengths) the step is the identity: h keeps its value, no gradient reaches
// x_proj there.
#include "common.h"

namespace rnnkit_native {
namespace {

constexpr int64_t kBlock = 64;  // channels per work unit: one vector loop per step

// a, s (= 1 - a) and g(v), g'(v) of one step's block of channels
template <typename S>
inline void min_coefficients(const S* x, int64_t H, int64_t gates, int64_t w, S* a, S* s, S* gv, S* dgv,
                             S* sf, S* si) {
  const S* v = x + (gates - 1) * H;
  if (gates == 2) {
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      a[j] = sigmoid<S>(-x[j]);
      s[j] = sigmoid<S>(x[j]);
    }
  } else {
    const S* kf = x;
    const S* ki = x + H;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      const S u = -kf[j], q = -ki[j];
      S m = u > q ? u : q;
      m = m > S(0) ? m : S(0);
      const S e0 = Exp<S>::eval(-m), eu = Exp<S>::eval(u - m), eq = Exp<S>::eval(q - m);
      const S inv = S(1) / (S(2) * e0 + eu + eq);
      a[j] = (e0 + eq) * inv;
      s[j] = (e0 + eu) * inv;
      sf[j] = sigmoid<S>(u);  // sigmoid(-k_f)
      si[j] = sigmoid<S>(q);  // sigmoid(-k_i)
    }
  }
#pragma omp simd
  for (int64_t j = 0; j < w; ++j) {
    const S sv = sigmoid<S>(v[j]);
    const bool pos = v[j] >= S(0);
    gv[j] = pos ? v[j] + S(0.5) : sv;
    dgv[j] = pos ? S(1) : sv * (S(1) - sv);
  }
}

template <typename S>
void min_forward_impl(const Tensor& xp, const Tensor& h0, const int64_t* lens, int64_t gates, Tensor& hs) {
  const int64_t T = xp.size(0), B = xp.size(1), H = h0.size(1), GH = xp.size(2);
  const int64_t nb = (H + kBlock - 1) / kBlock;
  const S* xptr = xp.data_ptr<S>();
  const S* h0p = h0.data_ptr<S>();
  S* hp = hs.data_ptr<S>();
  at::parallel_for(0, B * nb, 1, [&](int64_t u0, int64_t u1) {
    S h[kBlock], a[kBlock], s[kBlock], gv[kBlock], dgv[kBlock], sf[kBlock], si[kBlock];
    for (int64_t unit = u0; unit < u1; ++unit) {
      const int64_t b = unit / nb, j0 = (unit % nb) * kBlock, w = std::min(kBlock, H - j0);
      const int64_t len = lens ? lens[b] : T;
      std::copy(h0p + b * H + j0, h0p + b * H + j0 + w, h);
      for (int64_t t = 0; t < T; ++t) {
        S* out = hp + (t * B + b) * H + j0;
        if (t < len) {
          min_coefficients<S>(xptr + (t * B + b) * GH + j0, H, gates, w, a, s, gv, dgv, sf, si);
#pragma omp simd
          for (int64_t j = 0; j < w; ++j) h[j] = a[j] * h[j] + s[j] * gv[j];
        }
        std::copy(h, h + w, out);
      }
    }
  });
}

template <typename S>
void min_backward_impl(const Tensor& xp, const Tensor& h0, const Tensor& hs, const Tensor& gy, const int64_t* lens,
                       int64_t gates, Tensor& dx, Tensor& dh0) {
  const int64_t T = xp.size(0), B = xp.size(1), H = h0.size(1), GH = xp.size(2);
  const int64_t nb = (H + kBlock - 1) / kBlock;
  const int64_t st = gy.stride(0), sb = gy.stride(1), sh = gy.stride(2);
  const S* xptr = xp.data_ptr<S>();
  const S* h0p = h0.data_ptr<S>();
  const S* hp = hs.data_ptr<S>();
  const S* gyp = gy.data_ptr<S>();
  S* dxp = dx.data_ptr<S>();
  S* dh0p = dh0.data_ptr<S>();
  at::parallel_for(0, B * nb, 1, [&](int64_t u0, int64_t u1) {
    S g[kBlock], an[kBlock], gyt[kBlock], a[kBlock], s[kBlock], gv[kBlock], dgv[kBlock], sf[kBlock], si[kBlock];
    for (int64_t unit = u0; unit < u1; ++unit) {
      const int64_t b = unit / nb, j0 = (unit % nb) * kBlock, w = std::min(kBlock, H - j0);
      const int64_t len = lens ? lens[b] : T;
      std::fill(g, g + w, S(0));
      std::fill(an, an + w, S(0));  // no step after the last
      for (int64_t t = T - 1; t >= 0; --t) {
        const S* gsrc = gyp + t * st + b * sb + j0 * sh;
        for (int64_t j = 0; j < w; ++j) gyt[j] = gsrc[j * sh];  // any strides (an expanded gradient)
        S* d = dxp + (t * B + b) * GH + j0;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) g[j] = gyt[j] + an[j] * g[j];
        if (t >= len) {  // identity step: a = 1, nothing from x_proj
          for (int64_t q = 0; q < gates; ++q) std::fill(d + q * H, d + q * H + w, S(0));
          std::fill(an, an + w, S(1));
          continue;
        }
        const S* x = xptr + (t * B + b) * GH + j0;
        min_coefficients<S>(x, H, gates, w, a, s, gv, dgv, sf, si);
        const S* prev = t > 0 ? hp + ((t - 1) * B + b) * H + j0 : h0p + b * H + j0;
        S* dv = d + (gates - 1) * H;
        S* dk = gates == 2 ? d : gyt;  // minLSTM: dd goes to scratch, then to k_f and k_i
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) {
          dk[j] = g[j] * s[j] * a[j] * (gv[j] - prev[j]);  // dd
          dv[j] = g[j] * s[j] * dgv[j];
          an[j] = a[j];
        }
        if (gates == 3) {  // separate loops: a branch on the stores would stop gcc vectorising
#pragma omp simd
          for (int64_t j = 0; j < w; ++j) {
            d[j] = -sf[j] * gyt[j];
            d[H + j] = si[j] * gyt[j];
          }
        }
      }
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) dh0p[b * H + j0 + j] = an[j] * g[j];
    }
  });
}

void check_min(const Tensor& xp, const Tensor& h0, const c10::optional<Tensor>& lens, int64_t gates) {
  check_cpu_contiguous(xp, "min_scan x_proj");
  check_cpu_contiguous(h0, "min_scan h0");
  TORCH_CHECK(gates == 2 || gates == 3, "min_scan: gates must be 2 (minGRU) or 3 (minLSTM)");
  TORCH_CHECK(xp.dim() == 3 && h0.dim() == 2 && h0.size(0) == xp.size(1) && xp.size(2) == gates * h0.size(1),
              "min_scan: x_proj (T, B, gates*H) and h0 (B, H)");
  TORCH_CHECK(xp.scalar_type() == h0.scalar_type(), "min_scan: x_proj and h0 must share a dtype");
  if (lens.has_value()) {
    check_cpu_contiguous(*lens, "min_scan lengths");
    TORCH_CHECK(lens->scalar_type() == at::kLong && lens->numel() == xp.size(1), "min_scan: lengths (B,) int64");
  }
}

// the outputs come from the caller (rnnkit.cells._buffers.take: a reused buffer, not fresh pages)
void min_scan_forward(const Tensor& xp, const Tensor& h0, const c10::optional<Tensor>& lens, int64_t gates,
                      Tensor& hs) {
  check_min(xp, h0, lens, gates);
  check_cpu_contiguous(hs, "min_scan hs");
  TORCH_CHECK(hs.dim() == 3 && hs.size(0) == xp.size(0) && hs.size(1) == xp.size(1) && hs.size(2) == h0.size(1) &&
                  hs.scalar_type() == xp.scalar_type(),
              "min_scan_forward: hs must be (T, B, H) of x_proj's dtype");
  const int64_t* lp = lens.has_value() ? lens->data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "rnnkit_min_scan_forward",
                             [&] { min_forward_impl<scalar_t>(xp, h0, lp, gates, hs); });
}

void min_scan_backward(const Tensor& xp, const Tensor& h0, const Tensor& hs, const Tensor& gy,
                       const c10::optional<Tensor>& lens, int64_t gates, Tensor& dx, Tensor& dh0) {
  check_min(xp, h0, lens, gates);
  check_cpu_contiguous(hs, "min_scan hs");
  check_cpu_contiguous(dx, "min_scan dx");
  check_cpu_contiguous(dh0, "min_scan dh0");
  TORCH_CHECK(gy.sizes() == hs.sizes() && gy.scalar_type() == hs.scalar_type() && gy.device().is_cpu(),
              "min_scan_backward: the gradient must match h (T, B, H)");
  TORCH_CHECK(dx.sizes() == xp.sizes() && dh0.sizes() == h0.sizes() && dx.scalar_type() == xp.scalar_type() &&
                  dh0.scalar_type() == xp.scalar_type(),
              "min_scan_backward: dx and dh0 must match x_proj and h0");
  const int64_t* lp = lens.has_value() ? lens->data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "rnnkit_min_scan_backward",
                             [&] { min_backward_impl<scalar_t>(xp, h0, hs, gy, lp, gates, dx, dh0); });
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY_FRAGMENT(rnnkit_cpu, m) {
  using namespace rnnkit_native;
  m.def("min_scan_forward(Tensor xp, Tensor h0, Tensor? lens, int gates, Tensor(a!) hs) -> ()", &min_scan_forward);
  m.def("min_scan_backward(Tensor xp, Tensor h0, Tensor hs, Tensor gy, Tensor? lens, int gates, Tensor(a!) dx, "
        "Tensor(b!) dh0) -> ()",
        &min_scan_backward);
}
