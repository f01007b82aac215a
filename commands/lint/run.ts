// lora lint: every input linted (surgery/lint/lint.ts); a file that cannot be read at all is a finding too.
import { lintAdapter, type Finding, type LintReport } from "../../surgery/lint/lint.js";

export interface LintRun {
  adapters: LintReport[];
  /** Every finding of every input, with its input's path. */
  findings: (Finding & { path: string })[];
  errors: number;
  warnings: number;
}

export async function runLint(inputs: string[], io: { stdin?: NodeJS.ReadableStream; onAdapter?: (i: number, n: number) => void }): Promise<LintRun> {
  const adapters: LintReport[] = [];
  for (const [i, input] of inputs.entries()) {
    adapters.push(await lintAdapter(input, io.stdin ? { stdin: io.stdin } : {}));
    io.onAdapter?.(i + 1, inputs.length);
  }
  const findings = adapters.flatMap((a) => a.findings.map((f) => ({ ...f, path: a.path })));
  return {
    adapters,
    findings,
    errors: findings.filter((f) => f.severity === "error").length,
    warnings: findings.filter((f) => f.severity === "warning").length,
  };
}
