// Resolving --backend for a command, with a note on stderr when auto skipped something in --verbose.
import { resolveBackend } from "../../linalg/backend.js";
import type { LinalgBackend } from "../../linalg/types.js";
import type { Ctx, GlobalOptions } from "./context.js";

export async function backendFor(ctx: Ctx, g: GlobalOptions): Promise<LinalgBackend> {
  const { backend, skipped } = await resolveBackend(g.backend, g.threads !== undefined ? { threads: g.threads } : {});
  if (g.verbose && !g.json) {
    for (const s of skipped) ctx.stderr.write(`lora: backend ${s.name} skipped: ${s.reason}\n`);
    ctx.stderr.write(`lora: using backend ${backend.name} (${backend.detail})\n`);
  }
  return backend;
}
