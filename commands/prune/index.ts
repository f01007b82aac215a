// Placeholder: replaced by the prune implementation.
import { Command } from "commander";
import type { Ctx } from "../support/context.js";
import { withGlobalOptions } from "../support/options.js";
import { UsageError } from "../../formats/errors.js";

export function pruneCommand(_ctx: Ctx): Command {
  return withGlobalOptions(new Command("prune"))
    .description("prune (not implemented yet)")
    .allowUnknownOption(true)
    .argument("[args...]")
    .action(() => { throw new UsageError("lora prune is not implemented yet"); });
}
