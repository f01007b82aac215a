import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, test } from "node:test";
import { RuntimeFailure } from "../../common/errors.js";
import { writeFileAtomic } from "../../common/atomic.js";
import { DTYPES, DTYPE_BITS, canDecode, encodeFloats, dtypeAlignment, type DType } from "../../common/dtype.js";
import { SafetensorsError, UnsupportedDTypeError } from "./errors.js";
import { parseHeader } from "./header.js";
import { MAX_BUFFER_BYTES, SYNC_READ_BYTES } from "./limits.js";
import { SafetensorsFile } from "./reader.js";
import { layoutSafetensors, serializeSafetensors, writeSafetensors, type TensorSpec } from "./writer.js";
import { sharedDir } from "../../test/paths.js";

const dir = mkdtempSync(join(tmpdir(), "lora-reader-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** mulberry32: a small seeded generator, so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const randomBytes = (r: () => number, n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(r() * 256));

/** A shape with a whole number of bytes for `dtype` (and some empty / scalar shapes). */
function shapeFor(dtype: DType, i: number): number[] {
  const shapes = [[3, 5], [7], [], [2, 0, 4], [4, 2, 2]];
  const s = shapes[i % shapes.length];
  const n = s.reduce((a, b) => a * b, 1);
  return (n * DTYPE_BITS[dtype]) % 8 === 0 ? s : [4, 3];
}

interface Expected {
  name: string;
  dtype: DType;
  shape: number[];
  bytes: Uint8Array;
  values?: Float64Array;
}

/** Random tensors of every dtype: float ones from values, the rest from random bytes. */
function randomTensors(seed: number): Expected[] {
  const r = rng(seed);
  const out: Expected[] = [];
  DTYPES.forEach((dtype, i) => {
    const shape = shapeFor(dtype, i);
    const n = shape.reduce((a, b) => a * b, 1);
    const name = `t${String(DTYPES.length - i).padStart(2, "0")}.${dtype.toLowerCase()}`;
    if (dtype === "F64" || dtype === "F32" || dtype === "F16" || dtype === "BF16") {
      const v = Float64Array.from({ length: n }, () => (r() - 0.5) * 8);
      out.push({ name, dtype, shape, bytes: encodeFloats(dtype, v), values: v });
    } else {
      let bytes = randomBytes(r, (n * DTYPE_BITS[dtype]) / 8);
      if (dtype === "BOOL") bytes = bytes.map((x) => x & 1);
      out.push({ name, dtype, shape, bytes });
    }
  });
  return out;
}

function expectedNumbers(e: Expected): number[] {
  const b = e.bytes;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = b.byteLength / (DTYPE_BITS[e.dtype] / 8);
  const get: Partial<Record<DType, (i: number) => number>> = {
    I64: (i) => Number(dv.getBigInt64(i * 8, true)),
    U64: (i) => Number(dv.getBigUint64(i * 8, true)),
    I32: (i) => dv.getInt32(i * 4, true),
    U32: (i) => dv.getUint32(i * 4, true),
    I16: (i) => dv.getInt16(i * 2, true),
    U16: (i) => dv.getUint16(i * 2, true),
    I8: (i) => dv.getInt8(i),
    U8: (i) => dv.getUint8(i),
    BOOL: (i) => (dv.getUint8(i) ? 1 : 0),
    F64: (i) => dv.getFloat64(i * 8, true),
    F32: (i) => dv.getFloat32(i * 4, true),
  };
  return Array.from({ length: n }, (_, i) => get[e.dtype]!(i));
}

async function checkFile(f: SafetensorsFile, tensors: Expected[]): Promise<void> {
  assert.equal(f.header.tensors.length, tensors.length);
  for (const e of tensors) {
    const info = f.tensor(e.name);
    assert.equal(info.dtype, e.dtype);
    assert.deepEqual(info.shape, e.shape);
    assert.equal((f.header.dataStart + info.begin) % dtypeAlignment(e.dtype), 0, `${e.name} aligned in the file`);
    assert.ok(Buffer.from(await f.readRaw(e.name)).equals(Buffer.from(e.bytes)), `${e.name} bytes`);
    if (!canDecode(e.dtype)) {
      await assert.rejects(f.readFloat32(e.name), UnsupportedDTypeError);
      continue;
    }
    const f32 = await f.readFloat32(info);
    const f64 = await f.readFloat64(info);
    // decoded into a given (pooled, dirty) array: the same values, in that array
    const into = new Float64Array(f64.length).fill(Number.NaN);
    const got = await f.readFloat64(info, into);
    assert.equal(got, into);
    assert.deepEqual([...got], [...f64], `${e.name} decoded into a given array`);
    // a fresh result never shares the file's memory, even for F64 held in memory
    if (f64.length > 0) {
      f64[0] = 12345;
      assert.notEqual((await f.readFloat64(info))[0], 12345, `${e.name}: readFloat64 aliased the file`);
      f64[0] = got[0]!;
    }
    await assert.rejects(f.readFloat64(info, new Float64Array(f64.length + 1)), RangeError);
    if (e.values && (e.dtype === "F16" || e.dtype === "BF16")) {
      const tol = e.dtype === "F16" ? 2 ** -11 : 2 ** -8;
      e.values.forEach((v, i) => {
        assert.ok(Math.abs(f64[i] - v) <= Math.abs(v) * tol + 1e-7, `${e.name}[${i}] ${f64[i]} vs ${v}`);
        assert.equal(f32[i], f64[i]);
      });
    } else {
      const want = expectedNumbers(e);
      assert.deepEqual([...f64], want, `${e.name} as f64`);
      assert.deepEqual([...f32], want.map(Math.fround), `${e.name} as f32`);
    }
  }
}

const specsOf = (tensors: Expected[]): TensorSpec[] => tensors.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, data: e.bytes }));

test("reference byte layouts: test_serialization, test_empty, test_serialization_forced_alignement", async () => {
  const data = encodeFloats("F32", Float32Array.of(0, 1, 2, 3, 4, 5));
  const out = await serializeSafetensors([{ name: "attn.0", dtype: "F32", shape: [1, 2, 3], data }], null);
  assert.deepEqual(
    [...out],
    [
      64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97,
      112, 101, 34, 58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125,
      0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
    ],
  );
  assert.deepEqual([...(await serializeSafetensors([], null))], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
  assert.deepEqual(
    [...(await serializeSafetensors([], { framework: "pt" }))],
    [
      40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95, 95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34,
      58, 34, 112, 116, 34, 125, 125, 32, 32, 32, 32, 32,
    ],
  );
  const forced = await serializeSafetensors([{ name: "attn0", dtype: "F32", shape: [1, 1, 2, 3], data }], null);
  assert.equal(forced.readBigUInt64LE(0), 72n);
  assert.deepEqual([...forced.subarray(8 + 65, 80)], [32, 32, 32, 32, 32, 32, 32]);
  assert.deepEqual(
    [...(await serializeSafetensors([{ name: "attn.0", dtype: "F4", shape: [1, 2], data: new Uint8Array(1) }], null)).subarray(68)],
    [32, 32, 32, 32, 0],
  );
});

test("writer order: dtype alignment descending (reference enum order), then name by UTF-8 bytes", () => {
  const spec = (name: string, dtype: DType): TensorSpec => ({ name, dtype, shape: [0], data: new Uint8Array(0) });
  const { order } = layoutSafetensors(
    [
      spec("b", "F16"),
      spec("a", "BF16"),
      spec("z", "F64"),
      spec("y", "I64"),
      spec("c", "U8"),
      spec("b2", "F32"),
      spec("\u{1F600}", "F16"),
      spec("\uFF01", "F16"),
    ],
    null,
  );
  assert.deepEqual(
    order.map((s) => s.name),
    ["y", "z", "b2", "a", "b", "\uFF01", "\u{1F600}", "c"],
  );
});

test("writer refuses bad specs with an internal RuntimeFailure", async () => {
  const ok: TensorSpec = { name: "a", dtype: "F32", shape: [2], data: new Uint8Array(8) };
  assert.throws(() => layoutSafetensors([ok, { ...ok }], null), /duplicate output tensor "a"/);
  assert.throws(() => layoutSafetensors([{ ...ok, data: new Uint8Array(4) }], null), RuntimeFailure);
  assert.throws(() => layoutSafetensors([{ ...ok, produce: async () => new Uint8Array(8) }], null), /exactly one/);
  assert.throws(() => layoutSafetensors([{ name: "a", dtype: "F4", shape: [3], data: new Uint8Array(2) }], null), RuntimeFailure);
  assert.throws(() => layoutSafetensors([{ ...ok, name: "__metadata__" }], null), RuntimeFailure);
  assert.throws(() => layoutSafetensors([{ ...ok, name: "a\uD800" }], null), /lone surrogate/);
  assert.throws(() => layoutSafetensors([ok], { n: 5 as unknown as string }), RuntimeFailure);
  assert.throws(
    () => layoutSafetensors([], { big: "x".repeat(100_000_000) }),
    (e: unknown) => e instanceof SafetensorsError && e.variant === "HeaderTooLarge",
  );
  await assert.rejects(
    serializeSafetensors([{ name: "p", dtype: "F32", shape: [3], produce: async () => new Uint8Array(8) }], null),
    (e: unknown) => e instanceof RuntimeFailure && e.message === "internal: produced 8 bytes for p, expected 12",
  );
  const parts = (...n: number[]) =>
    async function* () {
      for (const k of n) yield new Uint8Array(k).fill(k);
    };
  await assert.rejects(
    serializeSafetensors([{ name: "p", dtype: "F32", shape: [3], pieces: parts(4, 4) }], null),
    (e: unknown) => e instanceof RuntimeFailure && e.message === "internal: produced 8 bytes for p, expected 12",
  );
  await assert.rejects(serializeSafetensors([{ name: "p", dtype: "F32", shape: [3], pieces: parts(8, 8) }], null), /produced more than the 12 bytes of p/);
  // pieces are written in order, back to back
  const whole = await serializeSafetensors([{ name: "p", dtype: "U8", shape: [7], pieces: parts(3, 0, 4) }], null);
  assert.deepEqual([...whole.subarray(whole.length - 7)], [3, 3, 3, 4, 4, 4, 4]);
});

test("every dtype round-trips: serialize → fromBuffer, and write → open (positional reads)", async () => {
  const tensors = randomTensors(1);
  const meta = { format: "pt", note: "ünïcode ✓", json: '{"r": 8}' };
  const buf = await serializeSafetensors(specsOf(tensors), meta);
  const h = parseHeader(buf, buf.length, "mem");
  assert.deepEqual(h.metadata, meta);
  await checkFile(SafetensorsFile.fromBuffer(buf, "mem"), tensors);

  const path = join(dir, "all.safetensors");
  let produced: string[] = [];
  const specs: TensorSpec[] = tensors.map((e) => ({
    name: e.name,
    dtype: e.dtype,
    shape: e.shape,
    produce: async () => {
      produced.push(e.name);
      return e.bytes;
    },
  }));
  await writeFileAtomic(path, (sink) => writeSafetensors(sink, specs, meta), { force: false, inputs: [] });
  assert.ok(readFileSync(path).equals(buf), "streamed file is byte-identical to the in-memory one");
  const { order } = layoutSafetensors(specs, meta);
  assert.deepEqual(
    produced,
    order.map((s) => s.name),
    "produce() called lazily, in file order",
  );
  const f = await SafetensorsFile.open(path);
  try {
    assert.equal(f.size, buf.length);
    assert.equal(f.label, path);
    await checkFile(f, tensors);
    // copyFrom: an output copied from this file is identical
    produced = [];
    const copy = await serializeSafetensors(
      f.header.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, copyFrom: { file: f, tensor: t } })),
      meta,
    );
    assert.ok(copy.equals(buf));
  } finally {
    await f.close();
  }
  await assert.rejects(f.readRaw(tensors[0].name), RuntimeFailure); // closed
  await f.close(); // idempotent
});

test("copyRaw streams a tensor in chunks of the requested size", async () => {
  const r = rng(7);
  const big = randomBytes(r, 10_000);
  const buf = await serializeSafetensors(
    [
      { name: "big", dtype: "U8", shape: [10_000], data: big },
      { name: "small", dtype: "F32", shape: [3], data: new Uint8Array(12) },
    ],
    null,
  );
  const path = join(dir, "chunks.safetensors");
  writeFileSync(path, buf);
  for (const f of [await SafetensorsFile.open(path), SafetensorsFile.fromBuffer(buf, "mem")]) {
    const sizes: number[] = [];
    const parts: Buffer[] = [];
    await f.copyRaw(
      "big",
      async (c) => {
        sizes.push(c.byteLength);
        parts.push(Buffer.from(c));
      },
      3000,
    );
    assert.deepEqual(sizes, [3000, 3000, 3000, 1000]);
    assert.ok(Buffer.concat(parts).equals(Buffer.from(big)));
    const all: number[] = [];
    await f.copyRaw(f.tensor("small"), async (c) => void all.push(c.byteLength));
    assert.deepEqual(all, [12]);
    await f.close();
  }
});

test("open reads only the header: a sparse 5 GiB file opens at once; a tensor over the buffer limit is refused by readRaw", async () => {
  const big = 5 * 2 ** 30;
  const { header } = layoutSafetensors(
    [
      { name: "huge", dtype: "U8", shape: [big], byteLength: big, produce: async () => new Uint8Array(0) },
      { name: "tiny", dtype: "U8", shape: [4], data: Uint8Array.of(1, 2, 3, 4) },
    ],
    null,
  );
  const path = join(dir, "sparse.safetensors");
  const fh = await open(path, "w");
  await fh.write(header, 0, header.length, 0);
  await fh.write(Uint8Array.of(9, 9, 9, 9), 0, 4, header.length + big); // "tiny" comes after "huge" (same dtype, name order)
  await fh.close();
  const t0 = performance.now();
  const f = await SafetensorsFile.open(path);
  assert.ok(performance.now() - t0 < 2000);
  assert.equal(f.size, header.length + big + 4);
  assert.deepEqual([...(await f.readRaw("tiny"))], [9, 9, 9, 9]);
  if (big > MAX_BUFFER_BYTES) await assert.rejects(f.readRaw("huge"), (e: unknown) => e instanceof RuntimeFailure && /largest buffer/.test(e.message));
  await f.close();
});

test("a file truncated after open: the short read is reported as MetadataIncompleteBuffer", async () => {
  const buf = await serializeSafetensors([{ name: "w", dtype: "F32", shape: [1024], data: new Uint8Array(4096) }], null);
  const path = join(dir, "trunc.safetensors");
  writeFileSync(path, buf);
  // Read tensor by tensor (a small file is otherwise read whole when opened: see the next test).
  const f = await SafetensorsFile.open(path, path, { wholeReadBytes: 0 });
  truncateSync(path, buf.length - 100);
  await assert.rejects(f.readRaw("w"), (e: unknown) => e instanceof SafetensorsError && e.variant === "MetadataIncompleteBuffer" && e.tensor === "w");
  await assert.rejects(
    f.copyRaw("w", async () => {}),
    (e: unknown) => e instanceof SafetensorsError && e.variant === "MetadataIncompleteBuffer",
  );
  await f.close();
});

test("a small file is read whole when opened: the same tensors, and later changes to the file are not seen", async () => {
  const seed = Date.now() % 100000;
  console.log(`seed ${seed}`);
  const r = rng(seed);
  const data = new Uint8Array(4096);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  const buf = await serializeSafetensors([{ name: "w", dtype: "U8", shape: [4096], data }], null);
  const path = join(dir, "whole.safetensors");
  writeFileSync(path, buf);
  const whole = await SafetensorsFile.open(path);
  const streamed = await SafetensorsFile.open(path, path, { wholeReadBytes: 0 });
  assert.deepEqual(await whole.readRaw("w"), await streamed.readRaw("w"));
  truncateSync(path, buf.length - 100);
  assert.deepEqual(new Uint8Array(await whole.readRaw("w")), data);
  await assert.rejects(streamed.readRaw("w"), (e: unknown) => e instanceof SafetensorsError && e.variant === "MetadataIncompleteBuffer");
  await whole.close();
  await streamed.close();
});

test("open: missing file and directory are usage errors", async () => {
  await assert.rejects(
    SafetensorsFile.open(join(dir, "nope.safetensors")),
    (e: unknown) => e instanceof Error && (e as { exitCode?: number }).exitCode === 2 && /no such file/.test(e.message),
  );
  await assert.rejects(SafetensorsFile.open(dir), (e: unknown) => (e as { exitCode?: number }).exitCode === 2);
});

test("fromStream buffers a stream (stdin), bounded", async () => {
  const tensors = randomTensors(3);
  const buf = await serializeSafetensors(specsOf(tensors), { format: "pt" });
  const pieces = [buf.subarray(0, 3), buf.subarray(3, 100), buf.subarray(100)];
  const f = await SafetensorsFile.fromStream(Readable.from(pieces), "<stdin>");
  assert.equal(f.label, "<stdin>");
  assert.equal(f.size, buf.length);
  await checkFile(f, tensors);
  await assert.rejects(
    SafetensorsFile.fromStream(Readable.from(pieces), "<stdin>", 200),
    (e: unknown) => e instanceof SafetensorsError && e.variant === "StreamTooLarge" && e.code === "SAFETENSORS_STREAM_TOO_LARGE",
  );
  // a header length over the limit is refused at once, without reading the rest
  let pulled = 0;
  const endless = new Readable({
    read() {
      pulled++;
      this.push(pulled === 1 ? Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]) : Buffer.alloc(65536));
    },
  });
  await assert.rejects(SafetensorsFile.fromStream(endless, "<stdin>"), (e: unknown) => e instanceof SafetensorsError && e.variant === "HeaderTooLarge");
  assert.ok(pulled < 10);
  await assert.rejects(
    SafetensorsFile.fromStream(Readable.from([Buffer.from([1, 2, 3])]), "<stdin>"),
    (e: unknown) => e instanceof SafetensorsError && e.variant === "HeaderTooSmall",
  );
});

test("open on a FIFO buffers it like a stream", { skip: process.platform === "win32" ? "no FIFOs" : false }, async () => {
  const fifo = join(dir, "pipe.safetensors");
  if (spawnSync("mkfifo", [fifo]).status !== 0) return;
  const buf = await serializeSafetensors([{ name: "x", dtype: "I16", shape: [2], data: new Uint8Array(Int16Array.of(-1, 7).buffer) }], null);
  const src = join(dir, "pipe-src.safetensors");
  writeFileSync(src, buf);
  const writer = spawn("sh", ["-c", `cat "${src}" > "${fifo}"`]);
  const exited = new Promise((r) => writer.on("exit", r));
  const f = await SafetensorsFile.open(fifo);
  assert.deepEqual([...(await f.readFloat64("x"))], [-1, 7]);
  await f.close();
  await exited;
});

// ---------------------------------------------------------------------------------------------
// Cross-check with numpy: the optional peft-check tools beside the checkout (st_numpy.py), or an inline reader.

const hasNumpy = spawnSync("python3", ["-c", "import numpy"], { stdio: "ignore" }).status === 0;
const stNumpyDir = join(sharedDir, "tools", "peft-check");

const PY_PRELUDE = `
import json, struct, sys
import numpy as np
try:
    sys.path.insert(0, ${JSON.stringify(stNumpyDir)})
    from st_numpy import read_st, write_st, DT
except Exception:
    DT = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    def read_st(path):
        b = open(path, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        meta = h.pop("__metadata__", {}) or {}
        out = {}
        for k, v in h.items():
            s, e = v["data_offsets"]
            raw = b[8 + n + s: 8 + n + e]
            if v["dtype"] == "BF16":
                a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(raw, DT[v["dtype"]])
            out[k] = (a.reshape(v["shape"]), v["dtype"])
        return meta, out
    def write_st(path, tensors, meta=None):
        header, chunks, off = ({"__metadata__": meta} if meta else {}), [], 0
        for k in sorted(tensors):
            a, dt = tensors[k]
            raw = np.ascontiguousarray(a, DT[dt]).tobytes()
            header[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
            chunks.append(raw)
            off += len(raw)
        hj = json.dumps(header).encode()
        hj += b" " * ((8 - len(hj) % 8) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(hj)) + hj + b"".join(chunks))
`;

test("numpy reads our file identically", { skip: hasNumpy ? false : "python3 with numpy not available" }, async () => {
  const numeric: DType[] = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"];
  const tensors = randomTensors(11).filter((e) => numeric.includes(e.dtype));
  const path = join(dir, "for-numpy.safetensors");
  await writeFileAtomic(path, (sink) => writeSafetensors(sink, specsOf(tensors), { format: "pt" }), { force: false, inputs: [] });
  const py = spawnSync(
    "python3",
    [
      "-c",
      PY_PRELUDE +
        `\nmeta, out = read_st(sys.argv[1])\nprint(json.dumps({"meta": meta, "t": {k: [dt, list(a.shape), a.astype(np.float64).ravel().tolist()] for k, (a, dt) in out.items()}}))`,
      path,
    ],
    { encoding: "utf8" },
  );
  assert.equal(py.status, 0, py.stderr);
  const got = JSON.parse(py.stdout) as { meta: Record<string, string>; t: Record<string, [string, number[], number[]]> };
  assert.deepEqual(got.meta, { format: "pt" });
  const f = await SafetensorsFile.open(path);
  try {
    assert.deepEqual(Object.keys(got.t).sort(), tensors.map((e) => e.name).sort());
    for (const e of tensors) {
      const [dt, shape, values] = got.t[e.name];
      assert.equal(dt, e.dtype);
      assert.deepEqual(shape, e.shape);
      assert.deepEqual([...(await f.readFloat64(e.name))], values, `${e.name} (${e.dtype})`);
    }
  } finally {
    await f.close();
  }
});

test("we read a numpy-written file identically", { skip: hasNumpy ? false : "python3 with numpy not available" }, async () => {
  const path = join(dir, "from-numpy.safetensors");
  const py = spawnSync(
    "python3",
    [
      "-c",
      PY_PRELUDE +
        `
rng = np.random.default_rng(5)
t = {
  "a.f32": (rng.standard_normal((4, 3)).astype(np.float32), "F32"),
  "b.f16": (rng.standard_normal((5,)).astype(np.float16), "F16"),
  "c.f64": (rng.standard_normal((2, 2)), "F64"),
  "d.i64": (np.array([-(2**40), 3, 0], dtype=np.int64), "I64"),
  "e.i8": (np.array([-128, 127], dtype=np.int8), "I8"),
  "f.bool": (np.array([True, False, True]), "BOOL"),
  "g.scalar": (np.array(2.5, dtype=np.float32), "F32"),
}
write_st(sys.argv[1], t, {"format": "pt"})
print(json.dumps({k: a.astype(np.float64).ravel().tolist() for k, (a, dt) in t.items()}))`,
      path,
    ],
    { encoding: "utf8" },
  );
  assert.equal(py.status, 0, py.stderr);
  const want = JSON.parse(py.stdout) as Record<string, number[]>;
  const f = await SafetensorsFile.open(path);
  try {
    assert.deepEqual(f.metadata, { format: "pt" });
    for (const [name, values] of Object.entries(want)) assert.deepEqual([...(await f.readFloat64(name))], values, name);
    assert.deepEqual(f.tensor("g.scalar").shape, []);
  } finally {
    await f.close();
  }
});

test("st_numpy.py is where the brief says (informational)", {
  skip: existsSync(join(stNumpyDir, "st_numpy.py")) ? false : "shared tools not present; the inline reader was used",
}, () => {
  assert.ok(existsSync(join(stNumpyDir, "st_numpy.py")));
});

test("close() while a large read is in flight: the read completes with the file's bytes, then the descriptor closes", async () => {
  const seed = Date.now() % 100000;
  console.log(`seed ${seed}`);
  const r = rng(seed);
  // Above SYNC_READ_BYTES, so the read goes to the thread pool and is still pending when close() is called.
  const n = SYNC_READ_BYTES + 4096;
  const data = new Uint8Array(n);
  for (let i = 0; i < n; i += 4096) data[i] = Math.floor(r() * 256);
  const path = join(dir, "inflight.safetensors");
  writeFileSync(path, await serializeSafetensors([{ name: "w", dtype: "U8", shape: [n], data }], null));
  for (let k = 0; k < 5; k++) {
    const f = await SafetensorsFile.open(path);
    const reading = f.readRaw("w");
    const closing = f.close();
    assert.deepEqual(new Uint8Array(await reading), data);
    await closing;
    await assert.rejects(f.readRaw("w"), /read after close/);
  }
});
