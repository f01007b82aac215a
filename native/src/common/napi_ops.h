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
#include <initializer_list>
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

// The worker body for the array's element type: make(T{}) builds it with T = float or double.
template <class Make>
std::function<Status()> perType(bool f32, Make make) {
  if (f32) return make(float{});
  return make(double{});
}

// Queues the worker, keeping `inputs` (empty values skipped) alive until it settles; its Promise.
inline Napi::Value queue(OpWorker* w, std::initializer_list<Napi::Value> inputs) {
  for (const Napi::Value& v : inputs)
    if (!v.IsEmpty()) w->Keep(v);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

[[noreturn]] inline void typeError(Napi::Env env, const std::string& m) { throw Napi::TypeError::New(env, m); }

// Args: Napi::CallbackInfo, or ArrayArgs (napi_fused.h: one module's arguments of a batched call).
template <class Args>
int dim(const Args& info, size_t i, const char* what, int min = 1) {
  if (!info[i].IsNumber()) typeError(info.Env(), std::string(what) + " must be a number");
  double v = info[i].template As<Napi::Number>().DoubleValue();
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

// Queues `run` as the worker of `name`, resolving to an object of the named output arrays.
inline Napi::Value start(Napi::Env env, const std::string& name, std::function<Status()> run,
                         std::initializer_list<std::pair<const char*, Napi::Value>> outputs,
                         std::initializer_list<Napi::Value> inputs) {
  auto outs = std::make_shared<Outs>();
  for (const auto& kv : outputs) outs->add(kv.first, kv.second);
  return queue(new OpWorker(env, name.c_str(), std::move(run), objectOf(outs)), inputs);
}

// gemm(a, aRows, aCols, b, bRows, bCols, transA, transB, alpha[, c]) → Promise<TypedArray (m×n)>:
// the result in c when given (≥ m·n elements of a's type, not overlapping a or b), else a new array.
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
  bool into = info.Length() > 9 && info[9].IsTypedArray();
  auto c = into ? floatArray(info, 9, "c", size_t(m) * n) : newLike(env, f32, size_t(m) * n);
  if (isF32(c) != f32) typeError(env, "c must have the element type of a and b");
  auto run = perType(f32, [&](auto z) -> std::function<Status()> {
    using T = decltype(z);
    return [=, pa = ptr<T>(a), pb = ptr<T>(b), pc = ptr<T>(c)] { return Ops::template gemm<T>(pa, ar, ac, pb, br, bc, ta, tb, T(alpha), pc); };
  });
  auto outs = std::make_shared<Outs>();
  outs->add("c", c);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".gemm")).c_str(), run, [outs](Napi::Env) { return outs->v[0].second.Value(); });
  return queue(w, {a, b});
}

// Arguments (a, m, n) of qr and svd: the array, its shape, k = min(m, n), and whether it is float32.
struct MatArg {
  Napi::TypedArray a;
  int m, n, k;
  bool f32;
};
inline MatArg matArg(const Napi::CallbackInfo& info) {
  int m = dim(info, 1, "rows"), n = dim(info, 2, "cols");
  auto a = floatArray(info, 0, "a", size_t(m) * n);
  return {a, m, n, std::min(m, n), isF32(a)};
}

// qr(a, m, n) → Promise<{q (m×k), r (k×n)}>
template <class Ops>
Napi::Value Qr(const Napi::CallbackInfo& info) {
  const MatArg x = matArg(info);
  auto q = newLike(info.Env(), x.f32, size_t(x.m) * x.k), r = newLike(info.Env(), x.f32, size_t(x.k) * x.n);
  auto run = perType(x.f32, [&](auto z) -> std::function<Status()> {
    using T = decltype(z);
    return [x, pa = ptr<T>(x.a), pq = ptr<T>(q), pr = ptr<T>(r)] { return Ops::template qr<T>(pa, x.m, x.n, pq, pr); };
  });
  return start(info.Env(), Ops::label() + std::string(".qr"), run, {{"q", q}, {"r", r}}, {x.a});
}

// svd(a, m, n) → Promise<{u (m×k), s (k), vt (k×n)}>
template <class Ops>
Napi::Value Svd(const Napi::CallbackInfo& info) {
  const MatArg x = matArg(info);
  Napi::Env env = info.Env();
  auto u = newLike(env, x.f32, size_t(x.m) * x.k), s = newLike(env, x.f32, size_t(x.k)), vt = newLike(env, x.f32, size_t(x.k) * x.n);
  auto run = perType(x.f32, [&](auto z) -> std::function<Status()> {
    using T = decltype(z);
    return [x, pa = ptr<T>(x.a), pu = ptr<T>(u), ps = ptr<T>(s), pv = ptr<T>(vt)] { return Ops::template svd<T>(pa, x.m, x.n, pu, ps, pv); };
  });
  return start(env, Ops::label() + std::string(".svd"), run, {{"u", u}, {"s", s}, {"vt", vt}}, {x.a});
}

// eigSym(a, n) → Promise<{values (n, descending), vectors (n×n, column j ↔ values[j])}>
template <class Ops>
Napi::Value EigSym(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = dim(info, 1, "n");
  auto a = floatArray(info, 0, "a", size_t(n) * n);
  bool f32 = isF32(a);
  auto vals = newLike(env, f32, size_t(n)), vecs = newLike(env, f32, size_t(n) * n);
  auto run = perType(f32, [&](auto z) -> std::function<Status()> {
    using T = decltype(z);
    return [=, pa = ptr<T>(a), pv = ptr<T>(vals), pz = ptr<T>(vecs)] { return Ops::template eigSym<T>(pa, n, pv, pz); };
  });
  return start(env, Ops::label() + std::string(".eigSym"), run, {{"values", vals}, {"vectors", vecs}}, {a});
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
  return queue(w, {x, init, hasW ? wv : Napi::Value()});
}

}  // namespace napi
}  // namespace lora
