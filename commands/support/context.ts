// Ctx: everything a command may touch of the outside world (gh's IOStreams). bin/ builds the
// real one; tests build one over in-memory streams.
export interface Ctx {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  env: Record<string, string | undefined>;
  /** Colour allowed on stdout / stderr (TTY, no NO_COLOR/--no-color/CI/TERM=dumb). */
  color: boolean;
  /**
   * A full garbage collection now, where bin/ provides one: a command that handles one large
   * tensor after another calls it between them, so that the buffers it let go of are freed
   * instead of piling up until the engine's own heuristics collect them (peak RSS).
   */
  collectGarbage?: () => Promise<void>;
}

/** Options every command accepts (docs/cli.md "Global options"). */
export interface GlobalOptions {
  backend: "auto" | "cpu" | "cuda" | "js";
  json: boolean;
  quiet: boolean;
  color: boolean;
  seed: number;
  force: boolean;
  threads?: number;
  verbose?: boolean;
  /** A header row on tab-separated output. */
  header?: boolean;
}

/** Spinners and animation only on an interactive stderr, never under CI, --json or --quiet. */
export function interactive(ctx: Ctx, g: Pick<GlobalOptions, "json" | "quiet">): boolean {
  // columns > 0: ora computes line counts from the terminal width and spins forever at width 0.
  return !!ctx.stderr.isTTY && (ctx.stderr.columns ?? 0) > 0 && !g.json && !g.quiet && !ctx.env["CI"] && ctx.env["TERM"] !== "dumb";
}
