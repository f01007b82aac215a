import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync, linkSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, beforeEach, test } from "node:test";
import { cleanupTempFilesSync, liveTempPaths, stdoutSink, writeDirAtomic, writeFileAtomic, type ByteSink } from "./atomic.js";
import { RuntimeFailure, UsageError } from "./errors.js";
import { tempDir } from "../test/temp-dir.js";

const root = tempDir("lora-atomic-");
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
let dir = root;
beforeEach(() => {
  dir = join(root, String(n++));
  mkdirSync(dir);
  delete process.env.LORA_TEST_FAIL_WRITE_AFTER;
});

const text = (s: string) => async (sink: ByteSink) => {
  await sink.write(Buffer.from(s));
};
const ls = (d: string): string[] => readdirSync(d).sort();

test("writes the file through a temp name and leaves nothing else", async () => {
  const target = join(dir, "out.safetensors");
  let sawTemp: string[] = [];
  await writeFileAtomic(
    target,
    async (sink) => {
      await sink.write(Buffer.from("hello "));
      sawTemp = ls(dir);
      await sink.write(new Uint8Array(20 << 20).fill(7)); // bigger than a batch
      await sink.write(Buffer.from("end"));
    },
    { force: false, inputs: [] },
  );
  assert.equal(sawTemp.length, 1);
  assert.match(sawTemp[0], new RegExp(`^\\.out\\.safetensors\\.tmp-${process.pid}-[a-z0-9]+$`));
  assert.deepEqual(ls(dir), ["out.safetensors"]);
  const got = readFileSync(target);
  assert.equal(got.length, 6 + (20 << 20) + 3);
  assert.equal(got.subarray(0, 6).toString(), "hello ");
  assert.equal(got.subarray(-3).toString(), "end");
  assert.equal(got[6 + 12345], 7);
  assert.deepEqual(liveTempPaths(), []);
});

test("a failing fill leaves no temp file and no target", async () => {
  const target = join(dir, "out.safetensors");
  await assert.rejects(
    writeFileAtomic(
      target,
      async (sink) => {
        await sink.write(new Uint8Array(100));
        throw new Error("boom");
      },
      { force: false, inputs: [] },
    ),
    /boom/,
  );
  assert.deepEqual(ls(dir), []);
  // and an existing target is left untouched by a failed --force rewrite
  writeFileSync(target, "old");
  await assert.rejects(writeFileAtomic(target, async () => Promise.reject(new Error("x")), { force: true, inputs: [] }));
  assert.deepEqual(ls(dir), ["out.safetensors"]);
  assert.equal(readFileSync(target, "utf8"), "old");
  assert.deepEqual(liveTempPaths(), []);
});

test("an existing output is refused without force, replaced with it", async () => {
  const target = join(dir, "out.safetensors");
  writeFileSync(target, "old");
  await assert.rejects(writeFileAtomic(target, text("new"), { force: false, inputs: [] }), (e: unknown) => {
    assert.ok(e instanceof UsageError);
    assert.equal(e.exitCode, 2);
    assert.equal(e.message, `output exists: ${target} (use --force to overwrite)`);
    return true;
  });
  assert.equal(readFileSync(target, "utf8"), "old");
  await writeFileAtomic(target, text("new"), { force: true, inputs: [] });
  assert.equal(readFileSync(target, "utf8"), "new");
  assert.deepEqual(ls(dir), ["out.safetensors"]);
});

test("an input is never overwritten unless force: same path, symlink, hard link", async () => {
  const input = join(dir, "in.safetensors");
  writeFileSync(input, "input");
  symlinkSync(input, join(dir, "via-link.safetensors"));
  linkSync(input, join(dir, "hard.safetensors"));
  for (const target of [input, join(dir, "via-link.safetensors"), join(dir, "hard.safetensors"), join(dir, ".", "in.safetensors")]) {
    await assert.rejects(
      writeFileAtomic(target, text("x"), { force: false, inputs: [input] }),
      (e: unknown) => e instanceof UsageError && /refusing to overwrite input/.test(e.message),
    );
  }
  assert.equal(readFileSync(input, "utf8"), "input");
  await writeFileAtomic(input, text("replaced"), { force: true, inputs: [input] });
  assert.equal(readFileSync(input, "utf8"), "replaced");
});

test("a missing or unwritable directory is a runtime failure naming the path", async () => {
  const target = join(dir, "no", "such", "out.safetensors");
  await assert.rejects(writeFileAtomic(target, text("x"), { force: false, inputs: [] }), (e: unknown) => {
    assert.ok(e instanceof RuntimeFailure);
    assert.equal(e.exitCode, 1);
    assert.ok(e.message.includes(join(dir, "no", "such")), e.message);
    return true;
  });
  const file = join(dir, "plain");
  writeFileSync(file, "");
  await assert.rejects(writeFileAtomic(join(file, "out.safetensors"), text("x"), { force: false, inputs: [] }), RuntimeFailure);
  await assert.rejects(writeFileAtomic(dir, text("x"), { force: true, inputs: [] }), UsageError); // a directory as a file target
});

test("injected write failure (LORA_TEST_FAIL_WRITE_AFTER): ENOSPC as a RuntimeFailure, nothing left behind", async () => {
  process.env.LORA_TEST = "1";
  process.env.LORA_TEST_FAIL_WRITE_AFTER = "1000";
  try {
    const target = join(dir, "out.safetensors");
    await assert.rejects(
      writeFileAtomic(
        target,
        async (sink) => {
          for (let i = 0; i < 10; i++) await sink.write(new Uint8Array(300));
        },
        { force: false, inputs: [] },
      ),
      (e: unknown) => e instanceof RuntimeFailure && /no space left on device/.test(e.message) && e.message.includes(target),
    );
    assert.deepEqual(ls(dir), []);
    await assert.rejects(
      writeDirAtomic(join(dir, "outdir"), [{ name: "a.bin", fill: async (s) => s.write(new Uint8Array(2000)) }], { force: false, inputs: [] }),
      RuntimeFailure,
    );
    assert.deepEqual(ls(dir), []);
    const sink = stdoutSink(new Writable({ write: (_c, _e, cb) => cb() }));
    await sink.write(new Uint8Array(999));
    await assert.rejects(sink.write(new Uint8Array(2)), RuntimeFailure);
  } finally {
    delete process.env.LORA_TEST_FAIL_WRITE_AFTER;
  }
  // the hook is inert without LORA_TEST=1
  process.env.LORA_TEST_FAIL_WRITE_AFTER = "10";
  const saved = process.env.LORA_TEST;
  delete process.env.LORA_TEST;
  try {
    await writeFileAtomic(join(dir, "fine.bin"), async (s) => s.write(new Uint8Array(100)), { force: false, inputs: [] });
    assert.equal(readFileSync(join(dir, "fine.bin")).length, 100);
  } finally {
    process.env.LORA_TEST = saved ?? "1";
    delete process.env.LORA_TEST_FAIL_WRITE_AFTER;
  }
});

test("writeDirAtomic: creates, refuses, force-replaces; never a partial directory", async () => {
  const out = join(dir, "adapter");
  const files = (tag: string) => [
    { name: "adapter_model.safetensors", fill: text(`model ${tag}`) },
    { name: "adapter_config.json", fill: text(`{"tag":"${tag}"}`) },
  ];
  await writeDirAtomic(out, files("1"), { force: false, inputs: [] });
  assert.deepEqual(ls(dir), ["adapter"]);
  assert.deepEqual(ls(out), ["adapter_config.json", "adapter_model.safetensors"]);
  assert.equal(readFileSync(join(out, "adapter_model.safetensors"), "utf8"), "model 1");

  await assert.rejects(
    writeDirAtomic(out, files("2"), { force: false, inputs: [] }),
    (e: unknown) => e instanceof UsageError && /output exists/.test(e.message),
  );
  // an input inside the directory
  await assert.rejects(
    writeDirAtomic(out, files("2"), { force: false, inputs: [join(out, "adapter_model.safetensors")] }),
    (e: unknown) => e instanceof UsageError && /refusing to overwrite input/.test(e.message),
  );
  // --force replaces a directory of lora's own outputs only: a foreign file, a subdirectory, or an
  // input that this write does not rewrite under its own name is refused, and everything is kept.
  const foreignCases: [string, () => void, () => void][] = [
    ["notes.txt", () => writeFileSync(join(out, "notes.txt"), "mine"), () => rmSync(join(out, "notes.txt"))],
    ["sub/", () => mkdirSync(join(out, "sub")), () => rmSync(join(out, "sub"), { recursive: true })],
    ["in.safetensors", () => writeFileSync(join(out, "in.safetensors"), "an input"), () => rmSync(join(out, "in.safetensors"))],
  ];
  for (const [name, make, remove] of foreignCases) {
    make();
    const before = ls(out);
    await assert.rejects(
      writeDirAtomic(out, files("x"), { force: true, inputs: [join(out, "in.safetensors")] }),
      (e: unknown) => e instanceof UsageError && e.message.includes(`(${name})`) && /not replaced, even with --force/.test(e.message),
    );
    assert.deepEqual(ls(out), before, `${name}: the directory is untouched`);
    assert.deepEqual(ls(dir), ["adapter"], `${name}: no temp directory`);
    remove();
  }
  // an earlier output's weights under other names (a shard of a longer layout) go; an input that is
  // rewritten under its own name is replaced after it was read
  writeFileSync(join(out, "model-00002-of-00002.safetensors"), "old shard");
  await writeDirAtomic(out, files("3"), { force: true, inputs: [join(out, "adapter_model.safetensors")] });
  assert.deepEqual(ls(dir), ["adapter"]);
  assert.deepEqual(ls(out), ["adapter_config.json", "adapter_model.safetensors"]);
  assert.equal(readFileSync(join(out, "adapter_config.json"), "utf8"), '{"tag":"3"}');

  // a fill failing on the second file leaves the old directory as it was, and no temp dir
  await assert.rejects(
    writeDirAtomic(
      out,
      [
        { name: "adapter_model.safetensors", fill: text("4") },
        { name: "adapter_config.json", fill: async () => Promise.reject(new Error("late")) },
      ],
      { force: true, inputs: [] },
    ),
    /late/,
  );
  assert.deepEqual(ls(dir), ["adapter"]);
  assert.equal(readFileSync(join(out, "adapter_model.safetensors"), "utf8"), "model 3");
  // and a failure creating a new directory leaves nothing
  await assert.rejects(
    writeDirAtomic(join(dir, "new"), [{ name: "a", fill: async () => Promise.reject(new Error("early")) }], { force: false, inputs: [] }),
    /early/,
  );
  assert.deepEqual(ls(dir), ["adapter"]);
  // a file where the directory should go is refused even with force
  writeFileSync(join(dir, "afile"), "x");
  await assert.rejects(writeDirAtomic(join(dir, "afile"), files("5"), { force: true, inputs: [] }), UsageError);
  assert.deepEqual(liveTempPaths(), []);
});

test("cleanupTempFilesSync removes temp files of writes in flight", async () => {
  const target = join(dir, "out.safetensors");
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let entered!: () => void;
  const inFill = new Promise<void>((r) => (entered = r));
  const p = writeFileAtomic(
    target,
    async (sink) => {
      await sink.write(Buffer.from("partial"));
      entered();
      await gate;
    },
    { force: false, inputs: [] },
  );
  await inFill;
  assert.equal(liveTempPaths().length, 1);
  assert.equal(ls(dir).length, 1);
  cleanupTempFilesSync();
  assert.deepEqual(ls(dir), []);
  assert.deepEqual(liveTempPaths(), []);
  release();
  await p.catch(() => {}); // the rename now fails (its temp file is gone); either way nothing is left
  assert.ok(!existsSync(join(dir, ".out.safetensors.tmp")));
  assert.deepEqual(
    ls(dir).filter((f) => f.includes(".tmp-")),
    [],
  );
});

test("stdoutSink honours backpressure, keeps order, and is done with a chunk when its write resolves", async () => {
  const got: Buffer[] = [];
  let pending = 0;
  let maxPending = 0;
  const slow = new Writable({
    highWaterMark: 64,
    write(chunk: Buffer, _enc, cb) {
      pending++;
      maxPending = Math.max(maxPending, pending);
      setTimeout(() => {
        got.push(Buffer.from(chunk));
        pending--;
        cb();
      }, 1);
    },
  });
  const sink = stdoutSink(slow);
  let drains = 0;
  slow.on("drain", () => drains++);
  for (let i = 0; i < 50; i++) await sink.write(Buffer.from(`chunk ${String(i).padStart(3, "0")} `.repeat(10)));
  await new Promise<void>((r) => slow.end(r));
  assert.ok(drains > 0, "waited for drain");
  assert.equal(Buffer.concat(got).toString(), Array.from({ length: 50 }, (_, i) => `chunk ${String(i).padStart(3, "0")} `.repeat(10)).join(""));
  // a chunk's buffer may be reused once its write resolves, even where the stream buffers it
  const kept: Buffer[] = [];
  const buffering = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, cb) {
      setTimeout(() => {
        kept.push(Buffer.from(chunk));
        cb();
      }, 1);
    },
  });
  const reusing = stdoutSink(buffering);
  const one = Buffer.alloc(16);
  for (let i = 0; i < 20; i++) {
    one.fill(65 + i);
    await reusing.write(one);
  }
  await new Promise<void>((r) => buffering.end(r));
  assert.equal(Buffer.concat(kept).toString(), Array.from({ length: 20 }, (_, i) => String.fromCharCode(65 + i).repeat(16)).join(""));
  // a failing stream rejects the write
  const broken = new Writable({
    highWaterMark: 1,
    write(_c, _e, cb) {
      cb(Object.assign(new Error("EPIPE: broken pipe"), { code: "EPIPE" }));
    },
  });
  broken.on("error", () => {});
  const s2 = stdoutSink(broken);
  await assert.rejects(
    (async () => {
      for (let i = 0; i < 5; i++) await s2.write(Buffer.from("xx"));
    })(),
    (e: unknown) => (e as { code?: string }).code === "EPIPE",
  );
});
