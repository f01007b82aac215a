// N-API entry points on raw factor bytes (factorStats, truncateFactors, factorSpectrum) and the
// randomized SVD, written once over Ops<Cpu> or Ops<Cuda> (common/ops.h), and exportOps, the one
// list of functions both addons export (mirrored by linalg/native/binding.ts).
#pragma once
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "napi_ops.h"

namespace lora {
namespace napi {

constexpr size_t dtypeBytes(int dtype) { return dtype == 0 ? 4 : dtype == 3 ? 8 : 2; }

// The arguments of one module in a batched call (factorSpectra), read as a call's arguments are.
struct ArrayArgs {
  Napi::Array a;
  Napi::Value operator[](size_t i) const { return a.Get(uint32_t(i)); }
  Napi::Env Env() const { return a.Env(); }
};

template <class Args>
void bytesArg(const Args& info, size_t i, const char* what, size_t need, Napi::TypedArray& out) {
  if (!info[i].IsTypedArray() || info[i].template As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    typeError(info.Env(), std::string(what) + " must be a Uint8Array");
  out = info[i].template As<Napi::TypedArray>();
  if (out.ByteLength() != need)
    typeError(info.Env(), std::string(what) + " holds " + std::to_string(out.ByteLength()) + " bytes, expected " + std::to_string(need));
}

template <class Args>
double numberArg(const Args& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) typeError(info.Env(), std::string(what) + " must be a number");
  return info[i].template As<Napi::Number>().DoubleValue();
}

inline const uint8_t* bytesOf(const Napi::TypedArray& a) { return static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset(); }

// factorStats(raw: Uint8Array, dtype 0|1|2|3 (F32|F16|BF16|F64), rows, cols, gramRows)
//   → Promise<{data: Float64Array (rows×cols), gram: Float64Array (g×g), firstNonFinite: number}>
template <class Ops>
Napi::Value FactorStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dtype = dim(info, 1, "dtype", 0);
  int rows = dim(info, 2, "rows", 0), cols = dim(info, 3, "cols", 0);
  bool gramRows = info[4].ToBoolean();
  if (dtype > 3) typeError(env, "dtype must be 0 (F32), 1 (F16), 2 (BF16) or 3 (F64)");
  size_t n = size_t(rows) * size_t(cols);
  Napi::TypedArray raw;
  bytesArg(info, 0, "raw", n * dtypeBytes(dtype), raw);
  int g = gramRows ? rows : cols;
  auto data = Napi::Float64Array::New(env, n);
  auto gram = Napi::Float64Array::New(env, size_t(g) * g);
  auto bad = std::make_shared<int64_t>(-1);
  auto run = [=, pr = bytesOf(raw), pd = ptr<double>(data), pg = ptr<double>(gram)] {
    return Ops::factorStats(pr, dtype, rows, cols, gramRows, pd, pg, bad.get());
  };
  auto outs = std::make_shared<Outs>();
  outs->add("data", data);
  outs->add("gram", gram);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".factorStats")).c_str(), run,
                         objectOf(outs, [bad](Napi::Object o) { o.Set("firstNonFinite", double(*bad)); }));
  return queue(w, {raw});
}

// Arguments 0–6 of truncateFactors and factorSpectrum: rawB, dtypeB, rawA, dtypeA, out, r, in, then
// the scale at `scaleAt`. Checks dtype codes, byte lengths and the scale; rawB/rawA are the views to keep.
struct RawPair {
  TruncateArgs a;
  Napi::TypedArray rawB, rawA;
};
template <class Args>
RawPair rawPairArgs(const Args& info, size_t scaleAt) {
  RawPair p;
  TruncateArgs& a = p.a;
  a.dtypeB = dim(info, 1, "dtypeB", 0);
  a.dtypeA = dim(info, 3, "dtypeA", 0);
  a.out = dim(info, 4, "out"), a.r = dim(info, 5, "r"), a.in = dim(info, 6, "in");
  a.scale = numberArg(info, scaleAt, "scale");
  if (a.dtypeA > 3 || a.dtypeB > 3) typeError(info.Env(), "dtype codes are 0 (F32), 1 (F16), 2 (BF16), 3 (F64)");
  if (!std::isfinite(a.scale)) typeError(info.Env(), "scale must be finite");
  bytesArg(info, 0, "rawB", size_t(a.out) * a.r * dtypeBytes(a.dtypeB), p.rawB);
  bytesArg(info, 2, "rawA", size_t(a.r) * a.in * dtypeBytes(a.dtypeA), p.rawA);
  a.rawB = bytesOf(p.rawB);
  a.rawA = bytesOf(p.rawA);
  return p;
}

// The outcome fields both results carry.
inline void setOutcome(Napi::Object o, const TruncateOutcome& res) {
  o.Set("kind", res.kind);
  o.Set("norm2", res.norm2);
  o.Set("badFactor", res.badFactor);
  o.Set("badIndex", double(res.badIndex));
  o.Set("badValue", res.badValue);
}

// Uninitialised output buffers handed to JS as external ArrayBuffers (ownership moves on release).
struct OutBytes {
  std::unique_ptr<uint8_t[]> B, A;
  size_t nB, nA;
  OutBytes(size_t b, size_t a) : B(new uint8_t[std::max<size_t>(b, 1)]), A(new uint8_t[std::max<size_t>(a, 1)]), nB(b), nA(a) {}
  static Napi::Value release(Napi::Env env, std::unique_ptr<uint8_t[]>& p, size_t n) {
    uint8_t* raw = p.release();
    Napi::MemoryManagement::AdjustExternalMemory(env, int64_t(n));
    auto ab = Napi::ArrayBuffer::New(env, raw, n, [n](Napi::Env e, void* d) {
      delete[] static_cast<uint8_t*>(d);
      Napi::MemoryManagement::AdjustExternalMemory(e, -int64_t(n));
    });
    return Napi::Uint8Array::New(env, n, ab, 0);
  }
};

// truncateFactors(rawB, dtypeB, rawA, dtypeA, out, r, in, t, scale, scaleOut, balanced, outDtype, productsInDouble,
//                 grams?: Float64Array (G_B then G_A from factorSpectrum of the same bytes: the first pass is skipped))
//   → Promise<{kind: 0 done | 1 fallback | 2 non-finite, B: Uint8Array (out×t of outDtype), A: Uint8Array (t×in),
//              S: Float64Array (r), norm2, err2, resid2, productBits, badFactor, badIndex, badValue}>
template <class Ops>
Napi::Value TruncateFactors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RawPair in = rawPairArgs(info, 8);
  TruncateArgs& a = in.a;
  a.t = dim(info, 7, "t");
  a.scaleOut = numberArg(info, 9, "scaleOut");
  a.balanced = info[10].ToBoolean();
  a.outDtype = dim(info, 11, "outDtype", 0);
  a.productsInDouble = info[12].ToBoolean();
  Napi::Value gramsArg = info[13];
  const bool hasGrams = !gramsArg.IsUndefined() && !gramsArg.IsNull();
  if (a.outDtype > 3) typeError(env, "dtype codes are 0 (F32), 1 (F16), 2 (BF16), 3 (F64)");
  if (a.t > a.r) typeError(env, "truncateFactors: t must be ≤ r");
  if (!std::isfinite(a.scaleOut) || a.scaleOut == 0) typeError(env, "truncateFactors: scaleOut must be finite and ≠ 0");
  if (hasGrams) {
    auto g = floatArray(info, 13, "grams", 2 * size_t(a.r) * a.r);
    if (isF32(g) || g.ElementLength() != 2 * size_t(a.r) * a.r) typeError(env, "grams must be a Float64Array of 2·r² values");
    a.grams = ptr<double>(g);
  }
  const size_t es = dtypeBytes(a.outDtype);
  // The output bytes are allocated here without zero-filling and first touched by the worker (the
  // page faults of ~1 MB per module land there, not on the JS thread); they become external
  // ArrayBuffers when the result is built, freed by their finalizers.
  auto bytes = std::make_shared<OutBytes>(size_t(a.out) * a.t * es, size_t(a.t) * a.in * es);
  auto S = Napi::Float64Array::New(env, size_t(a.r));
  auto res = std::make_shared<TruncateOutcome>();
  auto run = [a, bytes, ps = ptr<double>(S), res] { return Ops::truncateFactors(a, bytes->B.get(), bytes->A.get(), ps, res.get()); };
  auto outs = std::make_shared<Outs>();
  outs->add("S", S);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".truncateFactors")).c_str(), run, objectOf(outs, [res, bytes](Napi::Object o) {
                           o.Set("B", bytes->release(o.Env(), bytes->B, bytes->nB));
                           o.Set("A", bytes->release(o.Env(), bytes->A, bytes->nA));
                           setOutcome(o, *res);
                           o.Set("err2", res->err2);
                           o.Set("resid2", res->resid2);
                           o.Set("productBits", res->productBits);
                         }));
  return queue(w, {in.rawB, in.rawA, hasGrams ? gramsArg : Napi::Value()});
}

// factorSpectrum(rawB, dtypeB, rawA, dtypeA, out, r, in, scale, keepGrams)
//   → Promise<{kind: 0 done | 1 fallback | 2 non-finite, S: Float64Array (r), grams?: Float64Array (G_B then G_A,
//              2r², when keepGrams), norm2, badFactor, badIndex, badValue}>
template <class Ops>
Napi::Value FactorSpectrum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RawPair in = rawPairArgs(info, 7);
  TruncateArgs& a = in.a;
  const bool keepGrams = info[8].ToBoolean();
  auto S = Napi::Float64Array::New(env, size_t(a.r));
  auto G = Napi::Float64Array::New(env, keepGrams ? 2 * size_t(a.r) * a.r : 0);
  auto res = std::make_shared<TruncateOutcome>();
  auto run = [a, ps = ptr<double>(S), pg = keepGrams ? ptr<double>(G) : nullptr, res] { return Ops::factorSpectrum(a, ps, pg, res.get()); };
  auto outs = std::make_shared<Outs>();
  outs->add("S", S);
  if (keepGrams) outs->add("grams", G);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".factorSpectrum")).c_str(), run,
                         objectOf(outs, [res](Napi::Object o) { setOutcome(o, *res); }));
  return queue(w, {in.rawB, in.rawA});
}

// factorSpectra(modules: [[rawB, dtypeB, rawA, dtypeA, out, r, in, scale, keepGrams], ...])
//   → Promise<[{S, grams?, kind, norm2, badFactor, badIndex, badValue}, ...]>: factorSpectrum of
//   every module, one after another in one worker (catalog mode: one thread-pool round trip per
//   adapter instead of one per module). A failing module fails the call.
template <class Ops>
Napi::Value FactorSpectra(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) typeError(env, "factorSpectra: modules must be an array");
  Napi::Array list = info[0].As<Napi::Array>();
  struct Item {
    TruncateArgs a;
    double* S;
    double* G;
    std::shared_ptr<TruncateOutcome> res;
  };
  std::vector<Item> items;
  std::vector<Napi::Value> keep;
  struct Out {
    Napi::Reference<Napi::Value> S, G;
    bool keepGrams;
  };
  auto outs = std::make_shared<std::vector<Out>>();
  auto results = std::make_shared<std::vector<std::shared_ptr<TruncateOutcome>>>();
  const uint32_t n = list.Length();
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsArray()) typeError(env, "factorSpectra: each module's arguments must be an array");
    ArrayArgs args{v.As<Napi::Array>()};
    RawPair in = rawPairArgs(args, 7);
    const bool keepGrams = args[8].ToBoolean();
    auto S = Napi::Float64Array::New(env, size_t(in.a.r));
    auto G = Napi::Float64Array::New(env, keepGrams ? 2 * size_t(in.a.r) * in.a.r : 0);
    auto res = std::make_shared<TruncateOutcome>();
    items.push_back({in.a, ptr<double>(S), keepGrams ? ptr<double>(G) : nullptr, res});
    keep.push_back(in.rawB);
    keep.push_back(in.rawA);
    outs->push_back({Napi::Persistent(Napi::Value(S)), Napi::Persistent(Napi::Value(G)), keepGrams});
    results->push_back(res);
  }
  auto run = [items = std::move(items)] {
    for (const Item& it : items) {
      Status st = Ops::factorSpectrum(it.a, it.S, it.G, it.res.get());
      if (!st.ok()) return st;
    }
    return Status{};
  };
  auto* w = new OpWorker(env, (Ops::label() + std::string(".factorSpectra")).c_str(), run, [outs, results](Napi::Env e) -> Napi::Value {
    Napi::Array arr = Napi::Array::New(e, outs->size());
    for (size_t i = 0; i < outs->size(); i++) {
      Napi::Object o = Napi::Object::New(e);
      o.Set("S", (*outs)[i].S.Value());
      if ((*outs)[i].keepGrams) o.Set("grams", (*outs)[i].G.Value());
      setOutcome(o, *(*results)[i]);
      arr.Set(uint32_t(i), o);
    }
    return arr;
  });
  for (const Napi::Value& v : keep) w->Keep(v);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// randomizedSvd(a (m×n), m, n, omega (n×l, a's element type), l, q, t) → Promise<{u (m×t), s (t), vt (t×n)}>
template <class Ops>
Napi::Value RandomizedSvd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int m = dim(info, 1, "rows"), n = dim(info, 2, "cols"), l = dim(info, 4, "l"), q = dim(info, 5, "q", 0), t = dim(info, 6, "t");
  auto a = floatArray(info, 0, "a", size_t(m) * n);
  auto om = floatArray(info, 3, "omega", size_t(n) * l);
  if (a.TypedArrayType() != om.TypedArrayType()) typeError(env, "a and omega must have the same element type");
  if (l > std::min(m, n) || t > l) typeError(env, "randomizedSvd: need t ≤ l ≤ min(rows, cols)");
  bool f32 = isF32(a);
  auto u = newLike(env, f32, size_t(m) * t), s = newLike(env, f32, size_t(t)), vt = newLike(env, f32, size_t(t) * n);
  auto run = perType(f32, [&](auto z) -> std::function<Status()> {
    using T = decltype(z);
    return [=, pa = ptr<T>(a), po = ptr<T>(om), pu = ptr<T>(u), ps = ptr<T>(s), pv = ptr<T>(vt)] {
      return Ops::template randomizedSvd<T>(pa, m, n, po, l, q, t, pu, ps, pv);
    };
  });
  auto outs = std::make_shared<Outs>();
  outs->add("u", u);
  outs->add("s", s);
  outs->add("vt", vt);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".randomizedSvd")).c_str(), run, objectOf(outs));
  return queue(w, {a, om});
}

// mergeWeight(data: Uint8Array (the stored weight, rewritten in place), dtype 0|1|2, out, in, transposed,
//             terms: [{B: Float32Array (out×r), A: Float32Array (r×in), r, coef}])
//   → Promise<{kind: 0 done | 1 base non-finite | 2 overflow, index, value}>
template <class Ops>
Napi::Value MergeWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MergeArgs a;
  a.dtype = dim(info, 1, "dtype", 0);
  a.out = dim(info, 2, "out"), a.in = dim(info, 3, "in");
  a.transposed = info[4].ToBoolean();
  if (a.dtype > 2) typeError(env, "mergeWeight: dtype codes are 0 (F32), 1 (F16), 2 (BF16)");
  Napi::TypedArray data;
  bytesArg(info, 0, "data", size_t(a.out) * a.in * dtypeBytes(a.dtype), data);
  a.data = const_cast<uint8_t*>(bytesOf(data));
  if (!info[5].IsArray()) typeError(env, "mergeWeight: terms must be an array");
  Napi::Array list = info[5].As<Napi::Array>();
  auto terms = std::make_shared<std::vector<MergeTerm>>(list.Length());
  std::vector<Napi::Value> keep{data};
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list[i];
    if (!v.IsObject()) typeError(env, "mergeWeight: each term must be an object");
    Napi::Object t = v.As<Napi::Object>();
    Napi::Value r = t.Get("r"), coef = t.Get("coef"), B = t.Get("B"), A = t.Get("A");
    if (!r.IsNumber() || !coef.IsNumber()) typeError(env, "mergeWeight: term r and coef must be numbers");
    double rv = r.As<Napi::Number>().DoubleValue();
    if (!(rv >= 1) || rv > 2147483647.0 || std::floor(rv) != rv) typeError(env, "mergeWeight: term r must be an integer ≥ 1");
    MergeTerm& mt = (*terms)[i];
    mt.r = int(rv);
    mt.coef = float(coef.As<Napi::Number>().DoubleValue());
    auto check = [&](Napi::Value val, size_t need, const char* what) {
      if (!val.IsTypedArray()) typeError(env, std::string("mergeWeight: term ") + what + " must be a Float32Array");
      Napi::TypedArray ta = val.As<Napi::TypedArray>();
      if (ta.TypedArrayType() != napi_float32_array || ta.ElementLength() != need)
        typeError(env, std::string("mergeWeight: term ") + what + " must be a Float32Array of " + std::to_string(need) + " values");
      keep.push_back(val);
    };
    check(B, size_t(a.out) * mt.r, "B");
    check(A, size_t(mt.r) * a.in, "A");
    mt.B = ptr<float>(B.As<Napi::TypedArray>());
    mt.A = ptr<float>(A.As<Napi::TypedArray>());
  }
  a.terms = terms->data();
  a.nTerms = int(terms->size());
  auto res = std::make_shared<MergeOutcome>();
  auto run = [a, terms, res] { return Ops::mergeWeight(a, res.get()); };
  auto* w = new OpWorker(env, (Ops::label() + std::string(".mergeWeight")).c_str(), run, objectOf(std::make_shared<Outs>(), [res](Napi::Object o) {
                           o.Set("kind", res->kind);
                           o.Set("index", double(res->index));
                           o.Set("value", res->value);
                         }));
  for (auto& v : keep) w->Keep(v);
  return queue(w, {});
}

// weightDelta(tuned: Uint8Array, base: Uint8Array, dtype 0|1|2, delta: Float32Array (n), norm2In)
//   → Promise<{norm2 (norm2In + Σ ΔW²), firstNonFinite, which: 0 tuned | 1 base | 2 difference}>
template <class Ops>
Napi::Value WeightDelta(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dtype = dim(info, 2, "dtype", 0);
  if (dtype > 2) typeError(env, "weightDelta: dtype codes are 0 (F32), 1 (F16), 2 (BF16)");
  if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    typeError(env, "weightDelta: delta must be a Float32Array");
  auto delta = info[3].As<Napi::TypedArray>();
  size_t n = delta.ElementLength();
  Napi::TypedArray tuned, base;
  bytesArg(info, 0, "tuned", n * dtypeBytes(dtype), tuned);
  bytesArg(info, 1, "base", n * dtypeBytes(dtype), base);
  struct R {
    double norm2 = 0;
    int64_t bad = -1;
    int which = -1;
  };
  auto res = std::make_shared<R>();
  res->norm2 = numberArg(info, 4, "norm2In");
  auto run = [=, pt = bytesOf(tuned), pb = bytesOf(base), pd = ptr<float>(delta)] {
    return Ops::weightDelta(pt, pb, dtype, int64_t(n), pd, &res->norm2, &res->bad, &res->which);
  };
  auto* w = new OpWorker(env, (Ops::label() + std::string(".weightDelta")).c_str(), run, objectOf(std::make_shared<Outs>(), [res](Napi::Object o) {
                           o.Set("norm2", res->norm2);
                           o.Set("firstNonFinite", double(res->bad));
                           o.Set("which", res->which);
                         }));
  return queue(w, {tuned, base, delta});
}

// sketch(m: Float32Array (rows×cols), rows, cols, omega: Float32Array (cols×l), l, t, allowed, floor, norm2, maxIters)
//   → Promise<{Q (rows×l), Uz (cols×l), VzT (l×l), sigma (l): Float64Array; iters, excess2, floorLimited, firstNonFinite}>
template <class Ops>
Napi::Value Sketch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SketchArgs a;
  a.rows = dim(info, 1, "rows"), a.cols = dim(info, 2, "cols"), a.l = dim(info, 4, "l"), a.t = dim(info, 5, "t");
  a.allowed = numberArg(info, 6, "allowed"), a.floor = numberArg(info, 7, "floor"), a.norm2 = numberArg(info, 8, "norm2");
  a.maxIters = dim(info, 9, "maxIters", 0);
  auto m = floatArray(info, 0, "m", size_t(a.rows) * a.cols);
  auto om = floatArray(info, 3, "omega", size_t(a.cols) * a.l);
  if (!isF32(m) || !isF32(om)) typeError(env, "sketch: m and omega must be Float32Array");
  if (a.l > std::min(a.rows, a.cols) || a.t > a.l) typeError(env, "sketch: need t ≤ l ≤ min(rows, cols)");
  auto Q = Napi::Float64Array::New(env, size_t(a.rows) * a.l), Uz = Napi::Float64Array::New(env, size_t(a.cols) * a.l);
  auto VzT = Napi::Float64Array::New(env, size_t(a.l) * a.l), sigma = Napi::Float64Array::New(env, size_t(a.l));
  auto res = std::make_shared<SketchOut>();
  res->Q = ptr<double>(Q), res->Uz = ptr<double>(Uz), res->VzT = ptr<double>(VzT), res->sigma = ptr<double>(sigma);
  a.m = ptr<float>(m), a.omega = ptr<float>(om);
  auto run = [a, res] { return Ops::sketch(a, res.get()); };
  auto outs = std::make_shared<Outs>();
  outs->add("Q", Q);
  outs->add("Uz", Uz);
  outs->add("VzT", VzT);
  outs->add("sigma", sigma);
  auto* w = new OpWorker(env, (Ops::label() + std::string(".sketch")).c_str(), run, objectOf(outs, [res](Napi::Object o) {
                           o.Set("iters", res->iters);
                           o.Set("excess2", res->excess2);
                           o.Set("floorLimited", res->floorLimited);
                           o.Set("firstNonFinite", double(res->firstNonFinite));
                         }));
  return queue(w, {m, om});
}

/** Every compute function of an addon (the same list for cpu and cuda), exported under its name. */
template <class Ops>
void exportOps(Napi::Env env, Napi::Object exports) {
  using Fn = Napi::Value (*)(const Napi::CallbackInfo&);
  const std::pair<const char*, Fn> fns[] = {
      {"gemm", Gemm<Ops>}, {"qr", Qr<Ops>}, {"svd", Svd<Ops>}, {"eigSym", EigSym<Ops>}, {"kmeansLloyd", KmeansLloyd<Ops>},
      {"factorStats", FactorStats<Ops>}, {"truncateFactors", TruncateFactors<Ops>},
      {"factorSpectrum", FactorSpectrum<Ops>}, {"factorSpectra", FactorSpectra<Ops>}, {"randomizedSvd", RandomizedSvd<Ops>},
      {"mergeWeight", MergeWeight<Ops>}, {"weightDelta", WeightDelta<Ops>}, {"sketch", Sketch<Ops>},
  };
  for (const auto& [name, fn] : fns) exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace napi
}  // namespace lora
