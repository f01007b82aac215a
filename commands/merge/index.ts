// Placeholder: replaced by the merge implementation.
import { Command } from "commander";
import type { Ctx } from "../support/context.js";
import { withGlobalOptions } from "../support/options.js";
import { UsageError } from "../../formats/errors.js";

export function mergeCommand(_ctx: Ctx): Command {
  return withGlobalOptions(new Command("merge"))
    .description("merge (not implemented yet)")
    .allowUnknownOption(true)
    .argument("[args...]")
    .action(() => { throw new UsageError("lora merge is not implemented yet"); });
}
