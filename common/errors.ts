// The one error hierarchy of the tool. Every class carries its exit code (docs/cli.md "Exit codes");
// only bin/ maps them to the process. `code` is a stable machine-readable string for --json.

export class LoraError extends Error {
  readonly exitCode: number = 1;
  readonly code: string = "RUNTIME_ERROR";
  /** Optional hint printed on its own line after the message. */
  hint?: string;
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    if (options?.hint) this.hint = options.hint;
  }
}

/** The base of an error class with its own exit code and --json code. */
function errorKind(exitCode: number, code: string) {
  return class extends LoraError {
    override readonly exitCode: number = exitCode;
    override readonly code: string = code;
  };
}

/** Exit 1: the operation failed at run time (I/O error, disk full, numerical failure). */
export class RuntimeFailure extends LoraError {}

/** Exit 2: unknown command or flag, missing or contradictory options. */
export class UsageError extends errorKind(2, "USAGE") {}

/** Exit 3: malformed file, not a LoRA adapter, inconsistent shapes, NaN/Inf, DoRA where factors change … */
export class InvalidInputError extends errorKind(3, "INVALID_INPUT") {}

/** Exit 4: the backend asked for explicitly is not available. */
export class BackendUnavailableError extends errorKind(4, "BACKEND_UNAVAILABLE") {}

/** Exit 130: interrupted by SIGINT/SIGTERM. */
export class InterruptedError extends errorKind(130, "INTERRUPTED") {}

/** A tensor whose dtype this tool cannot compute with (it can still be carried byte for byte). */
export class UnsupportedDTypeError extends InvalidInputError {
  override readonly code: string = "UNSUPPORTED_DTYPE";
  readonly dtype: string;
  readonly file?: string;
  readonly tensor?: string;
  constructor(dtype: string, supported: readonly string[], where?: { file: string; tensor: string }, action = "decoded to numbers") {
    const head = where ? `${where.file}: tensor ${JSON.stringify(where.tensor)} has dtype ${dtype}` : `dtype ${dtype}`;
    super(`${head}, which cannot be ${action}\n  supported: ${supported.join(", ")}`);
    this.dtype = dtype;
    if (where) {
      this.file = where.file;
      this.tensor = where.tensor;
    }
  }
}
