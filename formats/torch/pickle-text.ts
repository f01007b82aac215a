// The argument decoders of pickle's text opcodes (protocol 0; pickletools: decimalnl_short,
// decimalnl_long, floatnl, stringnl, unicodestringnl). Each returns null for text Python's own
// unpickler would refuse, so the caller reports it.
import { PyFloat } from "./values.js";

const latin1 = new TextDecoder("latin1");

/** INT: "01"/"00" are True/False (pickletools `I`), else a decimal integer. */
export function parseIntText(s: string): number | bigint | boolean | null {
  if (s === "01") return true;
  if (s === "00") return false;
  return parseDecimal(s);
}

/** LONG: a decimal integer with an optional trailing "L" (Python 2's repr). */
export function parseLongText(s: string): number | bigint | null {
  return parseDecimal(s.endsWith("L") ? s.slice(0, -1) : s);
}

function parseDecimal(s: string): number | bigint | null {
  if (!/^[+-]?[0-9]+$/.test(s)) return null;
  const v = BigInt(s);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** FLOAT: repr of a float ("1.5", "inf", "nan", "1e-05"). */
export function parseFloatText(s: string): PyFloat | null {
  const t = s.trim().toLowerCase();
  if (/^[+-]?inf(inity)?$/.test(t)) return new PyFloat(t.startsWith("-") ? -Infinity : Infinity);
  if (/^[+-]?nan$/.test(t)) return new PyFloat(NaN);
  if (!/^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?$/.test(t)) return null;
  return new PyFloat(Number(t));
}

/**
 * STRING: the repr of a Python 2 str, quoted with ' or " (pickletools `stringnl`), with the escapes
 * repr writes (\\ \' \" \n \r \t \xhh and octal). Bytes; the unpickler decodes them as torch.load does.
 */
export function parseStringRepr(s: string): Uint8Array | null {
  if (s.length < 2 || (s[0] !== "'" && s[0] !== '"') || s[s.length - 1] !== s[0]) return null;
  const body = s.slice(1, -1);
  const out: number[] = [];
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    if (c > 0xff) return null;
    if (body[i] !== "\\") {
      out.push(c);
      continue;
    }
    const e = body[++i];
    const simple: Record<string, number> = { "\\": 0x5c, "'": 0x27, '"': 0x22, n: 0x0a, r: 0x0d, t: 0x09, a: 0x07, b: 0x08, f: 0x0c, v: 0x0b };
    if (e !== undefined && simple[e] !== undefined) out.push(simple[e]!);
    else if (e === "x" && /^[0-9a-fA-F]{2}$/.test(body.slice(i + 1, i + 3))) {
      out.push(Number.parseInt(body.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (e !== undefined && /[0-7]/.test(e)) {
      const m = /^[0-7]{1,3}/.exec(body.slice(i))![0];
      out.push(Number.parseInt(m, 8) & 0xff);
      i += m.length - 1;
    } else return null;
  }
  return Uint8Array.from(out);
}

/** UNICODE: raw-unicode-escape (pickletools `unicodestringnl`): bytes are Latin-1, \uXXXX and \UXXXXXXXX are code points. */
export function parseRawUnicodeEscape(bytes: Uint8Array): string | null {
  const s = latin1.decode(bytes);
  let out = "";
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "\\" && (s[i + 1] === "u" || s[i + 1] === "U")) {
      const n = s[i + 1] === "u" ? 4 : 8;
      const hex = s.slice(i + 2, i + 2 + n);
      if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) return null;
      const cp = Number.parseInt(hex, 16);
      if (cp > 0x10ffff) return null;
      out += String.fromCodePoint(cp);
      i += 1 + n;
    } else out += s[i];
  }
  return out;
}
