// Progress on stderr: an ora spinner only when stderr is interactive (see context.ts); otherwise
// nothing (or one line per step with --verbose). ora is imported lazily: start-up time matters.
import { bytesRead } from "../../common/io-meter.js";
import { interactive, type Ctx, type GlobalOptions } from "./context.js";
import { formatBytes as bytes } from "./output.js";

/** what = "bytes": done and total are byte counts, shown with the rate (bytes/s); otherwise the input read rate is shown. */
export type Tick = (done: number, total: number, what?: string) => void;

/**
 * The progress line: done/total (bytes with their rate when `what` is "bytes", else the input read
 * rate when anything was read), and the ETA from the rate so far.
 */
export function progressText(label: string, d: number, n: number, what: string | undefined, elapsed: number, read: number): string {
  const rate = (x: number) => (elapsed > 0 ? `  ${bytes(x / elapsed)}/s` : "");
  const count =
    what === "bytes" ? `${bytes(d)}/${bytes(n)}${rate(d)}` : `${d}/${n}${what ? ` ${what}` : ""}${read > 0 ? `  ${bytes(read)} read${rate(read)}` : ""}`;
  const eta = d > 0 ? (elapsed / d) * (n - d) : 0;
  return `${label} ${count}${d > 0 && d < n ? `  ETA ${eta.toFixed(1)}s` : ""}`;
}

export async function withProgress<T>(ctx: Ctx, g: GlobalOptions, label: string, fn: (tick: Tick) => Promise<T>): Promise<T> {
  if (!interactive(ctx, g)) {
    const tick: Tick = g.verbose && !g.json ? (d, n, w) => ctx.stderr.write(`lora: ${label} ${d}/${n}${w ? ` ${w}` : ""}\n`) : () => {};
    return fn(tick);
  }
  const { default: ora } = await import("ora");
  const spinner = ora({ text: label, stream: ctx.stderr as NodeJS.WriteStream, color: "cyan" }).start();
  const t0 = Date.now(),
    read0 = bytesRead();
  const tick: Tick = (d, n, w) => {
    spinner.text = progressText(label, d, n, w, (Date.now() - t0) / 1000, bytesRead() - read0);
  };
  try {
    const r = await fn(tick);
    spinner.stop();
    return r;
  } catch (e) {
    spinner.stop();
    throw e;
  }
}
