// The fast engine's time loops in C++ (CPU): the same steps as the Python loops of
// rnnkit/scan/fast/{lstm,gru,simple}.py, filling the same buffers (the LSTM family forward and
// backward, the GRU, Elman and IndRNN forward), and the diagonal linear scan of
// rnnkit/scan/parallel.py. What Python paid per step (an interpreter round trip and a dispatch
// for each of ~10 small ops) is gone; a step's elementwise work, the LayerNorms of the LSTM family
// included, is one pass over (B, H) per cell in plain loops the compiler vectorises, with exp/tanh
// from the polynomials in common.h; the matmuls are ATen's (MKL, or oneDNN with packed weights), except
// the LSTM family's per-step recurrent GEMMs with few rows, which run in common.h's register-blocked
// kernel (a library call costs ~12 us there whatever the size); the GRU's LayerNorm is ATen's.
//
// Symbols: T steps, B batch, H hidden, R = proj_size or H. Gate order i, f, g, o (LSTM), r, z, n
// (GRU), as in torch. Buffers are (T, B, K) row-major and contiguous; keep factors (zoneout and
// lengths) may broadcast over B or H (stride 0).
//
// This file: the GRU family, Elman and IndRNN forward loops and the linear scan; lstm.cpp: the LSTM
// family; common.h: what they share.
#include "common.h"

namespace rnnkit_native {
namespace {

// ---------------------------------------------------------------------------------------------
// GRU family (torch's formulation): hh = h W_hh^T + b_hh (or LN(h W_hh^T) w + b_hh),
// r, z = sigmoid(x_rz + hh_rz), n = tanh(x_n + r hh_n), h~ = (1 - z) n + z h_{t-1}.
template <typename S>
void gru_loop_impl(const Tensor& xp, const Tensor& h0, const Tensor& w_t, const OptTensor& w_packed, const OptTensor& b_hh,
                   const OptTensor& ln_hw, const OptTensor& drop, const OptTensor& keep, double eps,
                   int64_t keep_from, Tensor& RZ, Tensor& N, Tensor& Hs, const OptTensor& Ht_, Tensor& HH,
                   const OptTensor& Araw, const OptTensor& stats) {
  const int64_t T = xp.size(0), B = xp.size(1), G3 = xp.size(2), H = G3 / 3;
  Tensor Ht = keep.has_value() ? *Ht_ : Hs;
  const Keep kp(keep);
  Tensor hin = drop.has_value() ? at::empty({B, H}, xp.options()) : Tensor();
  Tensor h = h0;
  const S* x_all = xp.data_ptr<S>();
  S* rz_all = RZ.data_ptr<S>();
  S* n_all = N.data_ptr<S>();
  S* hh_all = HH.data_ptr<S>();
  S* ht_all = Ht.data_ptr<S>();
  S* hs_all = Hs.data_ptr<S>();
  for (int64_t t = 0; t < T; ++t) {
    Tensor hht = HH.select(0, t);  // (B, 3H)
    const Tensor& hh = drop.has_value() ? at::mul_out(hin, h, *drop) : h;
    if (w_packed.has_value()) {
      Tensor lin = packed_linear(hh, *w_packed);
      if (ln_hw.has_value()) {
        Tensor at_ = Araw->select(0, t);
        at_.copy_(lin);
        Tensor mean = stats->select(0, 0).select(0, t), rstd = stats->select(0, 1).select(0, t);
        at::native_layer_norm_out(hht, mean, rstd, at_, {G3}, ln_hw, b_hh, eps);
      } else if (b_hh.has_value()) {
        at::add_out(hht, lin, *b_hh);
      } else {
        hht.copy_(lin);
      }
    } else if (ln_hw.has_value()) {
      Tensor at_ = Araw->select(0, t);
      at::mm_out(at_, hh, w_t);
      Tensor mean = stats->select(0, 0).select(0, t), rstd = stats->select(0, 1).select(0, t);
      at::native_layer_norm_out(hht, mean, rstd, at_, {G3}, ln_hw, b_hh, eps);
    } else if (b_hh.has_value()) {
      at::addmm_out(hht, *b_hh, hh, w_t);
    } else {
      at::mm_out(hht, hh, w_t);
    }
    const S* hp = h.data_ptr<S>();
    const S* x = x_all + t * B * G3;
    S* rz = rz_all + t * B * 2 * H;
    S* n = n_all + t * B * H;
    S* hhp = hh_all + t * B * G3;
    S* ht = ht_all + t * B * H;
    S* hs = hs_all + t * B * H;
    const bool on = keep.has_value() && t >= keep_from;
    at::parallel_for(0, B, std::max<int64_t>(1, kGrain / (3 * H)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const S* xb = x + b * G3;
        const S* hb = hhp + b * G3;
        S* rzb = rz + b * 2 * H;
        S* nb = n + b * H;
        S* htb = ht + b * H;
        const S* hpb = hp + b * H;
#pragma omp simd
        for (int64_t j = 0; j < 2 * H; ++j) rzb[j] = sigmoid(xb[j] + hb[j]);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const S nv = tanh_(xb[2 * H + j] + rzb[j] * hb[2 * H + j]);
          nb[j] = nv;
          htb[j] = nv + rzb[H + j] * (hpb[j] - nv);
        }
        if (keep.has_value()) {
          S* hsb = hs + b * H;
          kp.blend(t, b, on, htb, hpb, hsb, H);
        }
      }
    });
    h = Hs.select(0, t);
  }
}

void gru_loop(const Tensor& xp, const Tensor& h0, const Tensor& w_t, const OptTensor& w_packed, const OptTensor& b_hh,
              const OptTensor& ln_hw,
              const OptTensor& drop, const OptTensor& keep, double eps, int64_t keep_from, Tensor RZ, Tensor N,
              Tensor Hs, const OptTensor& Ht, Tensor HH, const OptTensor& Araw, const OptTensor& stats) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&xp, &h0, &RZ, &N, &Hs, &HH})
    check_cpu_contiguous(*t, "gru_loop buffer");
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "rnnkit_gru_loop", [&] {
    gru_loop_impl<scalar_t>(xp, h0, w_t, w_packed, b_hh, ln_hw, drop, keep, eps, keep_from, RZ, N, Hs, Ht, HH, Araw, stats);
  });
}

// ---------------------------------------------------------------------------------------------
// Elman (w 2-D: h~ = act(x + h W^T)) and IndRNN (w 1-D: h~ = act(x + w * h)), act tanh or relu.
template <typename S>
void simple_loop_impl(const Tensor& xp, const Tensor& h0, const Tensor& w, const OptTensor& drop,
                      const OptTensor& keep, bool relu, int64_t keep_from, Tensor& Hs, const OptTensor& Ht_) {
  const int64_t T = xp.size(0), B = xp.size(1), H = xp.size(2);
  const bool elman = w.dim() == 2;
  const Tensor w_t = elman ? w.t() : w.contiguous();
  Tensor Ht = keep.has_value() ? *Ht_ : Hs;
  const Keep kp(keep);
  Tensor hin = drop.has_value() ? at::empty({B, H}, xp.options()) : Tensor();
  Tensor h = h0;
  const S* x_all = xp.data_ptr<S>();
  const S* wp = elman ? nullptr : w_t.data_ptr<S>();
  S* ht_all = Ht.data_ptr<S>();
  S* hs_all = Hs.data_ptr<S>();
  for (int64_t t = 0; t < T; ++t) {
    const Tensor& hh = drop.has_value() ? at::mul_out(hin, h, *drop) : h;
    Tensor ht = Ht.select(0, t);
    if (elman) at::addmm_out(ht, xp.select(0, t), hh, w_t);
    const S* hp = h.data_ptr<S>();
    const S* hhp = hh.data_ptr<S>();
    const S* x = x_all + t * B * H;
    S* htp = ht_all + t * B * H;
    S* hs = hs_all + t * B * H;
    const bool on = keep.has_value() && t >= keep_from;
    at::parallel_for(0, B, std::max<int64_t>(1, kGrain / H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        S* hb = htp + b * H;
        if (!elman) {
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) hb[j] = x[b * H + j] + wp[j] * hhp[b * H + j];
        }
        if (relu) {
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) hb[j] = hb[j] < S(0) ? S(0) : hb[j];  // NaN stays NaN, as in torch
        } else {
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) hb[j] = tanh_(hb[j]);
        }
        if (keep.has_value()) {
          S* hsb = hs + b * H;
          const S* hpb = hp + b * H;
          kp.blend(t, b, on, hb, hpb, hsb, H);
        }
      }
    });
    h = Hs.select(0, t);
  }
}

void simple_loop(const Tensor& xp, const Tensor& h0, const Tensor& w, const OptTensor& drop, const OptTensor& keep,
                 bool relu, int64_t keep_from, Tensor Hs, const OptTensor& Ht) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&xp, &h0, &Hs})
    check_cpu_contiguous(*t, "simple_loop buffer");
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "rnnkit_simple_loop", [&] {
    simple_loop_impl<scalar_t>(xp, h0, w, drop, keep, relu, keep_from, Hs, Ht);
  });
}


// ---------------------------------------------------------------------------------------------
// The diagonal linear recurrence h_t = a_t h_{t-1} + b_t (reverse: h_t = a_t h_{t+1} + b_t) on
// (T, N): one streaming pass in time, vectorised over N and split over threads by lanes. On a CPU
// the chunked parallel scan (rnnkit/scan/parallel.py) reads a and b three times, strided; this
// reads them once, in order.
template <typename S>
void linear_scan_impl(const Tensor& a, const Tensor& b, const Tensor& h0, bool reverse, Tensor& out) {
  const int64_t T = a.size(0), N = a.size(1);
  const S* ap = a.data_ptr<S>();
  const S* bp = b.data_ptr<S>();
  const S* hp0 = h0.data_ptr<S>();
  S* op = out.data_ptr<S>();
  at::parallel_for(0, N, 1024, [&](int64_t n0, int64_t n1) {
    const int64_t w = n1 - n0;
    std::vector<S> h(hp0 + n0, hp0 + n1);
    S* hv = h.data();
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const S* at_ = ap + t * N + n0;
      const S* bt = bp + t * N + n0;
      S* ot = op + t * N + n0;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) {
        hv[j] = at_[j] * hv[j] + bt[j];
        ot[j] = hv[j];
      }
    }
  });
}

Tensor linear_scan(const Tensor& a, const Tensor& b, const Tensor& h0, bool reverse) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&a, &b, &h0})
    check_cpu_contiguous(*t, "linear_scan input");
  TORCH_CHECK(a.dim() == 2 && b.sizes() == a.sizes() && h0.dim() == 1 && h0.size(0) == a.size(1),
              "linear_scan: a, b (T, N) and h0 (N,)");
  Tensor out = at::empty_like(b);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnkit_linear_scan",
                             [&] { linear_scan_impl<scalar_t>(a, b, h0, reverse, out); });
  return out;
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY(rnnkit_cpu, m) {
  using namespace rnnkit_native;
  m.def("gru_loop(Tensor xp, Tensor h0, Tensor w_t, Tensor? w_packed, Tensor? b_hh, Tensor? ln_hw, Tensor? drop, Tensor? keep, "
        "float eps, int keep_from, Tensor(a!) RZ, Tensor(b!) N, Tensor(c!) Hs, Tensor(d!)? Ht, Tensor(e!) HH, "
        "Tensor(f!)? Araw, Tensor(g!)? stats) -> ()",
        &gru_loop);
  m.def("simple_loop(Tensor xp, Tensor h0, Tensor w, Tensor? drop, Tensor? keep, bool relu, int keep_from, "
        "Tensor(a!) Hs, Tensor(b!)? Ht) -> ()",
        &simple_loop);
  m.def("linear_scan(Tensor a, Tensor b, Tensor h0, bool reverse) -> Tensor", &linear_scan);
}
