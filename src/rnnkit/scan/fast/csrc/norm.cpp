// LayerNorm over the rows of (N, n), forward and backward, for the normalised input projections of
// rnnkit/cells/_linear.py: one pass per row, split over threads, into the caller's (reused)
// buffers. ATen's .out variants compute into a fresh tensor and copy it over (a third of their
// time at N = 8192, n = 1024 on the development machine), and its backward sums the weight and
// bias gradients in a second pass over the columns; here each thread adds its rows into its own
// row of the (P, n) gradients, which the caller sums.
#include "common.h"

namespace rnnkit_native {
namespace {

template <typename S>
void layer_norm_rows_impl(const Tensor& z, const OptTensor& w, const OptTensor& b, double eps, Tensor& out,
                          Tensor& mean, Tensor& rstd) {
  const int64_t N = z.size(0), n = z.size(1);
  const S* zp = z.data_ptr<S>();
  const S* wp = w.has_value() ? w->data_ptr<S>() : nullptr;
  const S* bp = b.has_value() ? b->data_ptr<S>() : nullptr;
  S* op = out.data_ptr<S>();
  S* mp = mean.data_ptr<S>();
  S* rp = rstd.data_ptr<S>();
  at::parallel_for(0, N, std::max<int64_t>(1, kGrain / n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const S* a = zp + r * n;
      S* o = op + r * n;
      S m, s;
      row_stats(a, n, eps, m, s);
      mp[r] = m;
      rp[r] = s;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) o[j] = (a[j] - m) * s * (wp ? wp[j] : S(1)) + (bp ? bp[j] : S(0));
    }
  });
}

void layer_norm_rows(const Tensor& z, const OptTensor& w, const OptTensor& b, double eps, Tensor out, Tensor mean,
                     Tensor rstd) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&z, &out, &mean, &rstd})
    check_cpu_contiguous(*t, "layer_norm_rows buffer");
  TORCH_CHECK(z.dim() == 2 && out.sizes() == z.sizes() && mean.numel() == z.size(0) && rstd.numel() == z.size(0),
              "layer_norm_rows: z and out (N, n), mean and rstd N values; got z ", z.sizes(), ", out ", out.sizes());
  for (const OptTensor* p : {&w, &b})
    TORCH_CHECK(!p->has_value() || ((*p)->is_contiguous() && (*p)->numel() == z.size(1)),
                "layer_norm_rows: weight and bias need n = ", z.size(1), " contiguous values");
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "rnnkit_layer_norm_rows", [&] {
    layer_norm_rows_impl<scalar_t>(z, w, b, eps, out, mean, rstd);
  });
}

// dx = rstd (g - mean(g) - x^ mean(g x^)) with g = dy * w; dw[p] += dy x^, db[p] += dy over the rows
// thread p ran (dw, db: (P, n), zeroed here).
template <typename S>
void layer_norm_rows_backward_impl(const Tensor& dy, const Tensor& z, const Tensor& mean, const Tensor& rstd,
                                   const Tensor& w, Tensor& dx, Tensor& dw, Tensor& db) {
  const int64_t N = z.size(0), n = z.size(1);
  const S* dyp = dy.data_ptr<S>();
  const S* zp = z.data_ptr<S>();
  const S* mp = mean.data_ptr<S>();
  const S* rp = rstd.data_ptr<S>();
  const S* wp = w.data_ptr<S>();
  S* dxp = dx.data_ptr<S>();
  S* dwp = dw.data_ptr<S>();
  S* dbp = db.data_ptr<S>();
  dw.zero_();
  db.zero_();
  at::parallel_for(0, N, std::max<int64_t>(1, kGrain / n), [&](int64_t r0, int64_t r1) {
    const int64_t p = at::get_thread_num();
    for (int64_t r = r0; r < r1; ++r)
      row_ln_backward(dyp + r * n, zp + r * n, mp[r], rp[r], wp, n, dxp + r * n, dwp + p * n, dbp + p * n);
  });
}

void layer_norm_rows_backward(const Tensor& dy, const Tensor& z, const Tensor& mean, const Tensor& rstd,
                              const Tensor& w, Tensor dx, Tensor dw, Tensor db) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dy, &z, &mean, &rstd, &w, &dx, &dw, &db})
    check_cpu_contiguous(*t, "layer_norm_rows_backward buffer");
  const int64_t P = at::get_num_threads();
  TORCH_CHECK(z.dim() == 2 && dy.sizes() == z.sizes() && dx.sizes() == z.sizes() && w.numel() == z.size(1),
              "layer_norm_rows_backward: dy, z and dx (N, n), w n values; got dy ", dy.sizes(), ", z ", z.sizes());
  TORCH_CHECK(dw.dim() == 2 && dw.size(0) >= P && dw.size(1) == z.size(1) && db.sizes() == dw.sizes(),
              "layer_norm_rows_backward: dw and db need a row per thread (", P, ") of n = ", z.size(1),
              "; got ", dw.sizes());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "rnnkit_layer_norm_rows_backward", [&] {
    layer_norm_rows_backward_impl<scalar_t>(dy, z, mean, rstd, w, dx, dw, db);
  });
}

}  // namespace
}  // namespace rnnkit_native

TORCH_LIBRARY_FRAGMENT(rnnkit_cpu, m) {
  using namespace rnnkit_native;
  m.def("layer_norm_rows(Tensor z, Tensor? w, Tensor? b, float eps, Tensor(a!) out, Tensor(b!) mean, "
        "Tensor(c!) rstd) -> ()",
        &layer_norm_rows);
  m.def("layer_norm_rows_backward(Tensor dy, Tensor z, Tensor mean, Tensor rstd, Tensor w, Tensor(a!) dx, "
        "Tensor(b!) dw, Tensor(c!) db) -> ()",
        &layer_norm_rows_backward);
}
