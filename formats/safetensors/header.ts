// The safetensors header: `<u64 LE N><N bytes of UTF-8 JSON><data>`. parseHeader runs every check
// of the reference reader (tensor.rs `read_metadata` → `Metadata::validate`) in the same order and
// throws the same variant; it is pure and synchronous so `inspect` can parse a header from 8 + N
// bytes without touching the data. See docs/formats.md "safetensors".
import { DTYPE_BITS, isDType, type DType } from "../../common/dtype.js";
import { SafetensorsError } from "./errors.js";
import { findDuplicateKey, scanHeaderJson, type BadNumber } from "./header-scan.js";
import { MAX_HEADER_SIZE, N_LEN } from "./limits.js";

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte offsets relative to the start of the data section (`dataStart` in the file). */
  begin: number;
  end: number;
}

export interface Header {
  /** N: the byte length of the JSON header (padding included). */
  headerSize: number;
  /** 8 + N: where the data section starts in the file. */
  dataStart: number;
  /** Every tensor, in file-offset order. */
  tensors: TensorInfo[];
  byName: Map<string, TensorInfo>;
  /** `__metadata__`, or null when absent or JSON null. */
  metadata: Record<string, string> | null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const NOT_SAFETENSORS_HINT = "is this a safetensors file? (torch.save .bin/.pt checkpoints are read when recognised; GGUF files are not supported)";
const TRUNCATED_HINT = "the file may be truncated, or written by a non-conforming tool";

/**
 * Checks 1–3 on the first 8 bytes: returns N, the header length. `fileLength` is the length of the
 * whole file (or buffer). Used by the file reader to learn how many bytes to read next.
 */
export function readHeaderLength(prefix: Uint8Array, fileLength: number, label: string): number {
  if (fileLength < N_LEN || prefix.length < N_LEN) {
    throw new SafetensorsError("HeaderTooSmall", label, {
      detail: `the file is ${Math.min(fileLength, prefix.length)} bytes; a safetensors file starts with an 8-byte header length`,
      hint: NOT_SAFETENSORS_HINT,
    });
  }
  const big = new DataView(prefix.buffer, prefix.byteOffset, N_LEN).getBigUint64(0, true);
  if (big > BigInt(MAX_HEADER_SIZE)) {
    throw new SafetensorsError("HeaderTooLarge", label, {
      detail: `the header length field says ${big} bytes; the limit is ${MAX_HEADER_SIZE}`,
      hint: NOT_SAFETENSORS_HINT,
    });
  }
  const n = Number(big);
  if (N_LEN + n > fileLength) {
    throw new SafetensorsError("InvalidHeaderLength", label, {
      detail: `the header length field says ${n} bytes but only ${fileLength - N_LEN} bytes follow it`,
      hint: fileLength > 64 ? TRUNCATED_HINT : NOT_SAFETENSORS_HINT,
    });
  }
  return n;
}

/**
 * Parse and validate a header. `prefixAndHeader` holds at least the first 8 + N bytes of the file
 * (more is fine: a whole file in memory); `fileLength` is the length of the whole file.
 */
export function parseHeader(prefixAndHeader: Uint8Array, fileLength: number, label: string): Header {
  // 1–3: length prefix
  const n = readHeaderLength(prefixAndHeader, fileLength, label);
  if (prefixAndHeader.length < N_LEN + n) {
    throw new SafetensorsError("InvalidHeaderLength", label, {
      detail: `the header length field says ${n} bytes but only ${prefixAndHeader.length - N_LEN} were read`,
      hint: TRUNCATED_HINT,
    });
  }

  // 4: strict UTF-8 (Buffer#toString would substitute U+FFFD; Rust rejects)
  let text: string;
  try {
    text = utf8.decode(prefixAndHeader.subarray(N_LEN, N_LEN + n));
  } catch (cause) {
    throw new SafetensorsError("InvalidHeader", label, {
      detail: `the ${n}-byte header is not valid UTF-8`,
      hint: NOT_SAFETENSORS_HINT,
      cause,
    });
  }

  // 5: JSON, after a scan that bounds nesting depth and finds duplicate keys and bad numbers
  const scan = scanHeaderJson(text, label);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new SafetensorsError("InvalidHeaderDeserialization", label, {
      detail: (cause as Error).message,
      cause,
    });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new SafetensorsError("InvalidHeaderDeserialization", label, {
      detail: `the header must be a JSON object, found ${describe(json)}`,
      hint: NOT_SAFETENSORS_HINT,
    });
  }
  const root = json as Record<string, unknown>;
  const names = Object.keys(root);
  let nested = 0;
  for (const name of names) {
    const v = root[name];
    if (typeof v === "object" && v !== null && !Array.isArray(v)) nested += Object.keys(v).length;
  }
  if (names.length !== scan.rootKeys || nested !== scan.nestedKeys) {
    const dup = findDuplicateKey(text);
    const key = dup?.key ?? "?";
    const where = dup?.where ?? null;
    throw new SafetensorsError("DuplicateKey", label, {
      ...(where === null ? { tensor: key } : where !== "__metadata__" ? { tensor: where } : {}),
      detail:
        where === null
          ? `the tensor name ${JSON.stringify(key)} appears more than once (the format forbids duplicate keys)`
          : `the key ${JSON.stringify(key)} appears more than once in ${where === "__metadata__" ? "__metadata__" : `the entry of tensor ${JSON.stringify(where)}`}`,
    });
  }
  let metadata: Record<string, string> | null = null;
  const infos: TensorInfo[] = [];
  for (const name of names) {
    const value = root[name];
    if (name === "__metadata__") {
      metadata = checkMetadata(value, label);
      continue;
    }
    infos.push(checkEntry(name, value, label, scan.badNumber?.tensor === name ? scan.badNumber : null));
  }

  // 6: walk in data_offsets order (the key order of the JSON does not matter)
  infos.sort(byOffsets);
  let cursor = 0;
  for (const t of infos) {
    if (t.begin !== cursor || t.end < t.begin) {
      throw new SafetensorsError("InvalidOffset", label, {
        tensor: t.name,
        detail:
          t.end < t.begin
            ? `data_offsets [${t.begin}, ${t.end}] end before they begin`
            : `expected data to start at byte ${cursor} of the data section, found ${t.begin} (tensors must tile it with no gaps or overlaps)`,
        hint: TRUNCATED_HINT,
      });
    }
    cursor = t.end;
    let count = 1;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || (d !== 0 && count > Number.MAX_SAFE_INTEGER / d)) {
        throw new SafetensorsError("ValidationOverflow", label, {
          tensor: t.name,
          detail: Number.isSafeInteger(d)
            ? `shape [${t.shape.join(", ")}] has more elements than can be counted exactly (2^53)`
            : `shape has a dimension of about ${d.toExponential(3)}, beyond what can be counted exactly (2^53)`,
        });
      }
      count *= d;
    }
    const bits = count * DTYPE_BITS[t.dtype];
    if (!Number.isSafeInteger(bits)) {
      throw new SafetensorsError("ValidationOverflow", label, {
        tensor: t.name,
        detail: `${count} elements of ${t.dtype} is more bits than can be counted exactly (2^53)`,
      });
    }
    if (bits % 8 !== 0) {
      throw new SafetensorsError("MisalignedSlice", label, {
        tensor: t.name,
        detail: `${count} elements of ${t.dtype} (${DTYPE_BITS[t.dtype]} bits each) is ${bits} bits, not a whole number of bytes`,
      });
    }
    if (t.end - t.begin !== bits / 8) {
      throw new SafetensorsError("TensorInvalidInfo", label, {
        tensor: t.name,
        detail: `${t.dtype} [${t.shape.join(", ")}] needs ${bits / 8} bytes, but data_offsets [${t.begin}, ${t.end}] span ${t.end - t.begin}`,
      });
    }
  }

  // 7: the tensors tile the data section exactly, to the end of the file
  const dataStart = N_LEN + n;
  if (dataStart + cursor !== fileLength) {
    const diff = fileLength - (dataStart + cursor);
    throw new SafetensorsError("MetadataIncompleteBuffer", label, {
      detail:
        diff > 0
          ? `the tensors end at byte ${dataStart + cursor} but the file has ${fileLength} bytes (${diff} trailing byte${diff === 1 ? "" : "s"})`
          : `the tensors end at byte ${dataStart + cursor} but the file has only ${fileLength} bytes (${-diff} missing)`,
      hint: diff > 0 ? "trailing bytes are refused (they could make the file a polyglot)" : TRUNCATED_HINT,
    });
  }

  const byName = new Map<string, TensorInfo>();
  for (const t of infos) byName.set(t.name, t);
  return { headerSize: n, dataStart, tensors: infos, byName, metadata };
}

function byOffsets(a: TensorInfo, b: TensorInfo): number {
  return a.begin - b.begin || a.end - b.end || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  if (typeof v === "number") return `the number ${v}`;
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

function checkMetadata(value: unknown, label: string): Record<string, string> | null {
  if (value === null) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new SafetensorsError("InvalidHeaderDeserialization", label, {
      detail: `__metadata__ must be an object of strings, found ${describe(value)}`,
    });
  }
  const meta = value as Record<string, unknown>;
  for (const k of Object.keys(meta)) {
    if (typeof meta[k] !== "string") {
      throw new SafetensorsError("InvalidHeaderDeserialization", label, {
        detail: `__metadata__ values must be strings; ${JSON.stringify(k)} is ${describe(meta[k])}`,
        hint: "store structured metadata as a JSON string, as PEFT and kohya do",
      });
    }
  }
  return meta as Record<string, string>;
}

function checkEntry(name: string, value: unknown, label: string, bad: BadNumber | null): TensorInfo {
  const fail = (detail: string): never => {
    throw new SafetensorsError("InvalidHeaderDeserialization", label, { tensor: name, detail });
  };
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return fail(`expected an object with dtype, shape and data_offsets, found ${describe(value)}`);
  }
  const e = value as Record<string, unknown>;
  const { dtype, shape, data_offsets: offsets } = e;
  if (dtype === undefined) fail("missing field dtype");
  if (!isDType(dtype)) return fail(`unknown dtype ${typeof dtype === "string" ? JSON.stringify(dtype) : describe(dtype)}`);
  if (!Array.isArray(shape)) return fail(shape === undefined ? "missing field shape" : `shape must be an array, found ${describe(shape)}`);
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0) {
      fail(`shape must hold integers ≥ 0, found ${describe(d)}`);
    }
  }
  if (!Array.isArray(offsets)) {
    return fail(offsets === undefined ? "missing field data_offsets" : `data_offsets must be [begin, end], found ${describe(offsets)}`);
  }
  if (offsets.length !== 2) fail(`data_offsets must be [begin, end], found ${offsets.length} values`);
  for (const o of offsets) {
    if (typeof o !== "number" || !Number.isInteger(o) || o < 0) fail(`data_offsets must be integers ≥ 0, found ${describe(o)}`);
  }
  if (bad) fail(`${bad.field} holds ${bad.literal}, which is not an unsigned 64-bit integer literal`);
  // Integers beyond 2^53 have lost precision in JSON.parse: shape dims are caught as
  // ValidationOverflow by the walk; offsets cannot tile the (smaller) file and fail there too.
  return { name, dtype, shape: shape as number[], begin: offsets[0] as number, end: offsets[1] as number };
}
