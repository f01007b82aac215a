// One test per reader error variant, from literal bytes as in tensor.rs's tests, then the
// fixtures/bad/*.safetensors loop (expected variant = basename up to the first dot).
import assert from "node:assert/strict";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { InvalidInputError } from "../../common/errors.js";
import { SafetensorsError, SAFETENSORS_VARIANTS, safetensorsCode, type SafetensorsVariant } from "./errors.js";
import { parseHeader, type Header } from "./header.js";
import { SafetensorsFile } from "./reader.js";
import { serializeSafetensors } from "./writer.js";
import { fixturesDir } from "../../test/paths.js";
import { main as makeMalformed, malformedCases } from "../../fixtures/make-malformed.js";
import { tempDir } from "../../test/temp-dir.js";

/** A `b"…"` literal of tensor.rs (bytes as latin1 characters). */
const b = (s: string): Uint8Array => Buffer.from(s, "latin1");
const parse = (bytes: Uint8Array): Header => parseHeader(bytes, bytes.length, "t.safetensors");

function throwsVariant(fn: () => unknown, variant: SafetensorsVariant, tensor?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${String(e)}`);
    assert.equal(e.variant, variant, e.message);
    if (tensor !== undefined) assert.equal(e.tensor, tensor);
    return true;
  });
}

const ZEROS16 = "\x00".repeat(16);
const TEST_I32 = '{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}';

test("error classes: codes, variant names, exit 3, message shape", () => {
  const e = new SafetensorsError("InvalidOffset", "adapter.safetensors", { tensor: "a.lora_A.weight", detail: "found 8", hint: "h" });
  assert.ok(e instanceof InvalidInputError);
  assert.equal(e.exitCode, 3);
  assert.equal(e.code, "SAFETENSORS_INVALID_OFFSET");
  assert.equal(e.variant, "InvalidOffset");
  assert.equal(e.message, 'adapter.safetensors: invalid offset for tensor "a.lora_A.weight"\n  found 8');
  assert.equal(e.hint, "h");
  assert.equal(e.name, "SafetensorsError");
  assert.equal(safetensorsCode("MetadataIncompleteBuffer"), "SAFETENSORS_METADATA_INCOMPLETE_BUFFER");
  assert.equal(safetensorsCode("HeaderTooSmall"), "SAFETENSORS_HEADER_TOO_SMALL");
  for (const v of SAFETENSORS_VARIANTS) assert.match(safetensorsCode(v), /^SAFETENSORS_[A-Z_]+$/);
});

test("test_deserialization", () => {
  const h = parse(b("<\x00\x00\x00\x00\x00\x00\x00" + TEST_I32 + ZEROS16));
  assert.equal(h.headerSize, 60);
  assert.equal(h.dataStart, 68);
  assert.equal(h.tensors.length, 1);
  assert.deepEqual(h.byName.get("test"), { name: "test", dtype: "I32", shape: [2, 2], begin: 0, end: 16 });
  assert.equal(h.metadata, null);
});

test("test_empty_shapes_allowed: [] is a scalar of one element", () => {
  const h = parse(b('8\x00\x00\x00\x00\x00\x00\x00{"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}\x00\x00\x00\x00'));
  assert.deepEqual(h.tensors[0].shape, []);
  assert.equal(h.tensors[0].end, 4);
});

test("test_zero_sized_tensor", () => {
  const h = parse(b('<\x00\x00\x00\x00\x00\x00\x00{"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}}'));
  assert.deepEqual(h.tensors[0].shape, [2, 0]);
  assert.equal(h.tensors[0].end - h.tensors[0].begin, 0);
});

test("HeaderTooSmall: test_header_too_small", () => {
  throwsVariant(() => parse(b("")), "HeaderTooSmall");
  throwsVariant(() => parse(b("\x08\x00\x00\x00\x00\x00\x00")), "HeaderTooSmall");
});

test("HeaderTooLarge: test_header_too_large (compared as a u64, before any conversion)", () => {
  throwsVariant(() => parse(b("<\x00\x00\x00\x00\xff\xff\xff" + TEST_I32 + ZEROS16)), "HeaderTooLarge");
  throwsVariant(() => parse(b("\xff\xff\xff\xff\xff\xff\xff\xff{}")), "HeaderTooLarge");
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(100_000_001n);
  throwsVariant(() => parse(n), "HeaderTooLarge");
  n.writeBigUInt64LE(100_000_000n);
  throwsVariant(() => parse(n), "InvalidHeaderLength"); // exactly the limit is allowed, but absent
});

test("InvalidHeaderLength: test_invalid_header_length", () => {
  throwsVariant(() => parse(b("<\x00\x00\x00\x00\x00\x00\x00")), "InvalidHeaderLength");
  // the whole file is long enough but the bytes handed over are not
  const full = b("<\x00\x00\x00\x00\x00\x00\x00" + TEST_I32 + ZEROS16);
  throwsVariant(() => parseHeader(full.subarray(0, 30), full.length, "t"), "InvalidHeaderLength");
});

test("InvalidHeader: test_invalid_header_non_utf8 (strict UTF-8, no U+FFFD)", () => {
  throwsVariant(() => parse(b("\x01\x00\x00\x00\x00\x00\x00\x00\xff")), "InvalidHeader");
  throwsVariant(() => parse(b("\x03\x00\x00\x00\x00\x00\x00\x00\xed\xa0\x80")), "InvalidHeader"); // encoded surrogate
  throwsVariant(() => parse(b("\x02\x00\x00\x00\x00\x00\x00\x00\xc0\xaf")), "InvalidHeader"); // overlong "/"
});

test("InvalidHeaderDeserialization: test_invalid_header_not_json and the type checks", () => {
  const h = (json: string, data = 0): Uint8Array => {
    const j = Buffer.from(json);
    const out = Buffer.alloc(8 + j.length + data);
    out.writeBigUInt64LE(BigInt(j.length));
    j.copy(out, 8);
    return out;
  };
  throwsVariant(() => parse(b("\x01\x00\x00\x00\x00\x00\x00\x00{")), "InvalidHeaderDeserialization");
  throwsVariant(() => parse(h("[]")), "InvalidHeaderDeserialization");
  throwsVariant(() => parse(h("null")), "InvalidHeaderDeserialization");
  throwsVariant(() => parse(h('"x"')), "InvalidHeaderDeserialization");
  throwsVariant(() => parse(h("\ufeff{}")), "InvalidHeaderDeserialization"); // a BOM is not JSON whitespace
  throwsVariant(() => parse(h('{"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}}', 1)), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}')), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}', 1)), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}', 2)), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[2e0],"data_offsets":[0,2]}}', 2)), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2,2]}}', 2)), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0]}}', 2)), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[2]}}', 2)), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,18446744073709551616]}}')), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"a":[1]}')), "InvalidHeaderDeserialization", "a");
  throwsVariant(() => parse(h('{"__metadata__":{"r":8}}')), "InvalidHeaderDeserialization");
  throwsVariant(() => parse(h('{"__metadata__":"pt"}')), "InvalidHeaderDeserialization");
  // -0 reads as 0 (serde accepts it), and unknown fields of an entry are ignored (serde does too)
  assert.equal(parse(h('{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0],"extra":[1.5,{"x":null}]}}')).tensors[0].end, 0);
});

test("InvalidHeaderDeserialization: nesting deeper than the limit is refused before JSON.parse", () => {
  const deep = (d: number): Uint8Array => {
    const j = Buffer.from(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":${"[".repeat(d)}${"]".repeat(d)}}}`);
    const out = Buffer.alloc(8 + j.length);
    out.writeBigUInt64LE(BigInt(j.length));
    j.copy(out, 8);
    return out;
  };
  assert.equal(parse(deep(100)).tensors.length, 1);
  throwsVariant(() => parse(deep(130)), "InvalidHeaderDeserialization");
  throwsVariant(() => parse(deep(1_000_000)), "InvalidHeaderDeserialization");
});

test("whitespace-padded headers are accepted (test_whitespace_padded_header, test_whitespace_leading_padded_header)", () => {
  assert.equal(parse(b("\x06\x00\x00\x00\x00\x00\x00\x00{}\x0D\x20\x09\x0A")).tensors.length, 0);
  assert.equal(parse(b("\x06\x00\x00\x00\x00\x00\x00\x00\x09\x0A{}\x0D\x20")).tensors.length, 0);
  // kohya pads to 256 bytes
  const json = TEST_I32.padEnd(256, " ");
  const buf = Buffer.alloc(8 + 256 + 16);
  buf.writeBigUInt64LE(256n);
  buf.write(json, 8, "latin1");
  assert.equal(parse(buf).dataStart, 264);
});

test("DuplicateKey: tensor names, __metadata__ keys, entry fields, escaped spellings", () => {
  const h = (json: string, data = 0): Uint8Array => {
    const j = Buffer.from(json);
    const out = Buffer.alloc(8 + j.length + data);
    out.writeBigUInt64LE(BigInt(j.length));
    j.copy(out, 8);
    return out;
  };
  const a = '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}';
  throwsVariant(() => parse(h(`{"a":${a},"a":${a}}`, 1)), "DuplicateKey", "a");
  throwsVariant(() => parse(h(`{"a":${a},"\\u0061":${a}}`, 1)), "DuplicateKey", "a");
  throwsVariant(() => parse(h('{"__metadata__":{"k":"1","k":"2"}}')), "DuplicateKey");
  throwsVariant(() => parse(h('{"a":{"dtype":"U8","shape":[1],"shape":[1],"data_offsets":[0,1]}}', 1)), "DuplicateKey", "a");
  // the same key in different objects, or inside strings, is not a duplicate
  const ok = parse(h(`{"__metadata__":{"a":"\\"a\\":1,\\"a\\":2","dtype":"x"},"a":${a}}`, 1));
  assert.equal(ok.metadata?.a, '"a":1,"a":2');
  assert.equal(ok.metadata?.dtype, "x");
  // deeper objects (ignored fields) may repeat keys, as serde ignores them too
  assert.equal(parse(h('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":{"y":1,"y":2}}}', 1)).tensors.length, 1);
});

test("InvalidOffset: test_json_attack, gaps, overlaps, end before begin", () => {
  const entries = Array.from({ length: 10 }, (_, i) => `"weight_${i}":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}`).join(",");
  const j = Buffer.from(`{${entries}}`);
  const buf = Buffer.alloc(8 + j.length + 16);
  buf.writeBigUInt64LE(BigInt(j.length));
  j.copy(buf, 8);
  throwsVariant(() => parse(buf), "InvalidOffset");
  const two = (a: string, bb: string, data: number): Uint8Array => {
    const s = Buffer.from(`{"a":{"dtype":"U8","shape":[4],"data_offsets":${a}},"b":{"dtype":"U8","shape":[4],"data_offsets":${bb}}}`);
    const out = Buffer.alloc(8 + s.length + data);
    out.writeBigUInt64LE(BigInt(s.length));
    s.copy(out, 8);
    return out;
  };
  throwsVariant(() => parse(two("[0,4]", "[8,12]", 12)), "InvalidOffset", "b");
  throwsVariant(() => parse(two("[0,4]", "[2,6]", 6)), "InvalidOffset", "b");
  throwsVariant(() => parse(two("[4,8]", "[8,12]", 12)), "InvalidOffset", "a");
  // key order does not matter: b written first, a first in the data
  const h = parse(two("[4,8]", "[0,4]", 8));
  assert.deepEqual(
    h.tensors.map((t) => t.name),
    ["b", "a"],
  );
});

test("ValidationOverflow: test_validation_overflow (u64 values, products beyond 2^53)", () => {
  throwsVariant(
    () => parse(b('O\x00\x00\x00\x00\x00\x00\x00{"test":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}}' + ZEROS16)),
    "ValidationOverflow",
    "test",
  );
  throwsVariant(
    () => parse(b('N\x00\x00\x00\x00\x00\x00\x00{"test":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}}' + ZEROS16)),
    "ValidationOverflow",
    "test",
  );
  const j = Buffer.from('{"test":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,16]}}');
  const buf = Buffer.alloc(8 + j.length + 16);
  buf.writeBigUInt64LE(BigInt(j.length));
  j.copy(buf, 8);
  throwsVariant(() => parse(buf), "ValidationOverflow", "test");
});

test("MisalignedSlice: sub-byte dtypes must fill whole bytes (test_serialization_fp4_misaligned)", () => {
  const j = Buffer.from('{"a":{"dtype":"F4","shape":[1,3],"data_offsets":[0,2]}}');
  const buf = Buffer.alloc(8 + j.length + 2);
  buf.writeBigUInt64LE(BigInt(j.length));
  j.copy(buf, 8);
  throwsVariant(() => parse(buf), "MisalignedSlice", "a");
  // F4 [1, 2] is one byte: fine (test_serialization_fp4)
  const ok = Buffer.from([64, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from('{"attn.0":{"dtype":"F4","shape":[1,2],"data_offsets":[0,1]}}    '), 0]);
  assert.equal(parse(ok).tensors[0].end, 1);
});

test("TensorInvalidInfo: test_invalid_info", () => {
  // as in tensor.rs, the check fires before the file-length check
  throwsVariant(() => parse(b('<\x00\x00\x00\x00\x00\x00\x00{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0, 4]}}')), "TensorInvalidInfo", "test");
});

test("MetadataIncompleteBuffer: test_metadata_incomplete_buffer (trailing and missing bytes)", () => {
  throwsVariant(() => parse(b("<\x00\x00\x00\x00\x00\x00\x00" + TEST_I32 + ZEROS16 + "extra_bogus_data_for_polyglot_file")), "MetadataIncompleteBuffer");
  throwsVariant(() => parse(b("<\x00\x00\x00\x00\x00\x00\x00" + TEST_I32 + "\x00".repeat(14))), "MetadataIncompleteBuffer");
  // parseHeader with only the header bytes, the file length given separately (the reader's way)
  const full = b("<\x00\x00\x00\x00\x00\x00\x00" + TEST_I32 + ZEROS16);
  assert.equal(parseHeader(full.subarray(0, 68), full.length, "t").tensors.length, 1);
  throwsVariant(() => parseHeader(full.subarray(0, 68), full.length + 1, "t"), "MetadataIncompleteBuffer");
});

test("TensorNotFound", () => {
  const f = SafetensorsFile.fromBuffer(Buffer.from(b("<\x00\x00\x00\x00\x00\x00\x00" + TEST_I32 + ZEROS16)), "t.safetensors");
  assert.equal(f.has("test"), true);
  assert.equal(f.has("nope"), false);
  throwsVariant(() => f.tensor("nope"), "TensorNotFound", "nope");
});

test("writer output parses back (round trip through parseHeader), metadata first", async () => {
  const out = await serializeSafetensors(
    [
      { name: "b", dtype: "F16", shape: [3], data: new Uint8Array(6) },
      { name: "a", dtype: "F32", shape: [2], data: new Uint8Array(8) },
    ],
    { format: "pt" },
  );
  const h = parse(out);
  assert.deepEqual(h.metadata, { format: "pt" });
  assert.deepEqual(
    h.tensors.map((t) => [t.name, t.begin, t.end]),
    [
      ["a", 0, 8],
      ["b", 8, 14],
    ],
  );
  assert.equal(h.headerSize % 8, 0);
  assert.ok(
    out
      .subarray(8, 8 + h.headerSize)
      .toString("latin1")
      .startsWith('{"__metadata__":{"format":"pt"},'),
  );
});

const badDir = join(fixturesDir, "bad");
const badFiles = readdirSync(badDir)
  .filter((f) => f.endsWith(".safetensors"))
  .sort();

test("fixtures/bad covers every variant a file can trigger", () => {
  const seen = new Set(badFiles.map((f) => f.split(".")[0]));
  for (const v of SAFETENSORS_VARIANTS) {
    if (v === "TensorNotFound" || v === "StreamTooLarge") continue; // not properties of a file
    assert.ok(seen.has(v), `no fixture for ${v}`);
  }
  for (const v of seen) assert.ok((SAFETENSORS_VARIANTS as readonly string[]).includes(v), `fixture for unknown variant ${v}`);
});

for (const file of badFiles) {
  const variant = file.split(".")[0] as SafetensorsVariant;
  test(`fixtures/bad/${file} → ${variant}`, async () => {
    const bytes = readFileSync(join(badDir, file));
    throwsVariant(() => SafetensorsFile.fromBuffer(bytes, file), variant);
    await assert.rejects(
      SafetensorsFile.open(join(badDir, file)),
      (e: unknown) => e instanceof SafetensorsError && e.variant === variant && e.file === join(badDir, file),
    );
  });
}

test("fixtures/bad is exactly what make-malformed generates", () => {
  const dir = tempDir("lora-bad-");
  try {
    const files = makeMalformed(dir);
    assert.deepEqual([...files].sort(), badFiles);
    for (const c of malformedCases())
      assert.ok(readFileSync(join(badDir, c.file)).equals(c.bytes), `${c.file} differs; run node dist/fixtures/make-malformed.js`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
