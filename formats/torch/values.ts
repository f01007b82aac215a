// The values an unpickled torch checkpoint is made of (pickletools: the Python objects the opcodes
// build). Only plain data: no Python object is ever constructed, and a global is a name that the
// policy (globals.ts) has admitted, never a callable.
import { WALK } from "./limits.js";

/** A Python tuple (immutable; TUPLE*, EMPTY_TUPLE). */
export class PyTuple {
  constructor(readonly items: readonly unknown[]) {}
}

/** A Python list (LIST, EMPTY_LIST, APPEND(S)); also sets and frozensets, whose order does not matter here. */
export class PyList {
  constructor(
    readonly items: unknown[] = [],
    readonly kind: "list" | "set" | "frozenset" = "list",
  ) {}
}

/** A Python float (BINFLOAT, FLOAT), kept apart from ints so that a float size or stride is refused. */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A Python bytes/bytearray object (BINBYTES*, SHORT_BINBYTES, BYTEARRAY8, _codecs.encode). */
export class PyBytes {
  constructor(readonly data: Uint8Array) {}
}

/** A global admitted by the policy: the name only, resolved to behaviour by the policy itself. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A Python dict or OrderedDict, in insertion order, keyed by value (keyOf). */
export class PyDict {
  readonly keys: unknown[] = [];
  readonly values: unknown[] = [];
  private readonly index = new Map<string, number>();
  /** Attributes set by BUILD (an OrderedDict state dict carries `_metadata`); not entries. */
  readonly attributes = new Map<string, unknown>();
  constructor(readonly kind: "dict" | "OrderedDict" = "dict") {}

  /** dict.__setitem__: a repeated key keeps its first position and takes the new value (Python's rule). */
  set(key: unknown, value: unknown): void {
    const k = keyOf(key);
    if (k === null) throw new TypeError(`unhashable dict key (${describe(key)})`);
    const at = this.index.get(k);
    if (at !== undefined) {
      this.values[at] = value;
      return;
    }
    this.index.set(k, this.keys.length);
    this.keys.push(key);
    this.values.push(value);
  }

  get size(): number {
    return this.keys.length;
  }
}

/**
 * A canonical string for a hashable key (str, int, bool, None, float, bytes, tuples of them), equal
 * where Python's == is (1 == True == 1.0); null when the value is unhashable (list, dict, …).
 */
export function keyOf(v: unknown, depth = 0): string | null {
  if (typeof v === "string") return "s" + v;
  if (typeof v === "number") return "n" + v;
  if (typeof v === "bigint") return "n" + v.toString();
  if (typeof v === "boolean") return v ? "n1" : "n0";
  if (v === null) return "N";
  if (v instanceof PyFloat) return Number.isInteger(v.value) ? "n" + v.value : "f" + v.value;
  if (v instanceof PyBytes) return "b" + Buffer.from(v.data).toString("hex");
  if (v instanceof PyGlobal) return "g" + v.qualified;
  if (v instanceof PyTuple && depth < WALK.maxNesting) {
    const parts: string[] = [];
    for (const x of v.items) {
      const k = keyOf(x, depth + 1);
      if (k === null) return null;
      parts.push(JSON.stringify(k));
    }
    return "t" + parts.join(",");
  }
  return null;
}

/** A short description of a value for messages. */
export function describe(v: unknown): string {
  if (v === null) return "None";
  if (typeof v === "string") return v.length > 60 ? `str of ${v.length} characters` : JSON.stringify(v);
  if (typeof v === "number" || typeof v === "bigint") return `int ${v}`;
  if (typeof v === "boolean") return v ? "True" : "False";
  if (v instanceof PyFloat) return `float ${v.value}`;
  if (v instanceof PyTuple) return `tuple of ${v.items.length}`;
  if (v instanceof PyList) return `${v.kind} of ${v.items.length}`;
  if (v instanceof PyDict) return `${v.kind} of ${v.size}`;
  if (v instanceof PyBytes) return `bytes of ${v.data.length}`;
  if (v instanceof PyGlobal) return v.qualified;
  return (v as { describe?: () => string })?.describe?.() ?? "object";
}

/** A Python int as a JS number when it is a safe integer; null otherwise (floats, bools, bigints beyond 2^53). */
export function safeInt(v: unknown): number | null {
  if (typeof v === "number" && Number.isSafeInteger(v)) return v;
  if (typeof v === "bigint" && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  return null;
}
