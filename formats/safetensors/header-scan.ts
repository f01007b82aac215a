// The header scanner: one pass over the header text before JSON.parse, allocating almost nothing.
// It sees what JSON.parse would hide or mishandle (duplicate keys, the literal text of shape and
// offset numbers, nesting deeper than MAX_JSON_DEPTH), for parseHeader (header.ts) to refuse as
// the reference reader does.
import { SafetensorsError } from "./errors.js";
import { MAX_JSON_DEPTH } from "./limits.js";

export interface BadNumber {
  tensor: string;
  field: string;
  literal: string;
}

export interface ScanResult {
  /** Keys written in the root object (JSON.parse keeps one of each duplicate). */
  rootKeys: number;
  /** Keys written in the objects directly inside the root object (__metadata__, tensor entries). */
  nestedKeys: number;
  /** First number in a shape or data_offsets array that serde would not read as a u64. */
  badNumber: BadNumber | null;
}

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isNumberChar = (c: number): boolean => isDigit(c) || c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2b || c === 0x2d;

/** The end quote of the string whose body starts at `start`, skipping escaped quotes; -1 if unterminated. */
function stringEnd(text: string, start: number, escapes: boolean): number {
  let end = text.indexOf('"', start);
  if (!escapes) return end;
  while (end !== -1) {
    let b = end - 1;
    while (b >= start && text.charCodeAt(b) === 0x5c) b--;
    if ((end - 1 - b) % 2 === 0) return end;
    end = text.indexOf('"', end + 1);
  }
  return -1;
}

/** The decoded value of the JSON string body [start, end); null when its escapes are invalid. */
function decodeString(text: string, start: number, end: number, escaped: boolean): string | null {
  if (!escaped) return text.slice(start, end);
  try {
    return JSON.parse(text.slice(start - 1, end + 1)) as string;
  } catch {
    return null;
  }
}

/**
 * Tokenizes just enough JSON to (a) refuse nesting deeper than MAX_JSON_DEPTH before JSON.parse
 * recurses into it, (b) count the keys written in the root object and in the objects inside it,
 * so duplicates (which JSON.parse drops silently) show up as a count mismatch, (c) see the literal
 * text of the numbers in `shape` / `data_offsets` (JSON.parse turns 2.0 into 2 and 2^64 into a
 * float; serde refuses both). Malformed JSON is left for JSON.parse to report.
 */
export function scanHeaderJson(text: string, label: string): ScanResult {
  const len = text.length;
  const kinds = new Uint8Array(MAX_JSON_DEPTH); // 1 object, 2 array, per depth
  let depth = 0;
  let expectKey = false;
  let rootKeys = 0;
  let nestedKeys = 0;
  let rootKeyStart = 0; // body of the current root key, decoded only if needed
  let rootKeyEnd = 0;
  let rootKeyEscaped = false;
  let inMetadata = false;
  let field = 0; // current key of the depth-2 object: 1 shape, 2 data_offsets, 0 other
  let badNumber: BadNumber | null = null;
  let nextBackslash = text.indexOf("\\");
  let i = 0;
  while (i < len) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i + 1;
      if (nextBackslash !== -1 && nextBackslash < start) nextBackslash = text.indexOf("\\", start);
      let end = text.indexOf('"', start);
      const escaped = nextBackslash !== -1 && (end === -1 || nextBackslash < end);
      if (escaped) end = stringEnd(text, start, true);
      if (end === -1) break; // unterminated: JSON.parse reports it
      if (expectKey) {
        expectKey = false;
        if (depth === 1) {
          rootKeys++;
          rootKeyStart = start;
          rootKeyEnd = end;
          rootKeyEscaped = escaped;
          inMetadata = escaped ? decodeString(text, start, end, true) === "__metadata__" : end - start === 12 && text.startsWith("__metadata__", start);
        } else if (depth === 2 && kinds[0] === 1) {
          nestedKeys++;
          if (escaped) {
            const k = decodeString(text, start, end, true);
            field = k === "shape" ? 1 : k === "data_offsets" ? 2 : 0;
          } else {
            const n = end - start;
            field = n === 5 && text.startsWith("shape", start) ? 1 : n === 12 && text.startsWith("data_offsets", start) ? 2 : 0;
          }
        }
      }
      i = end + 1;
      continue;
    }
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (depth >= MAX_JSON_DEPTH) {
        throw new SafetensorsError("InvalidHeaderDeserialization", label, {
          detail: `the header JSON nests deeper than ${MAX_JSON_DEPTH} levels`,
        });
      }
      expectKey = c === 0x7b;
      kinds[depth++] = expectKey ? 1 : 2;
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      if (depth === 0) break; // unbalanced: JSON.parse reports it
      depth--;
      expectKey = false;
      i++;
    } else if (c === 0x2c /* , */) {
      expectKey = depth > 0 && kinds[depth - 1] === 1;
      i++;
    } else if (c === 0x2d /* - */ || isDigit(c)) {
      let j = i + 1;
      while (j < len && isNumberChar(text.charCodeAt(j))) j++;
      if (badNumber === null && depth === 3 && field !== 0 && !inMetadata && kinds[0] === 1 && kinds[1] === 1 && kinds[2] === 2) {
        const n = j - i;
        let ok: boolean;
        if (c === 0x2d)
          ok = n === 2 && text.charCodeAt(i + 1) === 0x30; // "-0" reads as 0
        else if (c === 0x30) ok = n === 1;
        else {
          ok = true;
          for (let k = i + 1; k < j; k++) if (!isDigit(text.charCodeAt(k))) ok = false;
          if (ok && n >= 20) ok = n === 20 && text.slice(i, j) <= "18446744073709551615";
        }
        if (!ok) {
          const tensor = decodeString(text, rootKeyStart, rootKeyEnd, rootKeyEscaped) ?? "";
          badNumber = { tensor, field: field === 1 ? "shape" : "data_offsets", literal: text.slice(i, j) };
        }
      }
      i = j;
    } else i++;
  }
  return { rootKeys, nestedKeys, badNumber };
}

/**
 * Slow path, run only when the key counts say there is a duplicate: the first key written twice
 * in the root object (where = null) or in an object inside it (where = the root key).
 */
export function findDuplicateKey(text: string): { key: string; where: string | null } | null {
  const len = text.length;
  const kinds: number[] = [];
  const keySets: (Set<string> | null)[] = [];
  let expectKey = false;
  let rootKey = "";
  let i = 0;
  while (i < len) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const start = i + 1;
      const end = stringEnd(text, start, true);
      if (end === -1) return null;
      if (expectKey && kinds.length <= 2) {
        const depth = kinds.length;
        const key = decodeString(text, start, end, text.slice(start, end).includes("\\"));
        if (key === null) return null;
        if (depth === 1) rootKey = key;
        const set = keySets[depth - 1];
        if (set) {
          if (set.has(key)) return { key, where: depth === 1 ? null : rootKey };
          set.add(key);
        }
      }
      expectKey = false;
      i = end + 1;
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      kinds.push(c === 0x7b ? 1 : 2);
      keySets.push(c === 0x7b && (kinds.length === 1 || (kinds.length === 2 && kinds[0] === 1)) ? new Set() : null);
      expectKey = c === 0x7b;
    } else if (c === 0x7d || c === 0x5d) {
      kinds.pop();
      keySets.pop();
      expectKey = false;
    } else if (c === 0x2c) {
      expectKey = kinds[kinds.length - 1] === 1;
    }
    i++;
  }
  return null;
}
