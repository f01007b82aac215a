// Output conventions (docs/cli.md "Output streams"): data on stdout, messages on stderr; aligned
// tables on a terminal, tab-separated rows (a header row with --header) when piped, one JSON
// document with --json. Colour (chalk) only on a terminal, never under NO_COLOR, --no-color
// (bin/ sets FORCE_COLOR=0), TERM=dumb or CI.
// chalk itself is imported only when some stream can show colour (loadColour, called by main()):
// piped and scripted runs never load it (start-up, issue 19).
import type { ChalkInstance } from "chalk";
import type { Ctx } from "./context.js";

let chalk: typeof import("chalk") | undefined;

/** Whether a stream of the context may be coloured: a terminal, and the rules above allow it. */
function colourable(ctx: Ctx, stream: "stdout" | "stderr"): boolean {
  const e = ctx.env;
  const allowed = (e["NO_COLOR"] ?? "") === "" && e["FORCE_COLOR"] !== "0" && e["TERM"] !== "dumb" && !e["CI"];
  const tty = stream === "stdout" ? ctx.color && !!ctx.stdout.isTTY : !!ctx.stderr.isTTY;
  return allowed && tty;
}

/** Loads chalk when either stream of the context may be coloured; before paint() is first asked for colour. */
export async function loadColour(ctx: Ctx): Promise<void> {
  if (chalk === undefined && (colourable(ctx, "stdout") || colourable(ctx, "stderr"))) chalk = await import("chalk");
}

/** The styler of an uncoloured stream: every style (chained too) returns its text unchanged, as chalk at level 0 does. */
const plain: ChalkInstance = new Proxy((...text: unknown[]) => text.join(" "), { get: () => plain }) as unknown as ChalkInstance;

/** A chalk for one of the context's streams: colour only where that stream is a terminal and the rules allow it. */
export function paint(ctx: Ctx, stream: "stdout" | "stderr"): ChalkInstance {
  return chalk !== undefined && colourable(ctx, stream) ? new chalk.Chalk({ level: 1 }) : plain;
}

// Control characters (ESC, CR, backspace, C1) and bidirectional overrides, which a file's names and
// metadata may carry to move the cursor, clear or recolour the screen, or reverse what is read.
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/** Text from a file made safe to print: each control character or bidi override as a visible \u{…} escape (tabs and newlines kept). */
export function visible(s: string): string {
  return s.replace(UNSAFE, (ch) => `\\u{${ch.codePointAt(0)!.toString(16)}}`);
}

/** An error as printed on stderr: `lora: error: message`, then the hint on its own line. */
export function errorText(ctx: Ctx, message: string, hint?: string): string {
  const c = paint(ctx, "stderr");
  return `lora: ${c.red.bold("error:")} ${visible(message)}\n${hint ? `  ${c.dim("hint:")} ${visible(hint)}\n` : ""}`;
}

export function writeOut(ctx: Ctx, text: string): void {
  ctx.stdout.write(text.endsWith("\n") ? text : text + "\n");
}

export function note(ctx: Ctx, quiet: boolean, text: string): void {
  if (!quiet) ctx.stderr.write(`lora: ${visible(text)}\n`);
}

export function warn(ctx: Ctx, text: string): void {
  ctx.stderr.write(`lora: ${paint(ctx, "stderr").yellow("warning:")} ${visible(text)}\n`);
}

export function printJson(ctx: Ctx, value: unknown): void {
  writeOut(ctx, JSON.stringify(value, null, 2));
}

/** A command's report: one JSON document with --json, else the command's own renderer (imported only then). */
export async function printReport<R, G extends { json: boolean }>(
  ctx: Ctx,
  g: G,
  report: R,
  renderer: () => Promise<(ctx: Ctx, g: G, report: R) => void>,
): Promise<void> {
  if (g.json) printJson(ctx, report);
  else (await renderer())(ctx, g, report);
}

/** Display width of a string (treats every code point as one column; our tables are ASCII plus a few symbols). */
function width(s: string): number {
  // eslint-disable-next-line no-control-regex
  return [...s.replace(/\x1b\[[0-9;]*m/g, "")].length;
}

/** Aligned columns; numeric-looking columns right-aligned; `emphasis` styles the header row. */
export function formatTable(header: string[], rows: string[][], emphasis: (s: string) => string = (s) => s): string {
  const all = [header, ...rows.map((r) => r.map(visible))];
  const widths = header.map((_, c) => Math.max(...all.map((r) => width(r[c] ?? ""))));
  const numeric = header.map((_, c) => rows.length > 0 && rows.every((r) => /^[-+]?[\d.,e×x%-]*$/i.test(r[c] ?? "")));
  const line = (r: string[]) =>
    r
      .map((cell, c) => {
        const pad = " ".repeat(Math.max(0, widths[c]! - width(cell)));
        return numeric[c] ? pad + cell : cell + pad;
      })
      .join("  ")
      .trimEnd();
  return all.map((r, i) => (i === 0 ? emphasis(line(r)) : line(r))).join("\n");
}

/** Tab-separated rows; `header` (--header) puts the column names first. */
export function formatTsv(rows: string[][], header?: string[]): string {
  return (header ? [header, ...rows] : rows).map((r) => r.map((c) => visible(c.replace(/[\t\n]/g, " "))).join("\t")).join("\n");
}

/** Short human number: 3 significant digits, exponent when tiny or huge. */
/** A byte count for people: 950 B, 16.9 kB, 12.3 MB (powers of 1000). */
export function formatBytes(n: number): string {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

export function fmt(x: number, digits = 4): string {
  if (x === 0) return "0";
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(digits - 1);
  return String(Number(x.toPrecision(digits)));
}

/** The human summary of a write command: stdout, or stderr when stdout carries the file (-o -). */
export function summary(ctx: Ctx, quiet: boolean, output: string, text: string): void {
  if (quiet) return;
  if (output === "-") ctx.stderr.write(text.endsWith("\n") ? text : text + "\n");
  else writeOut(ctx, text);
}

/**
 * A write command's rows and the lines that follow them (summary, notes): together on a terminal;
 * piped, the rows alone on the data stream (so cut/awk work) and the other lines on stderr.
 */
export function rowsThenSummary(ctx: Ctx, output: string, tty: boolean, rows: string, rest: string[]): void {
  if (tty) {
    summary(ctx, false, output, [rows, ...rest].join("\n"));
    return;
  }
  summary(ctx, false, output, rows);
  ctx.stderr.write(rest.join("\n") + "\n");
}
