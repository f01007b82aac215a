// Hand-built pickles and torch-style zips for the formats/torch tests and fuzzers: a tiny pickle
// assembler (opcodes by their pickletools names) and a stored-zip writer with correct CRC-32s,
// so checkpoints can be made opcode by opcode without Python.
import { crc32 } from "node:zlib";

/** Pickle assembler: each method appends one opcode with its argument (pickletools names). */
export class Pk {
  private parts: Buffer[] = [];
  private op(code: number, arg: Buffer = Buffer.alloc(0)): this {
    this.parts.push(Buffer.from([code]), arg);
    return this;
  }
  raw(bytes: number[] | Buffer): this {
    this.parts.push(Buffer.from(bytes));
    return this;
  }
  proto(n = 2) {
    return this.op(0x80, Buffer.from([n]));
  }
  stop() {
    return this.op(0x2e);
  }
  mark() {
    return this.op(0x28);
  }
  global(module: string, name: string) {
    return this.op(0x63, Buffer.from(`${module}\n${name}\n`, "latin1"));
  }
  str(s: string) {
    const b = Buffer.from(s, "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    return this.op(0x58, Buffer.concat([len, b])); // BINUNICODE
  }
  int(n: number) {
    if (n >= 0 && n < 256) return this.op(0x4b, Buffer.from([n])); // BININT1
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    return this.op(0x4a, b); // BININT
  }
  long1(n: bigint) {
    const bytes: number[] = [];
    let v = n;
    do {
      bytes.push(Number(BigInt.asUintN(8, v)));
      v >>= 8n;
    } while (!(v === 0n && (bytes[bytes.length - 1]! & 0x80) === 0) && !(v === -1n && (bytes[bytes.length - 1]! & 0x80) !== 0));
    return this.op(0x8a, Buffer.from([bytes.length, ...bytes]));
  }
  none() {
    return this.op(0x4e);
  }
  bool(b: boolean) {
    return this.op(b ? 0x88 : 0x89);
  }
  tuple() {
    return this.op(0x74);
  }
  emptyTuple() {
    return this.op(0x29);
  }
  tuple1() {
    return this.op(0x85);
  }
  tuple2() {
    return this.op(0x86);
  }
  emptyDict() {
    return this.op(0x7d);
  }
  setitem() {
    return this.op(0x73);
  }
  setitems() {
    return this.op(0x75);
  }
  reduce() {
    return this.op(0x52);
  }
  build() {
    return this.op(0x62);
  }
  binpersid() {
    return this.op(0x51);
  }
  binput(i: number) {
    return this.op(0x71, Buffer.from([i]));
  }
  binget(i: number) {
    return this.op(0x68, Buffer.from([i]));
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }

  /** A tensor as torch.save pickles it: _rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict()). */
  tensor(key: string, storageType: string, numel: number, offset: number, size: number[], stride: number[]) {
    this.global("torch._utils", "_rebuild_tensor_v2").mark();
    this.mark().str("storage").global("torch", storageType).str(key).str("cpu").int(numel).tuple().binpersid();
    this.int(offset);
    this.mark();
    for (const s of size) this.int(s);
    this.tuple().mark();
    for (const s of stride) this.int(s);
    this.tuple().bool(false).global("collections", "OrderedDict").emptyTuple().reduce().tuple().reduce();
    return this;
  }
}

/** A zip of stored entries (local headers, central directory, end record), as torch writes. */
export function storedZip(entries: { name: string; data: Uint8Array }[]): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let at = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, "utf8");
    const crc = crc32(e.data) >>> 0;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(e.data.length, 18);
    lh.writeUInt32LE(e.data.length, 22);
    lh.writeUInt16LE(name.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(e.data.length, 20);
    ch.writeUInt32LE(e.data.length, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(at, 42);
    locals.push(lh, name, Buffer.from(e.data));
    central.push(ch, name);
    at += 30 + name.length + e.data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(at, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** A torch-style checkpoint: archive/data.pkl, archive/data/<key> storages, archive/version. */
export function torchZip(pkl: Uint8Array, storages: Record<string, Uint8Array> = {}): Buffer {
  return storedZip([
    { name: "archive/data.pkl", data: pkl },
    ...Object.entries(storages).map(([k, data]) => ({ name: `archive/data/${k}`, data })),
    { name: "archive/version", data: Buffer.from("3\n") },
  ]);
}

/** A small PEFT adapter checkpoint (F32; B stored transposed with a storage offset) and its storages. */
export function peftParts(): { pkl: Buffer; storages: Record<string, Uint8Array> } {
  const A = new Float32Array(4 * 8).map((_, i) => Math.sin(i + 1));
  const B = new Float32Array(2 + 4 * 6).map((_, i) => Math.cos(i));
  const p = new Pk().proto(2).global("collections", "OrderedDict").emptyTuple().reduce().mark();
  p.str("base_model.model.layers.0.q_proj.lora_A.weight").tensor("0", "FloatStorage", 32, 0, [4, 8], [8, 1]);
  p.str("base_model.model.layers.0.q_proj.lora_B.weight").tensor("1", "FloatStorage", 26, 2, [6, 4], [1, 6]);
  p.setitems().stop();
  return { pkl: p.bytes(), storages: { "0": new Uint8Array(A.buffer), "1": new Uint8Array(B.buffer) } };
}

/** peftParts as a checkpoint file. */
export function peftCheckpoint(): Buffer {
  const { pkl, storages } = peftParts();
  return torchZip(pkl, storages);
}
