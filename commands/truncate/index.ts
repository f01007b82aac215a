// Placeholder: replaced by the truncate implementation.
import { Command } from "commander";
import type { Ctx } from "../support/context.js";
import { withGlobalOptions } from "../support/options.js";
import { UsageError } from "../../formats/errors.js";

export function truncateCommand(_ctx: Ctx): Command {
  return withGlobalOptions(new Command("truncate"))
    .description("truncate (not implemented yet)")
    .allowUnknownOption(true)
    .argument("[args...]")
    .action(() => { throw new UsageError("lora truncate is not implemented yet"); });
}
