// The fast engine's time loops in C++ (CPU): the same steps as the Python loops of
// rnnkit/scan/fast/{lstm,gru,simple}.py, filling the same buffers (the LSTM family forward and
// backward, the GRU, Elman and IndRNN forward), and the diagonal linear scan of
// rnnkit/scan/parallel.py. What Python paid per step (an interpreter round trip and a dispatch
// for each of ~10 small ops) is gone; a step's elementwise work, the LayerNorms of the LSTM family
// included, is one pass over (B, H) per cell in plain loops the compiler vectorises, with exp/tanh
// from the polynomials below; the matmuls stay ATen's (MKL, or oneDNN with packed weights); the
// GRU's LayerNorm is ATen's.
//
// Symbols: T steps, B batch, H hidden, R = proj_size or H. Gate order i, f, g, o (LSTM), r, z, n
// (GRU), as in torch. Buffers are (T, B, K) row-major and contiguous; keep factors (zoneout and
// lengths) may broadcast over B or H (stride 0).
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
#include <vector>
#include <utility>

namespace {

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
Tensor packed_linear(const Tensor& x, const Tensor& w_packed) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                                     c10::List<std::optional<c10::Scalar>>, std::optional<c10::string_view>)>();
  return op.call(x, w_packed, std::nullopt, "none", c10::List<std::optional<c10::Scalar>>(), std::nullopt);
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
};

void check_cpu_contiguous(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// Rows of (B, K) over which a step's elementwise pass runs; threads only when there is enough work
// to pay for them (at::parallel_for runs inline below the grain).
constexpr int64_t kGrain = 32768;

// ---------------------------------------------------------------------------------------------
// LSTM family: plain, projected, layer-normalised (gates over 4H, cell over H), peephole,
// recurrent dropout (drop), zoneout and lengths (keep_h, keep_c from step keep_from on).
template <typename S>
void lstm_loop_impl(const Tensor& xp, const Tensor& h0, const Tensor& c0, const Tensor& w_t, const OptTensor& w_packed,
                    const OptTensor& hr_t,
                    const OptTensor& ln_hw, const OptTensor& ln_hb, const OptTensor& ln_cw, const OptTensor& ln_cb,
                    const OptTensor& peep, const OptTensor& drop, const OptTensor& keep_h, const OptTensor& keep_c,
                    double eps, int64_t keep_from, Tensor& G, Tensor& C, Tensor& TC, Tensor& Hs, const OptTensor& Cs_,
                    const OptTensor& Ht_, const OptTensor& M_, const OptTensor& Araw, const OptTensor& stats_g,
                    const OptTensor& stats_c) {
  const int64_t T = xp.size(0), B = xp.size(1), G4 = xp.size(2), H = G4 / 4, R = Hs.size(2);
  const bool zoned = keep_h.has_value() || keep_c.has_value();
  Tensor Cs = zoned ? *Cs_ : C;             // c_t after zoneout
  Tensor Ht = keep_h.has_value() ? *Ht_ : Hs;  // h~_t before zoneout
  Tensor M = hr_t.has_value() ? *M_ : Ht;      // o * tanh(n) before the projection
  const Keep kh(keep_h), kc(keep_c);
  const S* pp = peep.has_value() ? peep->data_ptr<S>() : nullptr;  // (3, H): w_ci, w_cf, w_co
  const S* cw = ln_cw.has_value() ? ln_cw->data_ptr<S>() : nullptr;
  const S* cb = ln_cb.has_value() ? ln_cb->data_ptr<S>() : nullptr;
  Tensor hin = drop.has_value() ? at::empty({B, R}, xp.options()) : Tensor();
  Tensor h = h0, c = c0;
  S* g_all = G.data_ptr<S>();
  S* C_all = C.data_ptr<S>();
  S* TC_all = TC.data_ptr<S>();
  S* M_all = M.data_ptr<S>();
  S* mean_c = stats_c.has_value() ? stats_c->data_ptr<S>() : nullptr;  // (2, T, B): mean, rstd
  S* mean_g = stats_g.has_value() ? stats_g->data_ptr<S>() : nullptr;
  const S* hw = ln_hw.has_value() ? ln_hw->data_ptr<S>() : nullptr;
  const S* hb = ln_hb.has_value() ? ln_hb->data_ptr<S>() : nullptr;
  const S* x_all = xp.data_ptr<S>();
  S* araw = Araw.has_value() ? Araw->data_ptr<S>() : nullptr;
  for (int64_t t = 0; t < T; ++t) {
    Tensor gt = G.select(0, t);  // (B, 4H)
    const Tensor& hh = drop.has_value() ? at::mul_out(hin, h, *drop) : h;
    Tensor rec;  // h W_hh^T (B, 4H); x W_ih^T is added in the row pass (addmm_out would copy it in first)
    if (!ln_hw.has_value()) {
      if (w_packed.has_value()) {
        rec = packed_linear(hh, *w_packed);
      } else {
        at::mm_out(gt, hh, w_t);
        rec = gt;
      }
    } else {
      Tensor at_ = Araw->select(0, t);
      if (w_packed.has_value()) {
        at_.copy_(packed_linear(hh, *w_packed));
      } else {
        at::mm_out(at_, hh, w_t);
      }
      // the LayerNorm over 4H, plus x_t W_ih^T: in the row pass below
    }
    const S* cprev = c.data_ptr<S>();
    const S* recp = rec.defined() ? rec.data_ptr<S>() : nullptr;
    S* g = g_all + t * B * G4;
    S* cn = C_all + t * B * H;
    S* tc = TC_all + t * B * H;
    S* m = M_all + t * B * H;
    S* mc = mean_c ? mean_c + t * B : nullptr;
    S* rc = mean_c ? mean_c + (T + t) * B : nullptr;
    at::parallel_for(0, B, std::max<int64_t>(1, kGrain / (4 * H)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        S* gi = g + b * G4;
        S* gf = gi + H;
        S* gg = gi + 2 * H;
        S* go = gi + 3 * H;
        const S* cp = cprev + b * H;
        S* cb_ = cn + b * H;
        const S* xr = x_all + (t * B + b) * G4;
        if (hw) {  // gates = LN(h W_hh^T) w + b + x W_ih^T
          const S* ar = araw + (t * B + b) * G4;
          S mean, rstd;
          row_stats(ar, G4, eps, mean, rstd);
          mean_g[t * B + b] = mean;
          mean_g[(T + t) * B + b] = rstd;
#pragma omp simd
          for (int64_t j = 0; j < G4; ++j) gi[j] = (ar[j] - mean) * rstd * hw[j] + (hb ? hb[j] : S(0)) + xr[j];
        } else {  // gates = h W_hh^T + x W_ih^T
          const S* rr = recp + b * G4;
#pragma omp simd
          for (int64_t j = 0; j < G4; ++j) gi[j] = rr[j] + xr[j];
        }
        if (pp) {
          for (int64_t j = 0; j < H; ++j) {
            gi[j] += pp[j] * cp[j];
            gf[j] += pp[H + j] * cp[j];
          }
        }
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const S i = sigmoid(gi[j]), f = sigmoid(gf[j]), gv = tanh_(gg[j]);
          gi[j] = i;
          gf[j] = f;
          gg[j] = gv;
          cb_[j] = f * cp[j] + i * gv;
        }
        if (pp) {
          for (int64_t j = 0; j < H; ++j) go[j] += pp[2 * H + j] * cb_[j];
        }
        S* tcb = tc + b * H;
        if (cw) {  // LayerNorm of c~ over H (two passes: mean, then the centred variance)
          S mean, rstd;
          row_stats(cb_, H, eps, mean, rstd);
          mc[b] = mean;
          rc[b] = rstd;
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) tcb[j] = tanh_((cb_[j] - mean) * rstd * cw[j] + (cb ? cb[j] : S(0)));
        } else {
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) tcb[j] = tanh_(cb_[j]);
        }
        S* mb = m + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const S o = sigmoid(go[j]);
          go[j] = o;
          mb[j] = o * tcb[j];
        }
      }
    });
    Tensor ht = Ht.select(0, t);
    if (hr_t.has_value()) at::mm_out(ht, M.select(0, t), *hr_t);
    Tensor hs = Hs.select(0, t), cs = Cs.select(0, t);
    if (zoned) {  // h_t = h~ + d_h (h_{t-1} - h~), c_t likewise; nothing kept before keep_from
      const bool on = t >= keep_from;
      const S* hp = h.data_ptr<S>();
      const S* htp = ht.data_ptr<S>();
      S* hsp = hs.data_ptr<S>();
      S* csp = cs.data_ptr<S>();
      const S* cp = c.data_ptr<S>();
      const S* cnp = cn;
      for (int64_t b = 0; b < B; ++b) {
        if (keep_h.has_value()) {
          for (int64_t j = 0; j < R; ++j) {
            const S v = htp[b * R + j];
            hsp[b * R + j] = on ? v + kh.at<S>(t, b, j) * (hp[b * R + j] - v) : v;
          }
        }
        for (int64_t j = 0; j < H; ++j) {
          const S v = cnp[b * H + j];
          csp[b * H + j] = (on && keep_c.has_value()) ? v + kc.at<S>(t, b, j) * (cp[b * H + j] - v) : v;
        }
      }
    }
    h = hs;
    c = cs;
  }
}

void lstm_loop(const Tensor& xp, const Tensor& h0, const Tensor& c0, const Tensor& w_t, const OptTensor& w_packed,
               const OptTensor& hr_t,
               const OptTensor& ln_hw, const OptTensor& ln_hb, const OptTensor& ln_cw, const OptTensor& ln_cb,
               const OptTensor& peep, const OptTensor& drop, const OptTensor& keep_h, const OptTensor& keep_c,
               double eps, int64_t keep_from, Tensor G, Tensor C, Tensor TC, Tensor Hs, const OptTensor& Cs,
               const OptTensor& Ht, const OptTensor& M, const OptTensor& Araw, const OptTensor& stats_g,
               const OptTensor& stats_c) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&xp, &h0, &c0, &G, &C, &TC, &Hs})
    check_cpu_contiguous(*t, "lstm_loop buffer");
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "rnnkit_lstm_loop", [&] {
    lstm_loop_impl<scalar_t>(xp, h0, c0, w_t, w_packed, hr_t, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps,
                             keep_from, G, C, TC, Hs, Cs, Ht, M, Araw, stats_g, stats_c);
  });
}


// The LSTM backward (rnnkit/scan/fast/lstm.py, _LSTM.backward): each step first computes its
// factors from the saved gates G, tanh(n) TC and states Cs (what the Python form computes for all
// steps at once: K, A, Fc, Po), then runs the recurrence, one fused pass over (B, H) plus the
// GEMMs and the LayerNorm backwards, writing dpre into K. Returns the gradients w.r.t. h0 and c0.
template <typename S>
std::tuple<Tensor, Tensor> lstm_backward_impl(
    Tensor& K, const Tensor& G, const Tensor& TC, const Tensor& Cs, const Tensor& c0, const OptTensor& peep,
    const Tensor& dHs, const Tensor& dcT,
    const Tensor& w_hh, const OptTensor& w_packed_t, const OptTensor& w_hr, const OptTensor& drop,
    const OptTensor& keep_h, const OptTensor& keep_c, int64_t keep_from, const OptTensor& DHt,
    const OptTensor& C, const OptTensor& stats_c, const OptTensor& ln_cw, const OptTensor& ln_cb,
    const OptTensor& d_ln_cw, const OptTensor& d_ln_cb, const OptTensor& Araw, const OptTensor& stats_g,
    const OptTensor& ln_hw, const OptTensor& ln_hb, const OptTensor& DA, const OptTensor& d_ln_hw,
    const OptTensor& d_ln_hb, double eps) {
  (void)eps;
  const int64_t T = K.size(0), B = K.size(1), G4 = K.size(2), H = G4 / 4, R = dHs.size(2);
  const bool proj = w_hr.has_value(), lnc = ln_cw.has_value();
  const Keep kh(keep_h), kc(keep_c);
  const S* Gp = G.data_ptr<S>();
  const S* TCp = TC.data_ptr<S>();
  const S* Csp = Cs.data_ptr<S>();
  const S* c0p = c0.data_ptr<S>();
  const S* pp = peep.has_value() ? peep->data_ptr<S>() : nullptr;  // (3, H)
  const S* dys = dHs.data_ptr<S>();
  const S* cwp = lnc ? ln_cw->data_ptr<S>() : nullptr;
  const S* hwp = ln_hw.has_value() ? ln_hw->data_ptr<S>() : nullptr;
  S* Kp = K.data_ptr<S>();
  auto opts = K.options();
  Tensor dh = dHs.select(0, T - 1).clone(), dc = dcT.clone();  // (B, R), (B, H)
  Tensor dht = at::empty({B, R}, opts), dct = at::empty({B, H}, opts), dc_prev = at::empty({B, H}, opts);
  Tensor dn = lnc ? at::empty({B, H}, opts) : Tensor(), dx_c = lnc ? at::empty({B, H}, opts) : Tensor();
  Tensor dh_prev = at::empty({B, R}, opts);
  Tensor w_hh_t = w_hh;  // da (B, 4H) @ W_hh (4H, R)
  Tensor Abuf = at::empty({B, H}, opts), Fbuf = at::empty({B, H}, opts);
  Tensor Pbuf = (pp && lnc) ? at::empty({B, H}, opts) : Tensor();
  S* At = Abuf.data_ptr<S>();
  S* Ft = Fbuf.data_ptr<S>();
  S* Pt = (pp && lnc) ? Pbuf.data_ptr<S>() : nullptr;
  for (int64_t t = T - 1; t >= 0; --t) {
    // the step's factors: K = (g i (1-i), f (1-f) c_{t-1}, i (1-g^2), tanh(n) o (1-o)), A = o (1 - tanh(n)^2)
    // [+ Po], Fc = f [+ w_ci K_i + w_cf K_f], Po = w_co K_o
    {
      const S* Gt = Gp + t * B * G4;
      const S* TCt = TCp + t * B * H;
      const S* cprev = t > 0 ? Csp + (t - 1) * B * H : c0p;
      S* Kt0 = Kp + t * B * G4;
      for (int64_t b = 0; b < B; ++b) {
        const S* gb = Gt + b * G4;
        S* kb = Kt0 + b * G4;
        const S* tcb = TCt + b * H;
        const S* cpb = cprev + b * H;
        S* ab = At + b * H;
        S* fb = Ft + b * H;
        S* pb = Pt ? Pt + b * H : nullptr;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const S i = gb[j], f = gb[H + j], g = gb[2 * H + j], o = gb[3 * H + j], tc = tcb[j];
          const S ki = (i - i * i) * g, kf = (f - f * f) * cpb[j], kg = i - i * (g * g), ko = (o - o * o) * tc;
          kb[j] = ki;
          kb[H + j] = kf;
          kb[2 * H + j] = kg;
          kb[3 * H + j] = ko;
          S a = o - o * (tc * tc);
          S fc = f;
          if (pp) {
            fc = f + ki * pp[j] + kf * pp[H + j];
            const S po = ko * pp[2 * H + j];
            if (lnc) {
              pb[j] = po;
            } else {
              a += po;
            }
          }
          ab[j] = a;
          fb[j] = fc;
        }
      }
    }
    const bool zoned = t >= keep_from;
    const bool zh = zoned && keep_h.has_value(), zc = zoned && keep_c.has_value();
    // d h~_t = dh (1 - d_h): into DHt[t] when there is a projection
    Tensor dht_t = proj ? DHt->select(0, t) : dht;
    {
      const S* a = dh.data_ptr<S>();
      S* o = dht_t.data_ptr<S>();
      if (zh) {
        for (int64_t b = 0; b < B; ++b)
          for (int64_t j = 0; j < R; ++j) o[b * R + j] = a[b * R + j] * (S(1) - kh.at<S>(t, b, j));
      } else {
        std::copy(a, a + B * R, o);
      }
    }
    const Tensor dm = proj ? at::mm(dht_t, *w_hr) : dht_t;  // (B, H)
    const S* dmp = dm.data_ptr<S>();
    const S* dcp = dc.data_ptr<S>();
    S* dctp = dct.data_ptr<S>();
    if (lnc) {  // dc~ = LN'(dm * A) + dc (1 - d_c) [+ dm * Po]
      S* dnp = dn.data_ptr<S>();
      S* dxp = dx_c.data_ptr<S>();
      for (int64_t k = 0; k < B * H; ++k) dnp[k] = dmp[k] * At[k];
      S* dw = d_ln_cw->data_ptr<S>() + t * H;
      S* db = d_ln_cb->data_ptr<S>() + t * H;
      std::fill(dw, dw + H, S(0));
      std::fill(db, db + H, S(0));
      const S* ct = C->data_ptr<S>() + t * B * H;
      const S* sc = stats_c->data_ptr<S>();
      for (int64_t b = 0; b < B; ++b)
        row_ln_backward(dnp + b * H, ct + b * H, sc[t * B + b], sc[(T + t) * B + b], cwp, H, dxp + b * H, dw, db);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = b * H + j;
          S v = dxp[k] + (zc ? dcp[k] * (S(1) - kc.at<S>(t, b, j)) : dcp[k]);
          if (Pt) v += dmp[k] * Pt[k];
          dctp[k] = v;
        }
    } else {
      if (zc) {
        for (int64_t b = 0; b < B; ++b)
          for (int64_t j = 0; j < H; ++j) {
            const int64_t k = b * H + j;
            dctp[k] = dcp[k] * (S(1) - kc.at<S>(t, b, j)) + dmp[k] * At[k];
          }
      } else {
#pragma omp simd
        for (int64_t k = 0; k < B * H; ++k) dctp[k] = dcp[k] + dmp[k] * At[k];
      }
    }
    // dpre = K * (dc~, dc~, dc~, dm); dc_{t-1} = dc~ Fc [+ d_c dc]
    S* Kt = Kp + t * B * G4;
    S* dcpp = dc_prev.data_ptr<S>();
    for (int64_t b = 0; b < B; ++b) {
      S* kb = Kt + b * G4;
      const S* dcb = dctp + b * H;
      const S* dmb = dmp + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        kb[j] *= dcb[j];
        kb[H + j] *= dcb[j];
        kb[2 * H + j] *= dcb[j];
        kb[3 * H + j] *= dmb[j];
      }
      const S* fb = Ft + b * H;
      S* dcpb = dcpp + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dcpb[j] = dcb[j] * fb[j];
      if (zc) {
        for (int64_t j = 0; j < H; ++j) dcpb[j] += kc.at<S>(t, b, j) * dcp[b * H + j];
      }
    }
    // da: the gradient of the recurrent matmul's output (through the gates' LayerNorm if any)
    Tensor kt = K.select(0, t);
    Tensor da = kt;
    if (hwp) {  // through the gates' LayerNorm over 4H
      da = DA->select(0, t);
      S* dw = d_ln_hw->data_ptr<S>() + t * G4;
      S* db = d_ln_hb->data_ptr<S>() + t * G4;
      std::fill(dw, dw + G4, S(0));
      std::fill(db, db + G4, S(0));
      const S* ar = Araw->data_ptr<S>() + t * B * G4;
      const S* sg = stats_g->data_ptr<S>();
      S* dap = da.data_ptr<S>();
      for (int64_t b = 0; b < B; ++b)
        row_ln_backward(Kt + b * G4, ar + b * G4, sg[t * B + b], sg[(T + t) * B + b], hwp, G4, dap + b * G4, dw, db);
    }
    Tensor rec = w_packed_t.has_value() ? packed_linear(da, *w_packed_t) : at::mm(da, w_hh_t);  // (B, R)
    const S* rp = rec.data_ptr<S>();
    const S* dp = drop.has_value() ? drop->data_ptr<S>() : nullptr;
    const int64_t dsb = drop.has_value() && drop->size(0) > 1 ? drop->stride(0) : 0;
    const S* yprev = t > 0 ? dys + (t - 1) * B * R : nullptr;
    const S* dhp = dh.data_ptr<S>();
    S* out = dh_prev.data_ptr<S>();
    for (int64_t b = 0; b < B; ++b) {
      const S* rb = rp + b * R;
      S* ob = out + b * R;
      if (dp) {
        const S* db = dp + b * dsb;
#pragma omp simd
        for (int64_t j = 0; j < R; ++j) ob[j] = rb[j] * db[j];
      } else {
        std::copy(rb, rb + R, ob);
      }
      if (yprev) {
        const S* yb = yprev + b * R;
#pragma omp simd
        for (int64_t j = 0; j < R; ++j) ob[j] += yb[j];
      }
      if (zh) {
        for (int64_t j = 0; j < R; ++j) ob[j] += kh.at<S>(t, b, j) * dhp[b * R + j];
      }
    }
    std::swap(dh, dh_prev);
    std::swap(dc, dc_prev);
  }
  return {dh, dc};
}

std::tuple<Tensor, Tensor> lstm_backward(
    Tensor K, const Tensor& G, const Tensor& TC, const Tensor& Cs, const Tensor& c0, const OptTensor& peep,
    const Tensor& dHs, const Tensor& dcT,
    const Tensor& w_hh, const OptTensor& w_packed_t, const OptTensor& w_hr, const OptTensor& drop,
    const OptTensor& keep_h, const OptTensor& keep_c, int64_t keep_from, const OptTensor& DHt,
    const OptTensor& C, const OptTensor& stats_c, const OptTensor& ln_cw, const OptTensor& ln_cb,
    const OptTensor& d_ln_cw, const OptTensor& d_ln_cb, const OptTensor& Araw, const OptTensor& stats_g,
    const OptTensor& ln_hw, const OptTensor& ln_hb, const OptTensor& DA, const OptTensor& d_ln_hw,
    const OptTensor& d_ln_hb, double eps) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&K, &G, &TC, &Cs, &c0, &dHs, &dcT})
    check_cpu_contiguous(*t, "lstm_backward buffer");
  TORCH_CHECK(!drop.has_value() || (drop->dim() == 2 && drop->stride(1) == 1), "lstm_backward: drop must be (B|1, R)");
  std::tuple<Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(K.scalar_type(), "rnnkit_lstm_backward", [&] {
    out = lstm_backward_impl<scalar_t>(K, G, TC, Cs, c0, peep, dHs, dcT, w_hh, w_packed_t, w_hr, drop, keep_h, keep_c,
                                       keep_from, DHt, C, stats_c, ln_cw, ln_cb, d_ln_cw, d_ln_cb, Araw, stats_g,
                                       ln_hw, ln_hb, DA, d_ln_hw, d_ln_hb, eps);
  });
  return out;
}

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
          for (int64_t j = 0; j < H; ++j) hsb[j] = on ? htb[j] + kp.at<S>(t, b, j) * (hpb[j] - htb[j]) : htb[j];
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
          for (int64_t j = 0; j < H; ++j) hsb[j] = on ? hb[j] + kp.at<S>(t, b, j) * (hpb[j] - hb[j]) : hb[j];
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

TORCH_LIBRARY(rnnkit_cpu, m) {
  m.def("lstm_loop(Tensor xp, Tensor h0, Tensor c0, Tensor w_t, Tensor? w_packed, Tensor? hr_t, Tensor? ln_hw, Tensor? ln_hb, "
        "Tensor? ln_cw, Tensor? ln_cb, Tensor? peep, Tensor? drop, Tensor? keep_h, Tensor? keep_c, float eps, "
        "int keep_from, Tensor(a!) G, Tensor(b!) C, Tensor(c!) TC, Tensor(d!) Hs, Tensor(e!)? Cs, Tensor(f!)? Ht, "
        "Tensor(g!)? M, Tensor(h!)? Araw, Tensor(i!)? stats_g, Tensor(j!)? stats_c) -> ()",
        &lstm_loop);
  m.def("lstm_backward(Tensor(a!) K, Tensor G, Tensor TC, Tensor Cs, Tensor c0, Tensor? peep, Tensor dHs, "
        "Tensor dcT, Tensor w_hh, "
        "Tensor? w_packed_t, Tensor? w_hr, Tensor? drop, Tensor? keep_h, Tensor? keep_c, int keep_from, "
        "Tensor(b!)? DHt, Tensor? C, Tensor? stats_c, Tensor? ln_cw, Tensor? ln_cb, Tensor(c!)? d_ln_cw, "
        "Tensor(d!)? d_ln_cb, Tensor? Araw, Tensor? stats_g, Tensor? ln_hw, Tensor? ln_hb, Tensor(e!)? DA, "
        "Tensor(f!)? d_ln_hw, Tensor(g!)? d_ln_hb, float eps) -> (Tensor, Tensor)",
        &lstm_backward);
  m.def("gru_loop(Tensor xp, Tensor h0, Tensor w_t, Tensor? w_packed, Tensor? b_hh, Tensor? ln_hw, Tensor? drop, Tensor? keep, "
        "float eps, int keep_from, Tensor(a!) RZ, Tensor(b!) N, Tensor(c!) Hs, Tensor(d!)? Ht, Tensor(e!) HH, "
        "Tensor(f!)? Araw, Tensor(g!)? stats) -> ()",
        &gru_loop);
  m.def("simple_loop(Tensor xp, Tensor h0, Tensor w, Tensor? drop, Tensor? keep, bool relu, int keep_from, "
        "Tensor(a!) Hs, Tensor(b!)? Ht) -> ()",
        &simple_loop);
  m.def("linear_scan(Tensor a, Tensor b, Tensor h0, bool reverse) -> Tensor", &linear_scan);
}
