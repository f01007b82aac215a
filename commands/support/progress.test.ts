import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { bytesRead } from "../../common/io-meter.js";
import { SafetensorsFile, serializeSafetensors } from "../../formats/safetensors/index.js";
import { progressText } from "./progress.js";

const dir = mkdtempSync(join(tmpdir(), "lora-progress-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("progress line: counts with the input read rate, bytes with their own rate, and the ETA", () => {
  // 3 of 8 modules after 2 s, 50 MB read: 25 MB/s, ETA (2/3)·5 s.
  assert.equal(progressText("truncate", 3, 8, "modules", 2, 50e6), "truncate 3/8 modules  50.0 MB read  25.0 MB/s  ETA 3.3s");
  assert.equal(progressText("apply", 1.5e9, 6e9, "bytes", 3, 0), "apply 1.5 GB/6.0 GB  500.0 MB/s  ETA 9.0s");
  // Nothing read yet, nothing done, or all done: no rate, no ETA.
  assert.equal(progressText("inspect", 0, 4, undefined, 0.5, 0), "inspect 0/4");
  assert.equal(progressText("inspect", 4, 4, "modules", 1, 2048), "inspect 4/4 modules  2.0 kB read  2.0 kB/s");
});

test("every byte read from a safetensors file is counted once (tensor by tensor and whole-file reads)", async () => {
  const data = new Uint8Array(1 << 17).map((_, i) => i & 255); // 128 KiB: above the whole-read tensor size
  const small = new Uint8Array(512).map((_, i) => (i * 7) & 255);
  const path = join(dir, "a.safetensors");
  writeFileSync(path, await serializeSafetensors([{ name: "big", dtype: "U8", shape: [data.length], data }], null));
  const smallPath = join(dir, "b.safetensors");
  const smallBytes = await serializeSafetensors([{ name: "s", dtype: "U8", shape: [small.length], data: small }], null);
  writeFileSync(smallPath, smallBytes);
  for (const [p, opts, tensor, expect] of [
    [path, {}, "big", data.length],
    [smallPath, {}, "s", 0], // read whole when opened: counted then, not on the tensor read
  ] as const) {
    const before = bytesRead();
    const f = await SafetensorsFile.open(p, p, opts);
    const opened = bytesRead() - before;
    await f.readRaw(tensor);
    assert.equal(bytesRead() - before - opened, expect, `${p}: bytes counted by the tensor read`);
    if (p === smallPath) assert.equal(opened, smallBytes.length, "the whole small file counted once when opened");
    await f.close();
  }
});
