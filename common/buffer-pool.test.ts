// BufferPool: exact lengths from size classes, reuse of what was given back (nearby sizes share a
// class), the cap on bytes held, and files read whole into pooled buffers given back on close().
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { BufferPool, growingBuffer } from "./buffer-pool.js";
import { SafetensorsFile, serializeSafetensors } from "../formats/safetensors/index.js";

const dir = mkdtempSync(join(tmpdir(), "lora-pool-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("take gives exactly n bytes at offset 0; a given-back buffer serves the next take of its class", () => {
  const pool = new BufferPool();
  for (const n of [1, 63, 64, 65, 1000, 4096, 100_000, 3_000_001]) {
    const b = pool.take(n);
    assert.equal(b.byteLength, n);
    assert.equal(b.byteOffset, 0);
    assert.ok(b.buffer.byteLength >= n && b.buffer.byteLength <= Math.max(64, n * 1.25 + 64), `class of ${n}: ${b.buffer.byteLength}`);
    pool.give(b);
    const again = pool.take(n);
    assert.equal(again.buffer, b.buffer, `${n} bytes: the buffer given back is reused`);
    pool.give(again);
  }
  // 1000 and 1010 bytes share a class (1024 rounded to eighths of 1024 = steps of 128)
  const a = pool.take(1000);
  pool.give(a);
  assert.equal(pool.take(1010).buffer, a.buffer);
  // a different class is not served from it
  const big = pool.take(5000);
  assert.notEqual(big.buffer, a.buffer);
});

test("the cap on held bytes drops what would exceed it; foreign sizes are not adopted", () => {
  const pool = new BufferPool(4096);
  const a = pool.take(4096),
    b = pool.take(4096);
  pool.give(a);
  pool.give(b); // over the cap: dropped
  assert.equal(pool.take(4096).buffer, a.buffer);
  assert.notEqual(pool.take(4096).buffer, b.buffer);
  const odd = new Uint8Array(1001);
  pool.give(odd); // 1001 is no size class
  assert.notEqual(pool.take(1001).buffer, odd.buffer);
});

test("a file read whole into a pooled buffer reads the same bytes and gives the buffer back on close", async () => {
  const path = join(dir, "small.safetensors");
  const values = Float32Array.from({ length: 48 }, (_, i) => i * 0.5 - 3);
  const bytes = await serializeSafetensors([{ name: "t", dtype: "F32", shape: [6, 8], data: new Uint8Array(values.buffer) }], null);
  writeFileSync(path, bytes);
  const pool = new BufferPool();
  const seed = pool.take(bytes.byteLength);
  pool.give(seed);
  const f = await SafetensorsFile.open(path, path, { buffers: pool });
  const other = pool.take(bytes.byteLength);
  assert.notEqual(other.buffer, seed.buffer, "the file holds the pooled buffer while open");
  assert.deepEqual(Array.from(await f.readFloat64("t")), Array.from(values));
  await f.close();
  await assert.rejects(f.readFloat64("t"), /after close/);
  assert.equal(pool.take(bytes.byteLength).buffer, seed.buffer, "close() gave it back");
});

test("growingBuffer: one buffer reused while requests fit, grown to the request or by doubling up to its cap", () => {
  const take = growingBuffer(1000);
  const a = take(100);
  assert.equal(a.length, 100);
  const b = take(60);
  assert.equal(b.buffer, a.buffer, "a smaller request reuses the buffer");
  const c = take(150);
  assert.notEqual(c.buffer, a.buffer);
  assert.equal(c.buffer.byteLength >= 200, true, "grown by doubling");
  const d = take(900);
  assert.equal(d.length, 900);
  const e = take(950);
  assert.equal(e.buffer.byteLength < 2 * 900, true, "doubling stops at the cap");
  assert.equal(take(5000).length, 5000, "a request above the cap is met");
});
