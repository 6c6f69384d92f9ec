// The LSTM family's time loops (see steps.cpp for what the C++ loops are and why): the forward of
// rnnkit/scan/fast/lstm.py's _LSTM, and its backward recurrence with each step's factors.
#include "common.h"

namespace rnnkit_native {
namespace {

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
  // h W_hh^T with few rows: the register-blocked GEMM of common.h on W_hh^T laid out row-major
  const bool small = !w_packed.has_value() && small_gemm_takes<S>(B, R, G4);
  const Tensor w_rm = small ? w_t.contiguous() : Tensor();
  auto recurrent_mm = [&](Tensor& out, const Tensor& in) {
    if (!(small && in.is_contiguous() && small_gemm<S>(in.data_ptr<S>(), B, R, w_rm.data_ptr<S>(), G4, out.data_ptr<S>())))
      at::mm_out(out, in, w_t);
  };
  for (int64_t t = 0; t < T; ++t) {
    Tensor gt = G.select(0, t);  // (B, 4H)
    const Tensor& hh = drop.has_value() ? at::mul_out(hin, h, *drop) : h;
    Tensor rec;  // h W_hh^T (B, 4H); x W_ih^T is added in the row pass (addmm_out would copy it in first)
    if (!ln_hw.has_value()) {
      if (w_packed.has_value()) {
        rec = packed_linear(hh, *w_packed);
      } else {
        recurrent_mm(gt, hh);
        rec = gt;
      }
    } else {
      Tensor at_ = Araw->select(0, t);
      if (w_packed.has_value()) {
        at_.copy_(packed_linear(hh, *w_packed));
      } else {
        recurrent_mm(at_, hh);
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
        if (keep_h.has_value()) kh.blend(t, b, on, htp + b * R, hp + b * R, hsp + b * R, R);
        kc.blend(t, b, on && keep_c.has_value(), cnp + b * H, cp + b * H, csp + b * H, H);
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
// steps at once: K, A, Fc, Po), then runs the recurrence: three passes over the step's rows (factors
// and d h~; dc~, dpre and the LayerNorm backwards; dh_{t-1}), each split over threads when the step
// is large enough, around the GEMMs. dpre is written into K. The LayerNorm weight and bias gradients
// are summed per thread into row at::get_thread_num() of d_ln_* ((P, n), P >= the thread count,
// zeroed here), so threads never add into one row. Returns the gradients w.r.t. h0 and c0.
template <typename S>
std::tuple<Tensor, Tensor> lstm_backward_impl(
    Tensor& K, const Tensor& G, const Tensor& TC, const Tensor& Cs, const Tensor& c0, const OptTensor& peep,
    const Tensor& dHs, const Tensor& dcT,
    const Tensor& w_hh, const OptTensor& w_packed_t, const OptTensor& w_hr, const OptTensor& drop,
    const OptTensor& keep_h, const OptTensor& keep_c, int64_t keep_from, const OptTensor& DHt,
    const OptTensor& C, const OptTensor& stats_c, const OptTensor& ln_cw, const OptTensor& ln_cb,
    const OptTensor& d_ln_cw, const OptTensor& d_ln_cb, const OptTensor& Araw, const OptTensor& stats_g,
    const OptTensor& ln_hw, const OptTensor& ln_hb, const OptTensor& DA, const OptTensor& d_ln_hw,
    const OptTensor& d_ln_hb) {
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
  const int64_t P = at::get_num_threads();
  for (const OptTensor* d : {&d_ln_cw, &d_ln_cb, &d_ln_hw, &d_ln_hb}) {
    if (!d->has_value()) continue;
    TORCH_CHECK((*d)->size(0) >= P, "lstm_backward: a LayerNorm gradient needs a row per thread (", P, "), has ",
                (*d)->size(0));
    (*d)->zero_();
  }
  S* dwc_all = lnc ? d_ln_cw->data_ptr<S>() : nullptr;  // (P, H)
  S* dbc_all = lnc ? d_ln_cb->data_ptr<S>() : nullptr;
  S* dwg_all = hwp ? d_ln_hw->data_ptr<S>() : nullptr;  // (P, 4H)
  S* dbg_all = hwp ? d_ln_hb->data_ptr<S>() : nullptr;
  const S* Cp = lnc ? C->data_ptr<S>() : nullptr;
  const S* sc = lnc ? stats_c->data_ptr<S>() : nullptr;
  const S* Arp = hwp ? Araw->data_ptr<S>() : nullptr;
  const S* sg = hwp ? stats_g->data_ptr<S>() : nullptr;
  S* Kp = K.data_ptr<S>();
  auto opts = K.options();
  Tensor dh = dHs.select(0, T - 1).clone(), dc = dcT.clone();  // (B, R), (B, H)
  Tensor dht = at::empty({B, R}, opts), dct = at::empty({B, H}, opts), dc_prev = at::empty({B, H}, opts);
  Tensor dn = lnc ? at::empty({B, H}, opts) : Tensor(), dx_c = lnc ? at::empty({B, H}, opts) : Tensor();
  Tensor dh_prev = at::empty({B, R}, opts);
  Tensor Abuf = at::empty({B, H}, opts), Fbuf = at::empty({B, H}, opts);
  Tensor Pbuf = (pp && lnc) ? at::empty({B, H}, opts) : Tensor();
  S* At = Abuf.data_ptr<S>();
  S* Ft = Fbuf.data_ptr<S>();
  S* Pt = (pp && lnc) ? Pbuf.data_ptr<S>() : nullptr;
  S* dctp = dct.data_ptr<S>();
  S* dnp = lnc ? dn.data_ptr<S>() : nullptr;
  S* dxp = lnc ? dx_c.data_ptr<S>() : nullptr;
  const S* dp = drop.has_value() ? drop->data_ptr<S>() : nullptr;
  const int64_t dsb = drop.has_value() && drop->size(0) > 1 ? drop->stride(0) : 0;
  const int64_t grain = std::max<int64_t>(1, kGrain / G4), grain_r = std::max<int64_t>(1, kGrain / R);
  // da W_hh with few rows: the register-blocked GEMM of common.h
  const bool small = !w_packed_t.has_value() && small_gemm_takes<S>(B, G4, R);
  const Tensor w_hh_rm = small ? w_hh.contiguous() : Tensor();
  Tensor recbuf = small ? at::empty({B, R}, opts) : Tensor();
  for (int64_t t = T - 1; t >= 0; --t) {
    const bool zoned = t >= keep_from;
    const bool zh = zoned && keep_h.has_value(), zc = zoned && keep_c.has_value();
    Tensor dht_t = proj ? DHt->select(0, t) : dht;  // d h~_t = dh (1 - d_h): into DHt[t] when projected
    const S* dhp = dh.data_ptr<S>();
    const S* dcp = dc.data_ptr<S>();
    S* dcpp = dc_prev.data_ptr<S>();  // dh, dc and their _prev swap every step
    S* dhtp = dht_t.data_ptr<S>();
    // pass 1, per row: K = (g i (1-i), f (1-f) c_{t-1}, i (1-g^2), tanh(n) o (1-o)), A = o (1 - tanh(n)^2)
    // [+ Po], Fc = f [+ w_ci K_i + w_cf K_f], Po = w_co K_o; and d h~_t
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      const S* Gt = Gp + t * B * G4;
      const S* TCt = TCp + t * B * H;
      const S* cprev = t > 0 ? Csp + (t - 1) * B * H : c0p;
      for (int64_t b = b0; b < b1; ++b) {
        const S* gb = Gt + b * G4;
        S* kb = Kp + (t * B + b) * G4;
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
        const S* a = dhp + b * R;
        S* o = dhtp + b * R;
        if (zh) {
          for (int64_t j = 0; j < R; ++j) o[j] = a[j] * (S(1) - kh.at<S>(t, b, j));
        } else {
          std::copy(a, a + R, o);
        }
      }
    });
    const Tensor dm = proj ? at::mm(dht_t, *w_hr) : dht_t;  // (B, H)
    const S* dmp = dm.data_ptr<S>();
    Tensor da = hwp ? DA->select(0, t) : K.select(0, t);  // the gradient of the recurrent matmul's output
    S* dap = da.data_ptr<S>();
    // pass 2, per row: dc~ = [LN'](dm * A) + dc (1 - d_c) [+ dm * Po]; dpre = K * (dc~, dc~, dc~, dm);
    // dc_{t-1} = dc~ Fc [+ d_c dc]; da through the gates' LayerNorm over 4H, if any
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      const int64_t tid = at::get_thread_num();
      for (int64_t b = b0; b < b1; ++b) {
        const S* dmb = dmp + b * H;
        const S* dcb = dcp + b * H;
        const S* ab = At + b * H;
        S* dctb = dctp + b * H;
        if (lnc) {
          S* dnb = dnp + b * H;
          S* dxb = dxp + b * H;
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) dnb[j] = dmb[j] * ab[j];
          row_ln_backward(dnb, Cp + (t * B + b) * H, sc[t * B + b], sc[(T + t) * B + b], cwp, H, dxb,
                          dwc_all + tid * H, dbc_all + tid * H);
          for (int64_t j = 0; j < H; ++j) {
            S v = dxb[j] + (zc ? dcb[j] * (S(1) - kc.at<S>(t, b, j)) : dcb[j]);
            if (Pt) v += dmb[j] * Pt[b * H + j];
            dctb[j] = v;
          }
        } else if (zc) {
          for (int64_t j = 0; j < H; ++j) dctb[j] = dcb[j] * (S(1) - kc.at<S>(t, b, j)) + dmb[j] * ab[j];
        } else {
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) dctb[j] = dcb[j] + dmb[j] * ab[j];
        }
        S* kb = Kp + (t * B + b) * G4;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          kb[j] *= dctb[j];
          kb[H + j] *= dctb[j];
          kb[2 * H + j] *= dctb[j];
          kb[3 * H + j] *= dmb[j];
        }
        const S* fb = Ft + b * H;
        S* dcpb = dcpp + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dcpb[j] = dctb[j] * fb[j];
        if (zc) {
          for (int64_t j = 0; j < H; ++j) dcpb[j] += kc.at<S>(t, b, j) * dcb[j];
        }
        if (hwp)
          row_ln_backward(kb, Arp + (t * B + b) * G4, sg[t * B + b], sg[(T + t) * B + b], hwp, G4, dap + b * G4,
                          dwg_all + tid * G4, dbg_all + tid * G4);
      }
    });
    Tensor rec;  // (B, R)
    if (w_packed_t.has_value()) {
      rec = packed_linear(da, *w_packed_t);
    } else if (small && small_gemm<S>(dap, B, G4, w_hh_rm.data_ptr<S>(), R, recbuf.data_ptr<S>())) {
      rec = recbuf;
    } else {
      rec = at::mm(da, w_hh);
    }
    const S* rp = rec.data_ptr<S>();
    const S* yprev = t > 0 ? dys + (t - 1) * B * R : nullptr;
    S* out = dh_prev.data_ptr<S>();
    // pass 3, per row: dh_{t-1} = rec [* drop] [+ dy_{t-1}] [+ d_h dh]
    at::parallel_for(0, B, grain_r, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
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
    });
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
    const OptTensor& d_ln_hb) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&K, &G, &TC, &Cs, &c0, &dHs, &dcT})
    check_cpu_contiguous(*t, "lstm_backward buffer");
  TORCH_CHECK(!drop.has_value() || (drop->dim() == 2 && drop->stride(1) == 1), "lstm_backward: drop must be (B|1, R)");
  std::tuple<Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(K.scalar_type(), "rnnkit_lstm_backward", [&] {
    out = lstm_backward_impl<scalar_t>(K, G, TC, Cs, c0, peep, dHs, dcT, w_hh, w_packed_t, w_hr, drop, keep_h, keep_c,
                                       keep_from, DHt, C, stats_c, ln_cw, ln_cb, d_ln_cw, d_ln_cb, Araw, stats_g,
                                       ln_hw, ln_hb, DA, d_ln_hw, d_ln_hb);
  });
  return out;
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY_FRAGMENT(rnnkit_cpu, m) {
  using namespace rnnkit_native;
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
        "Tensor(f!)? d_ln_hw, Tensor(g!)? d_ln_hb) -> (Tensor, Tensor)",
        &lstm_backward);
}
