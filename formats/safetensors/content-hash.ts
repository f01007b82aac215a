// The content hashes kohya sd-scripts stores in a LoRA's metadata (docs/formats.md "kohya
// metadata"), computed as library/train_util.py computes them: `precalculate_safetensors_hashes`
// serialises the tensors with only the `ss_*` metadata keys, then
//   sshs_model_hash  = sha256 of every byte after the header (the tensor data region), hex;
//   sshs_legacy_hash = sha256 of bytes [0x100000, 0x110000) of that serialisation, first 8 hex
//                      (an empty slice when the file is shorter: sha256 of nothing).
// The data region is the same whatever the metadata, so the model hash is that of the data we
// write; the legacy slice is located with the length of the `ss_*`-only header. The hashes go in
// the header, which is written before the data: the header is written with placeholders of the
// same length and rewritten once the data is out (file sinks), or the data is held in memory until
// then (standard output).
import type { Hash } from "node:crypto";
import type { ByteSink } from "../../common/atomic.js";
import { RuntimeFailure } from "../../common/errors.js";
import { layoutSafetensors, writeSafetensors, type TensorSpec } from "./writer.js";

export const LEGACY_HASH_START = 0x100000;
export const LEGACY_HASH_BYTES = 0x10000;

export interface ContentHashes {
  /** sha256 of the tensor data region, 64 hex digits. */
  model: string;
  /** sha256 of the legacy slice, first 8 hex digits. */
  legacy: string;
}

/** Metadata keys to fill with hashes, and how each is formatted (the length must not depend on the hash). */
export type HashFields = Record<string, (h: ContentHashes) => string>;

const ZERO: ContentHashes = { model: "0".repeat(64), legacy: "0".repeat(8) };

/** The metadata sd-scripts hashes with: its `ss_*` keys only. */
export function hashedMetadata(meta: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(meta).filter(([k]) => k.startsWith("ss_")));
}

/** Collects sha256 of the data region and the legacy slice while the file streams through. */
class HashTap {
  private readonly model: Hash;
  private readonly legacy: Hash;
  private at = 0;
  /** The legacy slice in data-region offsets; where it starts in the header, those header bytes are hashed first. */
  private readonly from: number;
  private readonly to: number;
  constructor(hashedHeader: Uint8Array, createHash: (algorithm: string) => Hash) {
    this.model = createHash("sha256");
    this.legacy = createHash("sha256");
    const h = hashedHeader.byteLength;
    if (LEGACY_HASH_START < h) this.legacy.update(hashedHeader.subarray(LEGACY_HASH_START, LEGACY_HASH_START + LEGACY_HASH_BYTES));
    this.from = Math.max(0, LEGACY_HASH_START - h);
    this.to = LEGACY_HASH_START + LEGACY_HASH_BYTES - h;
  }
  data(chunk: Uint8Array): void {
    this.model.update(chunk);
    const a = Math.max(this.from, this.at);
    const b = Math.min(this.to, this.at + chunk.byteLength);
    if (a < b) this.legacy.update(chunk.subarray(a - this.at, b - this.at));
    this.at += chunk.byteLength;
  }
  digest(): ContentHashes {
    return { model: this.model.digest("hex"), legacy: this.legacy.digest("hex").slice(0, 8) };
  }
}

function withHashes(meta: Record<string, string>, fields: HashFields, h: ContentHashes): Record<string, string> {
  const out = { ...meta };
  for (const [k, f] of Object.entries(fields)) out[k] = f(h);
  return out;
}

/**
 * writeSafetensors, with the metadata keys of `fields` set from the content hashes of what is
 * written. Returns the hashes. A sink without `rewrite` (standard output) gets the whole file at
 * the end, the data held in memory meanwhile.
 */
export async function writeSafetensorsHashed(
  sink: ByteSink,
  specs: readonly TensorSpec[],
  metadata: Record<string, string>,
  fields: HashFields,
): Promise<ContentHashes> {
  const placeholder = withHashes(metadata, fields, ZERO);
  const { header } = layoutSafetensors(specs, placeholder);
  // node:crypto is loaded only here: it costs every command's start-up (OpenSSL and ~17 modules) otherwise
  const { createHash } = await import("node:crypto");
  const tap = new HashTap(layoutSafetensors(specs, hashedMetadata(placeholder)).header, createHash);
  const held: Uint8Array[] = [];
  let seen = 0;
  const tapped: ByteSink = {
    async write(chunk) {
      if (seen < header.byteLength) {
        // the header goes out first, in one piece (writeSafetensors writes it in one call)
        seen += chunk.byteLength;
        if (sink.rewrite) await sink.write(chunk);
        return;
      }
      if (sink.rewrite) {
        // hashed while the write is under way (both only read the chunk): the sha256 of a large
        // file then costs little more wall time than the write itself
        const written = sink.write(chunk);
        tap.data(chunk);
        await written;
      } else {
        tap.data(chunk);
        held.push(new Uint8Array(chunk)); // a copy: the chunk may be reused once write resolves
      }
    },
  };
  await writeSafetensors(tapped, specs, placeholder);
  const hashes = tap.digest();
  const final = layoutSafetensors(specs, withHashes(metadata, fields, hashes)).header;
  if (final.byteLength !== header.byteLength) throw new RuntimeFailure("internal: the hashed header changed length");
  if (sink.rewrite) await sink.rewrite(0, final);
  else {
    await sink.write(final);
    for (const c of held) await sink.write(c);
  }
  return hashes;
}
