// The restricted unpickler opcode by opcode (hand-built pickles, pickletools names), its limits,
// and the torch policy's refusals — independent of Python.
import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidInputError } from "../../common/errors.js";
import { Pk, peftCheckpoint, storedZip, torchZip } from "../../test/torch-build.js";
import { torchPolicy } from "./globals.js";
import { readCheckpointBuffer } from "./index.js";
import { type PicklePolicy, unpickle } from "./pickle.js";
import { type PyBytes, PyDict, PyFloat, PyGlobal, type PyList, PyTuple } from "./values.js";

/** A policy that admits every name and records calls as data (the VM alone under test). */
const open: PicklePolicy = {
  global: (m, n) => new PyGlobal(m, n),
  call: (fn, args, op) => ({ op, fn: (fn as PyGlobal).qualified, args: args.items }),
  build: (obj, state) => ({ built: obj, state }),
  persistentLoad: (pid) => ({ pid }),
};
const run = (bytes: number[] | Buffer | string, policy = open) =>
  unpickle(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : Buffer.from(bytes), 0, policy, "t").value;
const refused = (bytes: number[] | Buffer | string, re: RegExp, policy = open) =>
  assert.throws(
    () => run(bytes, policy),
    (e: unknown) => e instanceof InvalidInputError && re.test(e.message),
  );

test("protocol 0 text opcodes: INT, LONG, FLOAT, STRING, UNICODE, PUT/GET, LIST/APPEND, DICT, TUPLE, POP, DUP", () => {
  const v = run("(I42\nI01\nL-123456789012345678901234567890L\nF1.5\nS'a\\'b\\x41\\n'\nVcaf\\u00e9\np0\n0g0\n(lI1\naI2\na(S'k'\nI3\ndI7\n2t.");
  assert.ok(v instanceof PyTuple);
  const [a, b, c, d, e, f, g, h, i, j] = v.items;
  assert.equal(a, 42);
  assert.equal(b, true);
  assert.equal(c, -123456789012345678901234567890n);
  assert.deepEqual(d, new PyFloat(1.5));
  assert.equal(e, "a'bA\n");
  assert.equal(f, "café");
  assert.deepEqual((g as PyList).items, [1, 2]);
  assert.ok(h instanceof PyDict && h.values[0] === 3 && h.keys[0] === "k");
  assert.equal(i, 7);
  assert.equal(j, 7);
});

test("protocol 2–5 opcodes: LONG1/LONG4, BININT*, TUPLE1–3, NEWTRUE/NEWFALSE, BINFLOAT, bytes, sets, MEMOIZE, FRAME, STACK_GLOBAL, NEWOBJ", () => {
  const p = new Pk().proto(4).raw([0x95, 60, 0, 0, 0, 0, 0, 0, 0]).mark();
  p.long1(-129n).raw([0x8b, 2, 0, 0, 0, 0xff, 0x7f]).int(-5).raw([0x4d, 0x34, 0x12]);
  p.int(1).tuple1().int(1).int(2).tuple2().int(1).int(2).int(3).raw([0x87]);
  p.bool(true).bool(false).raw([0x47, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
  p.raw([0x43, 2, 0x61, 0x62, 0x8e, 1, 0, 0, 0, 0, 0, 0, 0, 0x63, 0x96, 1, 0, 0, 0, 0, 0, 0, 0, 0x64]);
  p.raw([0x8f, 0x28, 0x4b, 1, 0x4b, 2, 0x90, 0x28, 0x4b, 3, 0x91]);
  p.raw([0x8c, 1, 0x78, 0x94, 0x68, 0]); // SHORT_BINUNICODE "x", MEMOIZE, BINGET 0
  p.raw([0x8c, 1, 0x6d, 0x8c, 1, 0x6e, 0x93, 0x29, 0x81]); // STACK_GLOBAL m.n, NEWOBJ ()
  p.raw([0x8d, 1, 0, 0, 0, 0, 0, 0, 0, 0x79]); // BINUNICODE8 "y"
  p.tuple().stop();
  const v = run(p.bytes()) as PyTuple;
  const it = v.items;
  assert.deepEqual(it.slice(0, 4), [-129, 0x7fff, -5, 0x1234]);
  assert.deepEqual(
    it.slice(4, 7).map((t) => (t as PyTuple).items),
    [[1], [1, 2], [1, 2, 3]],
  );
  assert.deepEqual(it.slice(7, 10), [true, false, new PyFloat(1.5)]);
  assert.deepEqual(
    it.slice(10, 13).map((b) => Buffer.from((b as PyBytes).data).toString()),
    ["ab", "c", "d"],
  );
  assert.deepEqual([(it[13] as PyList).kind, (it[13] as PyList).items], ["set", [1, 2]]);
  assert.deepEqual([(it[14] as PyList).kind, (it[14] as PyList).items], ["frozenset", [3]]);
  assert.deepEqual(it.slice(15, 17), ["x", "x"]);
  assert.deepEqual(it[17], { op: "NEWOBJ", fn: "m.n", args: [] });
  assert.equal(it[18], "y");
});

test("malformed pickles are exit 3 with the byte offset, never another exception", () => {
  refused([0x80, 2], /ends without STOP/);
  refused([0x2e], /stack underflow/);
  refused([0x28, 0x2e], /stack underflow/);
  refused([0x68, 5, 0x2e], /memo entry 5 is read before/);
  refused([0x58, 0xff, 0xff, 0xff, 0xff], /string of 4294967295 bytes/);
  refused([0x58, 10, 0, 0, 0, 0x61], /ends inside an opcode/);
  refused([0x58, 2, 0, 0, 0, 0xc3, 0x28, 0x2e], /not valid UTF-8/);
  refused([0xff], /unknown opcode 0xff/);
  refused([0x80, 9], /protocol 9/);
  refused([0x82, 1, 0x2e], /extension-registry/);
  refused([0x97, 0x2e], /out-of-band buffers/);
  refused([0x8b, 0, 0, 1, 0], /integer of 65536 bytes/);
  refused([0x29, 0x4b, 1, 0x61, 0x2e], /APPEND on tuple/);
  refused([0x7d, 0x5d, 0x4b, 1, 0x73, 0x2e], /unhashable dict key/);
  refused("I1x\n.", /malformed INT/);
  refused("S'\\q'\n.", /malformed STRING/);
  refused(Buffer.alloc(20_000, 0x28), /MARKs nested deeper than 10000/);
  refused(Buffer.concat([Buffer.from([0x4b, 1]), Buffer.alloc(1_000_001, 0x32)]), /more than 1000000 values on the stack/);
});

test("the torch policy: admitted names build tensors; any other global, a call of a type, BUILD elsewhere are refused", () => {
  const policy = torchPolicy("t", () => {
    throw new Error("no storages here");
  });
  refused(new Pk().global("os", "system").bytes(), /asks for os\.system, which lora refuses/, policy);
  refused(new Pk().str("os").str("system").raw([0x93]).bytes(), /asks for os\.system/, policy);
  refused("(S'x'\nios\nsystem\n.", /asks for os\.system/, policy);
  refused("(cbuiltins\ngetattr\nS'x'\no.", /asks for builtins\.getattr/, policy);
  refused(new Pk().global("torch", "FloatStorage").emptyTuple().reduce().stop().bytes(), /calls torch\.FloatStorage/, policy);
  refused(new Pk().global("torch._utils", "_rebuild_sparse_tensor").bytes(), /asks for torch\._utils\._rebuild_sparse_tensor/, policy);
  refused(new Pk().emptyDict().emptyDict().build().stop().bytes(), /BUILD of dict/, policy);
  refused(new Pk().mark().str("file").tuple().binpersid().stop().bytes(), /not a torch storage reference/, policy);
  // protocol-2 spellings of plain containers are data, not calls
  const v = run(new Pk().global("_codecs", "encode").str("\u00ff").str("latin1").tuple2().reduce().stop().bytes(), policy) as PyBytes;
  assert.deepEqual([...v.data], [0xff]);
  const s = run(new Pk().global("__builtin__", "set").mark().raw([0x5d, 0x4b, 1, 0x61]).tuple().reduce().stop().bytes(), policy) as PyList;
  assert.deepEqual([s.kind, s.items], ["set", [1]]);
  const od = run(
    new Pk().global("collections", "OrderedDict").emptyTuple().reduce().emptyDict().str("_metadata").int(1).setitem().build().stop().bytes(),
    policy,
  );
  assert.ok(od instanceof PyDict && od.kind === "OrderedDict" && od.attributes.get("_metadata") === 1);
});

test("a hand-built checkpoint: a transposed view with a storage offset is materialised row-major", async () => {
  const { file } = await readCheckpointBuffer(peftCheckpoint(), "hand");
  const B = await file.readFloat32("base_model.model.layers.0.q_proj.lora_B.weight");
  const src = new Float32Array(26).map((_, i) => Math.cos(i));
  for (let r = 0; r < 6; r++) for (let c = 0; c < 4; c++) assert.equal(B[r * 4 + c], src[2 + r + 6 * c]);
  assert.deepEqual(file.tensor("base_model.model.layers.0.q_proj.lora_B.weight").shape, [6, 4]);
});

const oneTensor = (numel: number, offset: number, size: number[], stride: number[], type = "FloatStorage") =>
  new Pk().proto(2).emptyDict().str("w").tensor("0", type, numel, offset, size, stride).setitem().stop().bytes();

test("views that leave their storage, sizes that lie, and bombs are refused before any read", async () => {
  const f32 = (n: number) => new Uint8Array(4 * n);
  const cases: [Buffer, RegExp][] = [
    [torchZip(oneTensor(4, 0, [2, 3], [3, 1]), { "0": f32(4) }), /reaches element 5 of torch\.FloatStorage "0", which has 4/],
    [torchZip(oneTensor(4, 5, [0], [1]), { "0": f32(4) }), /starts at element 5/],
    [torchZip(oneTensor(4, 0, [2], [-1]), { "0": f32(4) }), /stride entry int -1/],
    [torchZip(oneTensor(4, 0, [2, 2], [1]), { "0": f32(4) }), /2 sizes but 1 strides/],
    [torchZip(oneTensor(4, 0, [4], [1]), { "0": f32(3) }), /declares 4 × 4 bytes but its record holds 12/],
    [torchZip(oneTensor(4, 0, [4], [1])), /has no record archive\/data\/0/],
    [torchZip(oneTensor(1, 0, [1 << 20, 1 << 10], [0, 0]), { "0": f32(1) }), /decompression bomb/],
    [torchZip(oneTensor(4, 0, [4], [1], "QInt8Storage"), { "0": f32(4) }), /asks for torch\.QInt8Storage/],
  ];
  for (const [buf, re] of cases) await assert.rejects(readCheckpointBuffer(buf, "x"), (e: unknown) => e instanceof InvalidInputError && re.test(e.message));
});

test("zip damage: CRC mismatch, a big-endian byteorder record, no data.pkl, a TorchScript archive", async () => {
  const good = peftCheckpoint();
  const { file } = await readCheckpointBuffer(good, "ok");
  assert.equal(file.tensors.length, 2);
  const bad = Buffer.from(good);
  bad[good.indexOf(Buffer.from("archive/data/0")) + 14 + 3] ^= 1; // a byte of storage 0's data
  const { file: f2 } = await readCheckpointBuffer(bad, "crc");
  await assert.rejects(f2.readRaw(f2.tensors[0]!), /fails its CRC-32 check/);
  const pkl = new Pk().proto(2).emptyDict().stop().bytes();
  const withOrder = (order: string) =>
    readCheckpointBuffer(
      storedZip([
        { name: "a/data.pkl", data: pkl },
        { name: "a/byteorder", data: Buffer.from(order) },
      ]),
      "o",
    );
  await assert.rejects(withOrder("big"), /byte order "big"/);
  await assert.rejects(withOrder("little"), /holds no tensors/);
  await assert.rejects(readCheckpointBuffer(storedZip([{ name: "m/constants.pkl", data: pkl }]), "jit"), /TorchScript archive/);
  await assert.rejects(readCheckpointBuffer(storedZip([{ name: "x.txt", data: pkl }]), "flat"), /no archive folder/);
});
