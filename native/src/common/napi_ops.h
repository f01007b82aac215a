// N-API plumbing shared by lora_cpu.node and lora_cuda.node: argument checks, an AsyncWorker
// that resolves a Promise, and the dense compute entry points written once over Ops<Cpu> or
// Ops<Cuda> (common/ops.h); the raw-bytes ones (factorStats, truncateFactors, factorSpectrum) and
// the export list are in napi_fused.h.
// Every compute call is an AsyncWorker: outputs are allocated on the JS thread before the work is
// queued and written in Execute(); inputs and outputs are held by persistent references for the
// worker's lifetime. Raw signatures are mirrored by ComputeBinding in linalg/native.ts.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ops.h"

namespace lora {
namespace napi {

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, const char* name, std::function<Status()> run,
           std::function<Napi::Value(Napi::Env)> result)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), run_(std::move(run)),
        result_(std::move(result)) {}

  void Keep(Napi::Value v) { refs_.emplace_back(Napi::Persistent(v)); }
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      status_ = run_();
    } catch (const std::exception& e) {
      status_ = Status::fail("NATIVE_EXCEPTION", e.what());
    }
    if (!status_.ok()) SetError(status_.message);
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    deferred_.Resolve(result_(env));
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Error err = Napi::Error::New(env, status_.message.empty() ? e.Message() : status_.message);
    err.Value().Set("code", Napi::String::New(env, status_.code.empty() ? "NATIVE_ERROR" : status_.code));
    if (status_.code == "LAPACK_INFO") err.Value().Set("info", Napi::Number::New(env, status_.info));
    deferred_.Reject(err.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<Status()> run_;
  std::function<Napi::Value(Napi::Env)> result_;
  std::vector<Napi::Reference<Napi::Value>> refs_;
  Status status_;
};

[[noreturn]] inline void typeError(Napi::Env env, const std::string& m) { throw Napi::TypeError::New(env, m); }

inline int dim(const Napi::CallbackInfo& info, size_t i, const char* what, int min = 1) {
  if (!info[i].IsNumber()) typeError(info.Env(), std::string(what) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= min) || v > 2147483647.0 || std::floor(v) != v)
    typeError(info.Env(), std::string(what) + " must be an integer ≥ " + std::to_string(min));
  return static_cast<int>(v);
}

inline Napi::TypedArray floatArray(const Napi::CallbackInfo& info, size_t i, const char* what, size_t need) {
  if (!info[i].IsTypedArray()) typeError(info.Env(), std::string(what) + " must be a Float32Array or Float64Array");
  auto ta = info[i].As<Napi::TypedArray>();
  auto t = ta.TypedArrayType();
  if (t != napi_float32_array && t != napi_float64_array)
    typeError(info.Env(), std::string(what) + " must be a Float32Array or Float64Array");
  if (ta.ElementLength() < need)
    typeError(info.Env(), std::string(what) + " has " + std::to_string(ta.ElementLength()) +
                              " elements, needs " + std::to_string(need));
  return ta;
}

inline bool isF32(const Napi::TypedArray& a) { return a.TypedArrayType() == napi_float32_array; }

template <typename T>
T* ptr(const Napi::TypedArray& a) {
  return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
}

inline Napi::TypedArray newLike(Napi::Env env, bool f32, size_t n) {
  if (f32) return Napi::Float32Array::New(env, n);
  return Napi::Float64Array::New(env, n);
}

// Holds several output arrays and builds the result object from them.
struct Outs {
  std::vector<std::pair<std::string, Napi::Reference<Napi::Value>>> v;
  void add(const char* k, Napi::Value x) { v.emplace_back(k, Napi::Persistent(x)); }
};

inline std::function<Napi::Value(Napi::Env)> objectOf(std::shared_ptr<Outs> outs,
                                               std::function<void(Napi::Object)> extra = nullptr) {
  return [outs, extra](Napi::Env env) -> Napi::Value {
    Napi::Object o = Napi::Object::New(env);
    for (auto& kv : outs->v) o.Set(kv.first, kv.second.Value());
    if (extra) extra(o);
    return o;
  };
}

// gemm(a, aRows, aCols, b, bRows, bCols, transA, transB, alpha) → Promise<TypedArray (m×n)>
template <class Ops>
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ar = dim(info, 1, "aRows"), ac = dim(info, 2, "aCols");
  int br = dim(info, 4, "bRows"), bc = dim(info, 5, "bCols");
  auto a = floatArray(info, 0, "a", size_t(ar) * ac);
  auto b = floatArray(info, 3, "b", size_t(br) * bc);
  if (a.TypedArrayType() != b.TypedArrayType()) typeError(env, "a and b must have the same element type");
  bool ta = info[6].ToBoolean(), tb = info[7].ToBoolean();
  double alpha = info[8].IsNumber() ? info[8].As<Napi::Number>().DoubleValue() : 1.0;
  int m = ta ? ac : ar, kk = ta ? ar : ac, kb = tb ? bc : br, n = tb ? br : bc;
  if (kk != kb) typeError(env, "gemm: inner dimensions differ");
  bool f32 = isF32(a);
  auto c = newLike(env, f32, size_t(m) * n);
  std::function<Status()> run;
  if (f32)
    run = [=, pa = ptr<float>(a), pb = ptr<float>(b), pc = ptr<float>(c)] {
      return Ops::template gemm<float>(pa, ar, ac, pb, br, bc, ta, tb, float(alpha), pc);
    };
  else
    run = [=, pa = ptr<double>(a), pb = ptr<double>(b), pc = ptr<double>(c)] {
      return Ops::template gemm<double>(pa, ar, ac, pb, br, bc, ta, tb, alpha, pc);
    };
  auto outs = std::make_shared<Outs>();
  outs->add("c", c);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".gemm")).c_str(), run, [outs](Napi::Env) { return outs->v[0].second.Value(); });
  w->Keep(a);
  w->Keep(b);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// qr(a, m, n) → Promise<{q (m×k), r (k×n)}>
template <class Ops>
Napi::Value Qr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int m = dim(info, 1, "rows"), n = dim(info, 2, "cols");
  auto a = floatArray(info, 0, "a", size_t(m) * n);
  int k = std::min(m, n);
  bool f32 = isF32(a);
  auto q = newLike(env, f32, size_t(m) * k), r = newLike(env, f32, size_t(k) * n);
  std::function<Status()> run;
  if (f32)
    run = [=, pa = ptr<float>(a), pq = ptr<float>(q), pr = ptr<float>(r)] { return Ops::template qr<float>(pa, m, n, pq, pr); };
  else
    run = [=, pa = ptr<double>(a), pq = ptr<double>(q), pr = ptr<double>(r)] {
      return Ops::template qr<double>(pa, m, n, pq, pr);
    };
  auto outs = std::make_shared<Outs>();
  outs->add("q", q);
  outs->add("r", r);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".qr")).c_str(), run, objectOf(outs));
  w->Keep(a);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// svd(a, m, n) → Promise<{u (m×k), s (k), vt (k×n)}>
template <class Ops>
Napi::Value Svd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int m = dim(info, 1, "rows"), n = dim(info, 2, "cols");
  auto a = floatArray(info, 0, "a", size_t(m) * n);
  int k = std::min(m, n);
  bool f32 = isF32(a);
  auto u = newLike(env, f32, size_t(m) * k), s = newLike(env, f32, size_t(k)), vt = newLike(env, f32, size_t(k) * n);
  std::function<Status()> run;
  if (f32)
    run = [=, pa = ptr<float>(a), pu = ptr<float>(u), ps = ptr<float>(s), pv = ptr<float>(vt)] {
      return Ops::template svd<float>(pa, m, n, pu, ps, pv);
    };
  else
    run = [=, pa = ptr<double>(a), pu = ptr<double>(u), ps = ptr<double>(s), pv = ptr<double>(vt)] {
      return Ops::template svd<double>(pa, m, n, pu, ps, pv);
    };
  auto outs = std::make_shared<Outs>();
  outs->add("u", u);
  outs->add("s", s);
  outs->add("vt", vt);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".svd")).c_str(), run, objectOf(outs));
  w->Keep(a);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// eigSym(a, n) → Promise<{values (n, descending), vectors (n×n, column j ↔ values[j])}>
template <class Ops>
Napi::Value EigSym(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = dim(info, 1, "n");
  auto a = floatArray(info, 0, "a", size_t(n) * n);
  bool f32 = isF32(a);
  auto vals = newLike(env, f32, size_t(n)), vecs = newLike(env, f32, size_t(n) * n);
  std::function<Status()> run;
  if (f32)
    run = [=, pa = ptr<float>(a), pv = ptr<float>(vals), pz = ptr<float>(vecs)] {
      return Ops::template eigSym<float>(pa, n, pv, pz);
    };
  else
    run = [=, pa = ptr<double>(a), pv = ptr<double>(vals), pz = ptr<double>(vecs)] {
      return Ops::template eigSym<double>(pa, n, pv, pz);
    };
  auto outs = std::make_shared<Outs>();
  outs->add("values", vals);
  outs->add("vectors", vecs);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".eigSym")).c_str(), run, objectOf(outs));
  w->Keep(a);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// kmeansLloyd(x, n, d, init, k, weights|null, maxIter, tol)
//   → Promise<{centroids (k×d), labels (n), inertia, iterations}>   (all float64)
template <class Ops>
Napi::Value KmeansLloyd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = dim(info, 1, "n"), d = dim(info, 2, "d"), k = dim(info, 4, "k");
  auto x = floatArray(info, 0, "points", size_t(n) * d);
  auto init = floatArray(info, 3, "init", size_t(k) * d);
  if (isF32(x) || isF32(init)) typeError(env, "kmeansLloyd: points and init must be Float64Array");
  const double* pw = nullptr;
  Napi::Value wv = info[5];
  bool hasW = !wv.IsNull() && !wv.IsUndefined();
  if (hasW) {
    auto wa = floatArray(info, 5, "weights", size_t(n));
    if (isF32(wa)) typeError(env, "kmeansLloyd: weights must be a Float64Array");
    pw = ptr<double>(wa);
  }
  int maxIter = dim(info, 6, "maxIter", 0);
  if (!info[7].IsNumber()) typeError(env, "tol must be a number");
  double tol = info[7].As<Napi::Number>().DoubleValue();
  auto cent = Napi::Float64Array::New(env, size_t(k) * d);
  auto labels = Napi::Int32Array::New(env, size_t(n));
  auto res = std::make_shared<lora::KmeansOut>();
  auto run = [=, px = ptr<double>(x), pi = ptr<double>(init), pc = ptr<double>(cent),
              pl = reinterpret_cast<int32_t*>(static_cast<uint8_t*>(labels.ArrayBuffer().Data()) +
                                              labels.ByteOffset())] {
    return Ops::kmeansLloyd(px, n, d, pi, k, pw, maxIter, tol, pc, pl, res.get());
  };
  auto outs = std::make_shared<Outs>();
  outs->add("centroids", cent);
  outs->add("labels", labels);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".kmeansLloyd")).c_str(), run, objectOf(outs, [res](Napi::Object o) {
                           o.Set("inertia", res->inertia);
                           o.Set("iterations", res->iterations);
                         }));
  w->Keep(x);
  w->Keep(init);
  if (hasW) w->Keep(wv);
  auto p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace napi
}  // namespace lora
