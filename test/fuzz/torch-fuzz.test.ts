// Fuzzing the PyTorch checkpoint reader (formats/torch) like the safetensors reader: mutations of
// valid checkpoints (hand-built here, and real torch.save files where Debian's torch is installed)
// read in-process — the checkpoint's every tensor, then the adapter layer through stdin. Each case
// must end in success or an InvalidInputError (exit 3): never another exception, a hang, or an
// allocation beyond the reader's byte budget. The case counts and the peak RSS are printed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import fc from "fast-check";
import { loadAdapter, readFactors } from "../../formats/adapter/index.js";
import { readCheckpointBuffer } from "../../formats/torch/index.js";
import { peftCheckpoint, peftParts, torchZip } from "../torch-build.js";
import { torchCheckpoints, torchUnavailable } from "../torch-save.js";
import { eachModule, verdict } from "./common.js";

function seeds(): Buffer[] {
  const out = [peftCheckpoint()];
  if (!torchUnavailable()) {
    const { dir } = torchCheckpoints();
    for (const f of ["adapter_model.bin", "views-legacy.pt", "deflated.pt", "nested.pt"]) out.push(readFileSync(join(dir, f)));
  }
  return out;
}

function mutator(all: Buffer[]) {
  return fc.tuple(fc.nat(all.length - 1), fc.array(fc.tuple(fc.nat(5), fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 4 })).map(([si, muts]) => {
    let b = Buffer.from(all[si]!);
    for (const [kind, pos, val] of muts) {
      const p = b.length ? pos % b.length : 0;
      switch (kind) {
        case 0:
          b = b.subarray(0, pos % (b.length + 1)); // truncate
          break;
        case 1:
          if (b.length) b[p] = b[p]! ^ (1 << (val % 8)); // flip a bit
          break;
        case 2:
          if (b.length) b[p] = val; // any byte
          break;
        case 3:
          if (b.length >= 4) b.writeUInt32LE((val * 0x01010101) >>> 0, Math.min(p, b.length - 4)); // a lying length or offset
          break;
        case 4:
          b = Buffer.concat([b.subarray(0, p), Buffer.from([val, val ^ 0x80]), b.subarray(p)]); // splice
          break;
        default:
          b = Buffer.concat([b.subarray(0, p), b.subarray(Math.min(b.length, p + 1 + (val % 16)))]); // cut bytes out
      }
    }
    return b;
  });
}

const consume = (buf: Buffer) =>
  verdict(async () => {
    const { file } = await readCheckpointBuffer(buf, "fuzz");
    try {
      for (const t of file.tensors) await file.readRaw(t);
    } finally {
      await file.close();
    }
    const a = await loadAdapter("-", { stdin: Readable.from([buf]) });
    await eachModule(a, (m) => readFactors(a, m, "f32"));
  });

test("fuzz: mutated torch.save checkpoints end in success or exit 3", async () => {
  const all = seeds();
  const counts = { ok: 0, invalid: 0 };
  const t0 = Date.now();
  let peak = 0;
  await fc.assert(
    fc.asyncProperty(mutator(all), async (b) => {
      counts[await consume(b)]++;
      peak = Math.max(peak, process.memoryUsage().rss);
    }),
    { numRuns: 4000, seed: 14 },
  );
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (b) => {
      // random bytes behind a zip or legacy-pickle prefix, so they reach the torch reader
      const head = b.length % 2 ? [0x50, 0x4b, 3, 4] : [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
      counts[await consume(Buffer.concat([Buffer.from(head), b]))]++;
    }),
    { numRuns: 1000, seed: 15 },
  );
  // mutations of the pickle alone, re-wrapped in a zip with valid CRCs: they reach the unpickler and the policy
  const { pkl, storages } = peftParts();
  await fc.assert(
    fc.asyncProperty(mutator([pkl]), async (b) => {
      counts[await consume(torchZip(b, storages))]++;
    }),
    { numRuns: 3000, seed: 16 },
  );
  console.log(
    `torch fuzz cases: ${counts.ok + counts.invalid} from ${all.length} seeds (accepted ${counts.ok}, rejected with exit 3: ${counts.invalid}); ${Date.now() - t0} ms; peak RSS ${Math.round(peak / 2 ** 20)} MB`,
  );
  assert.equal(counts.ok + counts.invalid, 8000);
  assert.ok(peak < 1024 * 2 ** 20, `peak RSS ${peak}`);
});
