import { Command } from "commander";
import { listBackends } from "../../linalg/backend.js";
import type { Ctx } from "../support/context.js";
import { globals, withGlobalOptions } from "../support/options.js";
import { formatTable, formatTsv, paint, printJson, writeOut } from "../support/output.js";

export function backendsCommand(ctx: Ctx): Command {
  return withGlobalOptions(new Command("backends"))
    .description("list the linear-algebra backends, whether each is available, and why not")
    .addHelpText("after", "\nExamples:\n  lora backends\n  lora backends --json")
    .action(async (opts: Record<string, unknown>) => {
      const g = globals(opts);
      const list = await listBackends();
      if (g.json) {
        printJson(ctx, { backends: list });
        return;
      }
      const rows = list.map((b) => [b.name, b.available ? "yes" : "no", b.available ? b.detail : (b.reason ?? "")]);
      const header = ["backend", "available", "detail / reason"];
      writeOut(
        ctx,
        ctx.stdout.isTTY
          ? formatTable(header, rows, paint(ctx, "stdout").bold)
          : formatTsv(rows, g.header ? ["backend", "available", "detail_or_reason"] : undefined),
      );
    });
}
