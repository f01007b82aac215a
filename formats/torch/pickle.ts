// A restricted unpickler (the opcodes of protocols 0–5, Python's pickletools documentation). It
// builds plain data only (values.ts); every global, call, BUILD and persistent id goes to the
// policy, which admits a short list of names and refuses the rest before anything could run.
// Nothing here executes code: a REDUCE is a call of the policy with data, never of Python.
import { InvalidInputError, LoraError } from "../../common/errors.js";
import { PICKLE } from "./limits.js";
import { parseFloatText, parseIntText, parseLongText, parseRawUnicodeEscape, parseStringRepr } from "./pickle-text.js";
import { describe, keyOf, PyBytes, PyDict, PyFloat, PyList, PyTuple } from "./values.js";

/** What the unpickler asks of its caller: the only way a pickle reaches anything but plain data. */
export interface PicklePolicy {
  /** GLOBAL, STACK_GLOBAL, INST: the value of an admitted global; throws (exit 3, naming it) for any other. */
  global(module: string, name: string): unknown;
  /** REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ: an admitted global applied to data. */
  call(fn: unknown, args: PyTuple, opcode: string): unknown;
  /** BUILD: `state` set on `obj` (returns the object that replaces it on the stack). */
  build(obj: unknown, state: unknown): unknown;
  /** PERSID, BINPERSID (torch: the storage tuples). */
  persistentLoad(pid: unknown): unknown;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Unpickle one pickle starting at `start`; returns the value and the offset after its STOP. */
export function unpickle(data: Uint8Array, start: number, policy: PicklePolicy, where: string): { value: unknown; end: number } {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let p = start;
  let opAt = start;
  const fail = (msg: string): never => {
    throw new InvalidInputError(`${where}: ${msg} (pickle opcode at byte ${opAt})`, { hint: "the checkpoint is corrupt or not written by torch.save" });
  };
  const need = (n: number) => {
    if (n < 0 || p + n > data.length) fail(`the pickle ends inside an opcode argument (${n} bytes wanted, ${data.length - p} left)`);
  };
  const bytes = (n: number): Uint8Array => {
    if (n > PICKLE.maxStringBytes) fail(`a string of ${n} bytes, more than the ${PICKLE.maxStringBytes} accepted`);
    need(n);
    p += n;
    return data.subarray(p - n, p);
  };
  const u8 = (): number => {
    need(1);
    return data[p++]!;
  };
  const u16 = (): number => {
    need(2);
    p += 2;
    return view.getUint16(p - 2, true);
  };
  const u32 = (): number => {
    need(4);
    p += 4;
    return view.getUint32(p - 4, true);
  };
  const u64 = (): number => {
    need(8);
    const v = view.getBigUint64(p, true);
    p += 8;
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? fail(`a length of ${v} bytes`) : Number(v);
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, p);
    if (end < 0 || end - p > PICKLE.maxStringBytes) fail("a text argument without its newline");
    const s = Buffer.from(data.subarray(p, end)).toString("latin1");
    p = end + 1;
    return s;
  };
  const text = (b: Uint8Array): string => {
    try {
      return utf8.decode(b);
    } catch {
      return fail("a string that is not valid UTF-8");
    }
  };
  const push = (v: unknown) => {
    if (stack.length >= PICKLE.maxStackItems) fail(`more than ${PICKLE.maxStackItems} values on the stack`);
    stack.push(v);
  };
  const floor = () => (marks.length ? marks[marks.length - 1]! : 0);
  const pop = (): unknown => (stack.length <= floor() ? fail("stack underflow") : stack.pop());
  const top = (): unknown => (stack.length <= floor() ? fail("stack underflow") : stack[stack.length - 1]);
  const popMark = (): unknown[] => {
    if (!marks.length) fail("no MARK to pop to");
    return stack.splice(marks.pop()!);
  };
  const memoPut = (k: number) => {
    if (!memo.has(k) && memo.size >= PICKLE.maxMemoEntries) fail(`more than ${PICKLE.maxMemoEntries} memo entries`);
    memo.set(k, top());
  };
  const memoGet = (k: number) => (memo.has(k) ? push(memo.get(k)) : fail(`memo entry ${k} is read before it is written`));
  const setItem = (d: unknown, k: unknown, v: unknown) => {
    if (!(d instanceof PyDict)) fail(`SETITEM(S) on ${describe(d)}, not a dict`);
    if (keyOf(k) === null) fail(`an unhashable dict key (${describe(k)})`);
    (d as PyDict).set(k, v);
  };
  const list = (v: unknown, kind: PyList["kind"], op: string): PyList => (v instanceof PyList && v.kind === kind ? v : fail(`${op} on ${describe(v)}`));
  /** APPENDS, ADDITEMS: the items above the mark added to the list or set below it. */
  const extend = (kind: PyList["kind"], op: string) => {
    const items = popMark();
    const l = list(top(), kind, op);
    for (const v of items) l.items.push(v);
  };
  /** DICT, SETITEMS: the key, value pairs above the mark set on `target()` (evaluated after they are counted), which is returned. */
  const setPairs = (op: string, target: () => unknown): unknown => {
    const items = popMark();
    if (items.length % 2) fail(`${op} with an odd number of items`);
    const d = target();
    for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
    return d;
  };
  const stringArg = (v: unknown, what: string): string => (typeof v === "string" ? v : fail(`${what} is ${describe(v)}, not a str`));
  const long = (n: number): number | bigint => {
    if (n > PICKLE.maxLongBytes) fail(`an integer of ${n} bytes`);
    const b = bytes(n);
    if (n === 0) return 0;
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n); // two's complement, little-endian (pickletools long1)
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const call = (fn: unknown, args: unknown, op: string) =>
    push(policy.call(fn, args instanceof PyTuple ? args : fail(`${op} arguments are ${describe(args)}, not a tuple`), op));

  try {
    for (;;) {
      opAt = p;
      if (p >= data.length) fail("the pickle ends without STOP");
      const op = String.fromCharCode(data[p++]!);
      switch (op) {
        case "\x80": // PROTO
          if (u8() > 5) fail(`pickle protocol ${data[p - 1]} (this reader knows 0–5)`);
          break;
        case "\x95": // FRAME: a length prefix for buffering only (pickletools, protocol 4)
          if (u64() > data.length - p) fail("a frame longer than the rest of the pickle");
          break;
        case ".": // STOP
          return { value: pop(), end: p };
        case "(":
          if (marks.length >= PICKLE.maxMarkDepth) fail(`MARKs nested deeper than ${PICKLE.maxMarkDepth}`);
          marks.push(stack.length);
          break;
        case "0": // POP: Python pops the mark itself when the stack above it is empty
          if (stack.length > floor()) stack.pop();
          else popMark();
          break;
        case "1":
          popMark();
          break;
        case "2":
          push(top());
          break;
        // ints, floats, None, bools
        case "N":
          push(null);
          break;
        case "\x88":
          push(true);
          break;
        case "\x89":
          push(false);
          break;
        case "J":
          need(4);
          push(view.getInt32(p, true));
          p += 4;
          break;
        case "K":
          push(u8());
          break;
        case "M":
          push(u16());
          break;
        case "\x8a":
          push(long(u8()));
          break;
        case "\x8b": {
          const n = u32();
          if (n > 0x7fffffff) fail("a negative LONG4 length");
          push(long(n));
          break;
        }
        case "I": {
          const v = parseIntText(line());
          push(v ?? fail("a malformed INT"));
          break;
        }
        case "L": {
          const v = parseLongText(line());
          push(v ?? fail("a malformed LONG"));
          break;
        }
        case "F":
          push(parseFloatText(line()) ?? fail("a malformed FLOAT"));
          break;
        case "G":
          need(8);
          push(new PyFloat(view.getFloat64(p, false))); // big-endian (pickletools float8)
          p += 8;
          break;
        // strings and bytes
        case "X":
          push(text(bytes(u32())));
          break;
        case "\x8c":
          push(text(bytes(u8())));
          break;
        case "\x8d":
          push(text(bytes(u64())));
          break;
        case "V":
          push(parseRawUnicodeEscape(Buffer.from(line(), "latin1")) ?? fail("a malformed UNICODE"));
          break;
        case "S": {
          const b = parseStringRepr(line());
          push(text(b ?? fail("a malformed STRING")));
          break;
        }
        case "T": {
          need(4);
          const n = view.getInt32(p, true);
          p += 4;
          push(text(bytes(n < 0 ? fail("a negative BINSTRING length") : n)));
          break;
        }
        case "U":
          push(text(bytes(u8())));
          break;
        case "B":
          push(new PyBytes(bytes(u32()).slice()));
          break;
        case "C":
          push(new PyBytes(bytes(u8()).slice()));
          break;
        case "\x8e":
        case "\x96":
          push(new PyBytes(bytes(u64()).slice()));
          break;
        case "\x97":
        case "\x98":
          fail("out-of-band buffers (pickle protocol 5 NEXT_BUFFER/READONLY_BUFFER) are not supported");
          break;
        // containers
        case ")":
          push(new PyTuple([]));
          break;
        case "t":
          push(new PyTuple(popMark()));
          break;
        case "\x85":
          push(new PyTuple([pop()]));
          break;
        case "\x86": {
          const b = pop();
          push(new PyTuple([pop(), b]));
          break;
        }
        case "\x87": {
          const c = pop();
          const b = pop();
          push(new PyTuple([pop(), b, c]));
          break;
        }
        case "]":
          push(new PyList());
          break;
        case "l":
          push(new PyList(popMark()));
          break;
        case "a": {
          const v = pop();
          list(top(), "list", "APPEND").items.push(v);
          break;
        }
        case "e":
          extend("list", "APPENDS");
          break;
        case "}":
          push(new PyDict());
          break;
        case "d":
          push(setPairs("DICT", () => new PyDict()));
          break;
        case "s": {
          const v = pop();
          const k = pop();
          setItem(top(), k, v);
          break;
        }
        case "u":
          setPairs("SETITEMS", top);
          break;
        case "\x8f":
          push(new PyList([], "set"));
          break;
        case "\x90":
          extend("set", "ADDITEMS");
          break;
        case "\x91":
          push(new PyList(popMark(), "frozenset"));
          break;
        // memo: PUT and GET take the index as a text line, BINPUT and BINGET as a byte, LONG_BINPUT and LONG_BINGET as a u32
        case "p":
        case "g": {
          const k = parseIntText(line());
          if (op === "p") memoPut(typeof k === "number" && k >= 0 ? k : fail("a malformed PUT index"));
          else memoGet(typeof k === "number" ? k : fail("a malformed GET index"));
          break;
        }
        case "q":
        case "h":
          (op === "q" ? memoPut : memoGet)(u8());
          break;
        case "r":
        case "j":
          (op === "r" ? memoPut : memoGet)(u32());
          break;
        case "\x94": // MEMOIZE
          memoPut(memo.size);
          break;
        // globals, calls and objects: all through the policy
        case "c": {
          const module = line();
          push(policy.global(module, line()));
          break;
        }
        case "\x93": {
          const name = stringArg(pop(), "STACK_GLOBAL name");
          push(policy.global(stringArg(pop(), "STACK_GLOBAL module"), name));
          break;
        }
        case "i": {
          const module = line();
          const cls = policy.global(module, line());
          push(policy.call(cls, new PyTuple(popMark()), "INST"));
          break;
        }
        case "o": {
          const items = popMark();
          if (!items.length) fail("OBJ without a class");
          push(policy.call(items[0], new PyTuple(items.slice(1)), "OBJ"));
          break;
        }
        case "R": {
          const args = pop();
          call(pop(), args, "REDUCE");
          break;
        }
        case "\x81": {
          const args = pop();
          call(pop(), args, "NEWOBJ");
          break;
        }
        case "\x92": {
          const kwargs = pop();
          const args = pop();
          if (!(kwargs instanceof PyDict) || kwargs.size) fail("NEWOBJ_EX with keyword arguments");
          call(pop(), args, "NEWOBJ_EX");
          break;
        }
        case "b": {
          const state = pop();
          const obj = pop();
          push(policy.build(obj, state));
          break;
        }
        case "P":
          push(policy.persistentLoad(line()));
          break;
        case "Q":
          push(policy.persistentLoad(pop()));
          break;
        case "\x82":
        case "\x83":
        case "\x84":
          fail("extension-registry opcodes (EXT1/EXT2/EXT4) name globals indirectly and are refused");
          break;
        default:
          fail(`unknown opcode 0x${op.charCodeAt(0).toString(16).padStart(2, "0")}`);
      }
    }
  } catch (e) {
    if (e instanceof LoraError) throw e;
    if (e instanceof RangeError) fail(`out of range: ${e.message}`);
    throw e;
  }
}
