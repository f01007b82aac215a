// lora_cpu.node: N-API surface of the CPU operations (ops.cc, BLAS/LAPACK opened at run time by
// blas.cc). Every compute call is an AsyncWorker resolving a Promise (common/napi_ops.h), so the
// event loop keeps running during BLAS/LAPACK work. The raw signatures are mirrored by
// `CpuBinding` in linalg/native.ts (bump kAbiVersion with any change); that file validates
// shapes and finiteness before calling in.
#include <algorithm>
#include <memory>

#include "../common/napi_ops.h"
#include "blas.h"
#include "kernels.h"
#include "ops.h"
#include "truncate.h"

namespace {

constexpr int kAbiVersion = 1;

struct CpuOps {
  static constexpr const char* prefix = "lora_cpu";
  template <typename T>
  static lora::Status gemm(const T* a, int ar, int ac, const T* b, int br, int bc, bool ta, bool tb, T alpha, T* c) {
    return lora::gemm<T>(a, ar, ac, b, br, bc, ta, tb, alpha, c);
  }
  template <typename T>
  static lora::Status qr(const T* a, int m, int n, T* q, T* r) {
    return lora::qr<T>(a, m, n, q, r);
  }
  template <typename T>
  static lora::Status svd(const T* a, int m, int n, T* u, T* s, T* vt) {
    return lora::svd<T>(a, m, n, u, s, vt);
  }
  template <typename T>
  static lora::Status eigSym(const T* a, int n, T* values, T* vectors) {
    return lora::eigSym<T>(a, n, values, vectors);
  }
  static lora::Status kmeansLloyd(const double* x, int n, int d, const double* init, int k, const double* w,
                                  int maxIter, double tol, double* c, int32_t* labels, lora::KmeansOut* out) {
    return lora::kmeansLloyd(x, n, d, init, k, w, maxIter, tol, c, labels, out);
  }
};

using namespace lora::napi;

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const lora::Blas& b = lora::blas();
  Napi::Object o = Napi::Object::New(env);
  o.Set("abiVersion", kAbiVersion);
  o.Set("loaded", b.loaded);
  if (!b.loaded) o.Set("error", b.error);
  o.Set("library", b.library);
  o.Set("vendor", b.vendor);
  o.Set("corename", b.corename);
  o.Set("coretype", b.coretype);
  o.Set("coretypeSource", b.coretypeSource);
  o.Set("threads", lora::threads());
  o.Set("threadControl", b.setThreads != nullptr);
  return o;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  int n = dim(info, 0, "threads");
  lora::setThreads(n);
  return Napi::Number::New(info.Env(), lora::threads());
}

// factorStats(raw: Uint8Array, dtype 0|1|2|3 (F32|F16|BF16|F64), rows, cols, gramRows)
//   → Promise<{data: Float64Array (rows×cols), gram: Float64Array (g×g), firstNonFinite: number}>
// CPU addon only (optional in ComputeBinding): decode + finiteness + Gram in one worker call.
Napi::Value FactorStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    typeError(env, "raw must be a Uint8Array");
  auto raw = info[0].As<Napi::TypedArray>();
  int dtype = dim(info, 1, "dtype", 0);
  int rows = dim(info, 2, "rows", 0), cols = dim(info, 3, "cols", 0);
  bool gramRows = info[4].ToBoolean();
  static const int sizes[] = {4, 2, 2, 8};
  if (dtype > 3) typeError(env, "dtype must be 0 (F32), 1 (F16), 2 (BF16) or 3 (F64)");
  size_t n = size_t(rows) * size_t(cols);
  if (raw.ByteLength() != n * size_t(sizes[dtype]))
    typeError(env, "raw holds " + std::to_string(raw.ByteLength()) + " bytes, expected " + std::to_string(n * sizes[dtype]));
  int g = gramRows ? rows : cols;
  auto data = Napi::Float64Array::New(env, n);
  auto gram = Napi::Float64Array::New(env, size_t(g) * g);
  auto bad = std::make_shared<int64_t>(-1);
  auto run = [=, pr = static_cast<const uint8_t*>(raw.ArrayBuffer().Data()) + raw.ByteOffset(), pd = ptr<double>(data),
              pg = ptr<double>(gram)] {
    return lora::factorStats(pr, dtype, rows, cols, gramRows, pd, pg, bad.get());
  };
  auto outs = std::make_shared<Outs>();
  outs->add("data", data);
  outs->add("gram", gram);
  auto* w = new OpWorker(env, "lora_cpu.factorStats", run,
                         objectOf(outs, [bad](Napi::Object o) { o.Set("firstNonFinite", double(*bad)); }));
  w->Keep(raw);
  auto p = w->Promise();
  w->Queue();
  return p;
}

namespace {
void bytesArg(const Napi::CallbackInfo& info, size_t i, const char* what, size_t need, Napi::TypedArray& out) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    typeError(info.Env(), std::string(what) + " must be a Uint8Array");
  out = info[i].As<Napi::TypedArray>();
  if (out.ByteLength() != need)
    typeError(info.Env(), std::string(what) + " holds " + std::to_string(out.ByteLength()) + " bytes, expected " + std::to_string(need));
}
double numberArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) typeError(info.Env(), std::string(what) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}
}  // namespace

// Arguments 0–6 of truncateFactors and factorSpectrum: rawB, dtypeB, rawA, dtypeA, out, r, in, then
// the scale at `scaleAt`. Checks dtype codes, byte lengths and the scale; rawB/rawA are the views to Keep.
void rawPairArgs(const Napi::CallbackInfo& info, size_t scaleAt, lora::TruncateArgs& a, Napi::TypedArray& rawB, Napi::TypedArray& rawA) {
  a.dtypeB = dim(info, 1, "dtypeB", 0);
  a.dtypeA = dim(info, 3, "dtypeA", 0);
  a.out = dim(info, 4, "out"), a.r = dim(info, 5, "r"), a.in = dim(info, 6, "in");
  a.scale = numberArg(info, scaleAt, "scale");
  if (a.dtypeA > 3 || a.dtypeB > 3) typeError(info.Env(), "dtype codes are 0 (F32), 1 (F16), 2 (BF16), 3 (F64)");
  if (!std::isfinite(a.scale)) typeError(info.Env(), "scale must be finite");
  bytesArg(info, 0, "rawB", size_t(a.out) * a.r * lora::kernels::dtypeSize(a.dtypeB), rawB);
  bytesArg(info, 2, "rawA", size_t(a.r) * a.in * lora::kernels::dtypeSize(a.dtypeA), rawA);
  a.rawB = static_cast<const uint8_t*>(rawB.ArrayBuffer().Data()) + rawB.ByteOffset();
  a.rawA = static_cast<const uint8_t*>(rawA.ArrayBuffer().Data()) + rawA.ByteOffset();
}

// The outcome fields both results carry.
void setOutcome(Napi::Object o, const lora::TruncateOutcome& res) {
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
// CPU addon only (optional in ComputeBinding): one module's fused truncation (truncate.cc), single-threaded.
Napi::Value TruncateFactors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  lora::TruncateArgs a;
  Napi::TypedArray rawB, rawA;
  rawPairArgs(info, 8, a, rawB, rawA);
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
  const size_t es = lora::kernels::dtypeSize(a.outDtype);
  // The output bytes are allocated here without zero-filling and first touched by the worker (the
  // page faults of ~1 MB per module land there, not on the JS thread); they become external
  // ArrayBuffers when the result is built, freed by their finalizers.
  auto bytes = std::make_shared<OutBytes>(size_t(a.out) * a.t * es, size_t(a.t) * a.in * es);
  auto S = Napi::Float64Array::New(env, size_t(a.r));
  auto res = std::make_shared<lora::TruncateOutcome>();
  auto run = [a, bytes, ps = ptr<double>(S), res] { return lora::truncateFactors(a, bytes->B.get(), bytes->A.get(), ps, res.get()); };
  auto outs = std::make_shared<Outs>();
  outs->add("S", S);
  auto* w = new OpWorker(env, "lora_cpu.truncateFactors", run, objectOf(outs, [res, bytes](Napi::Object o) {
                           o.Set("B", bytes->release(o.Env(), bytes->B, bytes->nB));
                           o.Set("A", bytes->release(o.Env(), bytes->A, bytes->nA));
                           setOutcome(o, *res);
                           o.Set("err2", res->err2);
                           o.Set("resid2", res->resid2);
                           o.Set("productBits", res->productBits);
                         }));
  w->Keep(rawB);
  w->Keep(rawA);
  if (hasGrams) w->Keep(gramsArg);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// factorSpectrum(rawB, dtypeB, rawA, dtypeA, out, r, in, scale, keepGrams)
//   → Promise<{kind: 0 done | 1 fallback | 2 non-finite, S: Float64Array (r), grams?: Float64Array (G_B then G_A,
//              2r², when keepGrams), norm2, badFactor, badIndex, badValue}>
// CPU addon only (optional in ComputeBinding): σ of one module from its raw bytes (truncate.cc), single-threaded.
Napi::Value FactorSpectrum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  lora::TruncateArgs a;
  Napi::TypedArray rawB, rawA;
  rawPairArgs(info, 7, a, rawB, rawA);
  const bool keepGrams = info[8].ToBoolean();
  auto S = Napi::Float64Array::New(env, size_t(a.r));
  auto G = Napi::Float64Array::New(env, keepGrams ? 2 * size_t(a.r) * a.r : 0);
  auto res = std::make_shared<lora::TruncateOutcome>();
  auto run = [a, ps = ptr<double>(S), pg = keepGrams ? ptr<double>(G) : nullptr, res] { return lora::factorSpectrum(a, ps, pg, res.get()); };
  auto outs = std::make_shared<Outs>();
  outs->add("S", S);
  if (keepGrams) outs->add("grams", G);
  auto* w = new OpWorker(env, "lora_cpu.factorSpectrum", run, objectOf(outs, [res](Napi::Object o) { setOutcome(o, *res); }));
  w->Keep(rawB);
  w->Keep(rawA);
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("gemm", Napi::Function::New(env, Gemm<CpuOps>, "gemm"));
  exports.Set("qr", Napi::Function::New(env, Qr<CpuOps>, "qr"));
  exports.Set("svd", Napi::Function::New(env, Svd<CpuOps>, "svd"));
  exports.Set("eigSym", Napi::Function::New(env, EigSym<CpuOps>, "eigSym"));
  exports.Set("kmeansLloyd", Napi::Function::New(env, KmeansLloyd<CpuOps>, "kmeansLloyd"));
  exports.Set("factorStats", Napi::Function::New(env, FactorStats, "factorStats"));
  exports.Set("truncateFactors", Napi::Function::New(env, TruncateFactors, "truncateFactors"));
  exports.Set("factorSpectrum", Napi::Function::New(env, FactorSpectrum, "factorSpectrum"));
  return exports;
}

}  // namespace

NODE_API_MODULE(lora_cpu, Init)
