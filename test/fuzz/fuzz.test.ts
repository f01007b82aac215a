// Fuzzing (issue 7): random and mutated files fed to the safetensors reader and the adapter
// layer in-process (fast-check), and a sample through the real CLI. Every case must end either in
// success or in an InvalidInputError (exit 3) with a one-line-first message — never another
// exception, a hang, or a written output. The case counts are printed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import fc from "fast-check";
import { fixturesDir, loraBin } from "../paths.js";
import { SafetensorsFile } from "../../formats/safetensors/index.js";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { InvalidInputError } from "../../common/errors.js";
import { verdict } from "./common.js";
import { tempDir } from "../temp-dir.js";

const seeds = [
  join(fixturesDir, "example", "adapter_model.safetensors"),
  join(fixturesDir, "kohya-sd.safetensors"),
  join(fixturesDir, "peft-bf16.safetensors"),
  join(fixturesDir, "kohya-dylora.safetensors"),
].map((p) => readFileSync(p));

/** A mutation of a valid file: truncation, bit flips (header-biased), a lying length, splices. */
const mutated = fc.tuple(fc.nat(seeds.length - 1), fc.array(fc.tuple(fc.nat(6), fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 4 })).map(([si, muts]) => {
  let b = Buffer.from(seeds[si]!);
  for (const [kind, pos, val] of muts) {
    const declared = b.length >= 8 ? b.readBigUInt64LE(0) : 0n;
    const hdr = Number(declared < BigInt(b.length) ? declared : BigInt(b.length)) + 8;
    switch (kind) {
      case 0:
        b = b.subarray(0, pos % (b.length + 1));
        break; // truncate
      case 1:
        if (b.length) {
          const p = pos % Math.min(b.length, hdr);
          b[p] = b[p]! ^ (1 << (val % 8));
        }
        break; // flip a header bit
      case 2:
        if (b.length >= 8) b.writeBigUInt64LE(BigInt(val) * 997n + BigInt(pos % 70000), 0);
        break; // lying header length
      case 3:
        b = Buffer.concat([b, Buffer.alloc(1 + (val % 9), val)]);
        break; // trailing bytes
      case 4:
        if (b.length > 8) {
          const p = 8 + (pos % Math.max(1, Math.min(b.length, hdr) - 8));
          b[p] = val;
        }
        break; // random header byte
      case 5:
        if (b.length) {
          const p = pos % b.length;
          b[p] = val;
        }
        break; // any byte (data: NaN/Inf possible)
      default:
        b = Buffer.concat([b.subarray(0, pos % (b.length + 1)), Buffer.from(String(val)), b.subarray(pos % (b.length + 1))]); // splice
    }
  }
  return b;
});

const consume = (buf: Buffer) =>
  verdict(async () => {
    const a = await loadAdapter("-", { stdin: Readable.from([buf]) });
    try {
      for (const m of a.modules) await readFactors(a, m, "f32");
      for (const t of a.passthrough) await a.file.readRaw(t);
    } finally {
      await a.file.close();
    }
  });

test("fuzz: 10,000 random and mutated files through the reader and adapter layer", async () => {
  const counts = { ok: 0, invalid: 0 };
  await fc.assert(
    fc.asyncProperty(mutated, async (b) => {
      counts[await consume(b)]++;
    }),
    { numRuns: 8000, seed: 42 },
  );
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (b) => {
      counts[await consume(Buffer.from(b))]++;
    }),
    { numRuns: 1000 },
  );
  // Hand-shaped headers: valid length prefix + arbitrary JSON-ish text (deep nesting, huge numbers, duplicates).
  const jsonish = fc.oneof(
    fc.json(),
    fc.string(),
    fc.constantFrom(
      '{"a":{"dtype":"F32","shape":[18446744073709551614,2],"data_offsets":[0,0]}}',
      '{"a":1,"a":2}',
      "[".repeat(5000),
      '{"__metadata__":{"k":1}}',
      '{"x":{"dtype":"F32","shape":[9007199254740993],"data_offsets":[0,4]}}',
    ),
  );
  await fc.assert(
    fc.asyncProperty(jsonish, async (s) => {
      const h = Buffer.from(s, "utf8");
      const b = Buffer.alloc(8 + h.length);
      b.writeBigUInt64LE(BigInt(h.length), 0);
      h.copy(b, 8);
      counts[await consume(b)]++;
    }),
    { numRuns: 1000 },
  );
  console.log(`fuzz cases: ${counts.ok + counts.invalid} (accepted ${counts.ok}, rejected with exit 3: ${counts.invalid})`);
  assert.ok(counts.ok + counts.invalid >= 10000);
});

test("fuzz: header parse never allocates from a lying length (fromBuffer on 8-byte prefixes)", () => {
  let n = 0;
  fc.assert(
    fc.property(fc.bigUint64Array({ minLength: 1, maxLength: 1 }), (arr) => {
      const b = Buffer.alloc(16);
      b.writeBigUInt64LE(arr[0]!, 0);
      n++;
      try {
        SafetensorsFile.fromBuffer(b, "x");
      } catch (e) {
        if (!(e instanceof InvalidInputError)) throw e;
      }
    }),
    { numRuns: 500 },
  );
  assert.equal(n, 500);
});

test("fuzz sample through the real CLI: exit 0 or 3, one-line message, nothing written", () => {
  const dir = tempDir("lora-fuzzcli-");
  const outDir = tempDir("lora-fuzzout-");
  const samples = fc.sample(mutated, { numRuns: 25, seed: 7 });
  let i = 0;
  for (const b of samples) {
    const f = join(dir, `case${i++}.safetensors`);
    writeFileSync(f, b);
    const r = spawnSync(process.execPath, [loraBin, "convert", f, "--to", "kohya", "-o", join(outDir, `o${i}.safetensors`), "--backend", "js"], {
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.ok(r.status === 0 || r.status === 3, `case ${i}: exit ${r.status}: ${r.stderr}`);
    if (r.status === 3) assert.match(r.stderr, /^lora: error: .+/);
    if (r.status === 3) assert.ok(!readdirSync(outDir).includes(`o${i}.safetensors`));
  }
  assert.ok(
    readdirSync(outDir).every((f) => !f.includes(".tmp")),
    "no temp files left",
  );
});
