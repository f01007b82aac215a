// The zip container of torch.save (torch/serialization.py `_save`, written by PyTorch's
// PyTorchStreamWriter/miniz): `<archive>/data.pkl`, `<archive>/data/<key>` storages,
// `<archive>/version`, `<archive>/byteorder`. Read from the central directory (APPNOTE.TXT §4.3.16
// end record, §4.3.14–15 zip64), every offset and size checked against the file; entries stored
// (torch's own choice: method 0, data 64-byte aligned by padding extras) or deflated (method 8).
import { crc32, inflateRawSync } from "node:zlib";
import { InvalidInputError } from "../../common/errors.js";
import { MAX_BUFFER_BYTES, ZIP } from "./limits.js";
import { isZipHead } from "./sniff.js";
import type { ByteSource } from "./source.js";

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const EOCD_LEN = 22;
const MAX_COMMENT = 0xffff;

export interface ZipEntry {
  name: string;
  method: 0 | 8;
  crc: number;
  compressedSize: number;
  size: number;
  /** Offset of the local file header; the data offset is found from it on first read. */
  localOffset: number;
}

export class ZipArchive {
  private dataOffsets = new Map<string, number>();
  private constructor(
    readonly source: ByteSource,
    readonly entries: ReadonlyMap<string, ZipEntry>,
  ) {}

  /** Whether `bytes` start like a zip local file header ("PK\3\4"). */
  static sniff(bytes: Uint8Array): boolean {
    return isZipHead(bytes);
  }

  static async open(source: ByteSource): Promise<ZipArchive> {
    const bad = (what: string) =>
      new InvalidInputError(`${source.label}: not a valid zip archive: ${what}`, { hint: "the checkpoint is truncated or corrupt" });
    const tailLen = Math.min(source.size, EOCD_LEN + MAX_COMMENT);
    const tail = Buffer.from(await source.read(source.size - tailLen, tailLen));
    // the end record is the last signature whose comment length reaches exactly the end of the file
    let at = -1;
    for (let i = tail.length - EOCD_LEN; i >= 0; i--) {
      if (tail.readUInt32LE(i) === EOCD_SIG && i + EOCD_LEN + tail.readUInt16LE(i + 20) === tail.length) {
        at = i;
        break;
      }
    }
    if (at < 0) throw bad("no end-of-central-directory record");
    const eocdPos = source.size - tailLen + at;
    let count = tail.readUInt16LE(at + 10);
    let cdSize = tail.readUInt32LE(at + 12);
    let cdOffset = tail.readUInt32LE(at + 16);
    if (tail.readUInt16LE(at + 4) !== 0 || tail.readUInt16LE(at + 6) !== 0) throw bad("multi-disk archives are not supported");
    let cdLimit = eocdPos;
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      // zip64: a locator right before the end record points at the zip64 end record
      if (eocdPos < 20) throw bad("zip64 fields without a zip64 locator");
      const loc = Buffer.from(await source.read(eocdPos - 20, 20));
      if (loc.readUInt32LE(0) !== ZIP64_LOCATOR_SIG) throw bad("zip64 fields without a zip64 locator");
      const recPos = u64(loc, 8, bad);
      if (recPos + 56 > eocdPos - 20) throw bad("zip64 end record outside the file");
      const rec = Buffer.from(await source.read(recPos, 56));
      if (rec.readUInt32LE(0) !== ZIP64_EOCD_SIG) throw bad("no zip64 end record where the locator points");
      count = u64(rec, 32, bad);
      cdSize = u64(rec, 40, bad);
      cdOffset = u64(rec, 48, bad);
      cdLimit = recPos;
    }
    if (count > ZIP.maxEntries) throw bad(`${count} entries, more than the ${ZIP.maxEntries} accepted`);
    if (cdSize > ZIP.maxCentralDirectoryBytes) throw bad(`a central directory of ${cdSize} bytes, more than the ${ZIP.maxCentralDirectoryBytes} accepted`);
    if (cdOffset + cdSize > cdLimit) throw bad(`the central directory (bytes ${cdOffset}…${cdOffset + cdSize}) overlaps its end record`);
    const cd = Buffer.from(await source.read(cdOffset, cdSize));
    const entries = new Map<string, ZipEntry>();
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== CENTRAL_SIG) throw bad(`central directory entry ${i} is malformed`);
      const flags = cd.readUInt16LE(p + 8);
      const method = cd.readUInt16LE(p + 10);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cd.length) throw bad(`central directory entry ${i} runs past the directory`);
      const name = decodeName(cd.subarray(p + 46, p + 46 + nameLen), bad);
      if (flags & 1) throw bad(`${name} is encrypted`);
      if (method !== 0 && method !== 8) throw bad(`${name} uses compression method ${method} (only stored and deflate are read)`);
      let size = cd.readUInt32LE(p + 24);
      let compressedSize = cd.readUInt32LE(p + 20);
      let localOffset = cd.readUInt32LE(p + 42);
      if (size === 0xffffffff || compressedSize === 0xffffffff || localOffset === 0xffffffff) {
        // zip64 extended information extra field (id 1): the 0xffffffff fields, in this order
        const z = findExtra(cd.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen), 1);
        if (!z) throw bad(`${name} has zip64 sizes but no zip64 extra field`);
        let q = 0;
        const next = () => {
          if (q + 8 > z.length) throw bad(`${name}: zip64 extra field too short`);
          const v = u64(z, q, bad);
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localOffset === 0xffffffff) localOffset = next();
      }
      if (method === 0 && size !== compressedSize) throw bad(`${name} is stored with ${compressedSize} bytes but declares ${size}`);
      if (method === 8 && size > compressedSize * ZIP.maxDeflateRatio + 1024)
        throw bad(`${name} claims ${size} bytes from ${compressedSize} deflated (impossible ratio)`);
      if (localOffset + 30 + compressedSize > cdOffset) throw bad(`${name}: data lies outside the file's entries area`);
      if (entries.has(name)) throw bad(`${name} appears twice`);
      entries.set(name, { name, method: method as 0 | 8, crc: cd.readUInt32LE(p + 16), compressedSize, size, localOffset });
      p = end;
    }
    return new ZipArchive(source, entries);
  }

  /** Where an entry's data begins (after its local header, whose name and extra lengths can differ from the central directory's). */
  private async dataOffset(e: ZipEntry): Promise<number> {
    const known = this.dataOffsets.get(e.name);
    if (known !== undefined) return known;
    const h = Buffer.from(await this.source.read(e.localOffset, 30));
    if (h.readUInt32LE(0) !== LOCAL_SIG) throw new InvalidInputError(`${this.source.label}: zip entry ${e.name} has no local header at byte ${e.localOffset}`);
    const at = e.localOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
    if (at + e.compressedSize > this.source.size) throw new InvalidInputError(`${this.source.label}: zip entry ${e.name} runs past the end of the file`);
    this.dataOffsets.set(e.name, at);
    return at;
  }

  /** The whole uncompressed entry, its CRC-32 checked. */
  async read(e: ZipEntry): Promise<Uint8Array> {
    const label = this.source.label;
    if (e.size > MAX_BUFFER_BYTES) throw new InvalidInputError(`${label}: zip entry ${e.name} is ${e.size} bytes, more than one buffer can hold`);
    const raw = await this.source.read(await this.dataOffset(e), e.compressedSize);
    let data: Uint8Array = raw;
    if (e.method === 8) {
      try {
        data = inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
      } catch (err) {
        throw new InvalidInputError(`${label}: zip entry ${e.name} does not inflate to its declared ${e.size} bytes (${(err as Error).message})`);
      }
      if (data.length !== e.size) throw new InvalidInputError(`${label}: zip entry ${e.name} inflates to ${data.length} bytes, not the declared ${e.size}`);
    }
    if (crc32(data) >>> 0 !== e.crc >>> 0) throw new InvalidInputError(`${label}: zip entry ${e.name} fails its CRC-32 check`, { hint: "the file is corrupt" });
    return data;
  }
}

function u64(b: Buffer, at: number, bad: (w: string) => Error): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`a 64-bit field (${v}) beyond 2^53`);
  return Number(v);
}

function findExtra(extra: Buffer, id: number): Buffer | null {
  let p = 0;
  while (p + 4 <= extra.length) {
    const len = extra.readUInt16LE(p + 2);
    if (p + 4 + len > extra.length) return null;
    if (extra.readUInt16LE(p) === id) return extra.subarray(p + 4, p + 4 + len);
    p += 4 + len;
  }
  return null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
function decodeName(b: Uint8Array, bad: (w: string) => Error): string {
  try {
    return utf8.decode(b);
  } catch {
    throw bad("an entry name is not UTF-8");
  }
}
