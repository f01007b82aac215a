// lora lint: every input linted (surgery/lint/lint.ts); a file that is not a valid adapter is a
// finding too. In a catalog, an input that cannot be opened at all (a missing path, an unreadable
// file) is skipped and reported, as catalog inspect does; the others are linted.
import { LoraError } from "../../common/errors.js";
import type { CatalogFailure } from "../../surgery/catalog.js";
import { lintAdapter, type Finding, type LintReport } from "../../surgery/lint/lint.js";

export interface LintRun {
  adapters: LintReport[];
  /** Every finding of every input, with its input's path. */
  findings: (Finding & { path: string })[];
  errors: number;
  warnings: number;
  /** Inputs that could not be opened (several inputs only; a single input's failure is thrown). */
  failed: CatalogFailure[];
}

export async function runLint(inputs: string[], io: { stdin?: NodeJS.ReadableStream; onAdapter?: (i: number, n: number) => void }): Promise<LintRun> {
  const adapters: LintReport[] = [];
  const failed: CatalogFailure[] = [];
  for (const [i, input] of inputs.entries()) {
    try {
      adapters.push(await lintAdapter(input, io.stdin ? { stdin: io.stdin } : {}));
    } catch (e) {
      if (!(e instanceof LoraError) || inputs.length === 1) throw e;
      failed.push({ path: input, exit: e.exitCode, error: e.message });
    }
    io.onAdapter?.(i + 1, inputs.length);
  }
  const findings = adapters.flatMap((a) => a.findings.map((f) => ({ ...f, path: a.path })));
  return {
    adapters,
    findings,
    errors: findings.filter((f) => f.severity === "error").length,
    warnings: findings.filter((f) => f.severity === "warning").length,
    failed,
  };
}
