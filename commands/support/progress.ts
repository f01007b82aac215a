// Progress on stderr: an ora spinner only when stderr is interactive (see context.ts); otherwise
// nothing (or one line per step with --verbose). ora is imported lazily: start-up time matters.
import { interactive, type Ctx, type GlobalOptions } from "./context.js";

/** what = "bytes": done and total are byte counts, shown with the rate (bytes/s). */
export type Tick = (done: number, total: number, what?: string) => void;

function bytes(n: number): string {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

export async function withProgress<T>(ctx: Ctx, g: GlobalOptions, label: string, fn: (tick: Tick) => Promise<T>): Promise<T> {
  if (!interactive(ctx, g)) {
    const tick: Tick = g.verbose && !g.json ? (d, n, w) => ctx.stderr.write(`lora: ${label} ${d}/${n}${w ? ` ${w}` : ""}\n`) : () => {};
    return fn(tick);
  }
  const { default: ora } = await import("ora");
  const spinner = ora({ text: label, stream: ctx.stderr as NodeJS.WriteStream, color: "cyan" }).start();
  const t0 = Date.now();
  const tick: Tick = (d, n, w) => {
    const el = (Date.now() - t0) / 1000;
    const eta = d > 0 ? (el / d) * (n - d) : 0;
    const count = w === "bytes" ? `${bytes(d)}/${bytes(n)}${el > 0 ? `  ${bytes(d / el)}/s` : ""}` : `${d}/${n}${w ? ` ${w}` : ""}`;
    spinner.text = `${label} ${count}${d > 0 && d < n ? `  ETA ${eta.toFixed(1)}s` : ""}`;
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
