// Resolving --backend for a command: a one-line note when auto falls back to the (much slower)
// js backend, and with --verbose every backend auto skipped.
import { resolveBackend } from "../../linalg/backend.js";
import type { LinalgBackend } from "../../linalg/types.js";
import type { Ctx, GlobalOptions } from "./context.js";
import { note } from "./output.js";

export async function backendFor(ctx: Ctx, g: GlobalOptions): Promise<LinalgBackend> {
  const { backend, skipped } = await resolveBackend(g.backend, g.threads !== undefined ? { threads: g.threads } : {});
  if (g.verbose && !g.json) {
    for (const s of skipped) ctx.stderr.write(`lora: backend ${s.name} skipped: ${s.reason}\n`);
    ctx.stderr.write(`lora: using backend ${backend.name} (${backend.detail})\n`);
  } else if (g.backend === "auto" && backend.name === "js") {
    const cpu = skipped.find((s) => s.name === "cpu");
    note(
      ctx,
      g.quiet,
      `note: using the js backend (pure TypeScript, much slower): the cpu backend is unavailable${cpu ? ` (${cpu.reason})` : ""}; see 'lora backends'`,
    );
  }
  return backend;
}
