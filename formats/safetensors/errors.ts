// Errors of the safetensors reader and writer: one variant per check of the reference reader
// (huggingface/safetensors tensor.rs `SafeTensorError`), plus DuplicateKey (the spec forbids
// duplicate keys; serde keeps the last one silently) and StreamTooLarge (stdin over the buffer
// limit). All are InvalidInputError (exit 3). `code` is the stable --json string.
import { InvalidInputError } from "../../common/errors.js";

export { UnsupportedDTypeError } from "../../common/errors.js";

/** The reference variant names, in the order the reader checks them. */
export const SAFETENSORS_VARIANTS = [
  "HeaderTooSmall",
  "HeaderTooLarge",
  "InvalidHeaderLength",
  "InvalidHeader",
  "InvalidHeaderDeserialization",
  "DuplicateKey",
  "InvalidOffset",
  "ValidationOverflow",
  "MisalignedSlice",
  "TensorInvalidInfo",
  "MetadataIncompleteBuffer",
  "TensorNotFound",
  "StreamTooLarge",
] as const;

export type SafetensorsVariant = (typeof SAFETENSORS_VARIANTS)[number];

/** First line of each message, after "<file>: " (wording from the Rust `Display` impl). */
const q = (t: string | undefined): string => (t === undefined ? "" : ` ${JSON.stringify(t)}`);
const SUMMARY: Record<SafetensorsVariant, (tensor: string | undefined) => string> = {
  HeaderTooSmall: () => "header too small",
  HeaderTooLarge: () => "header too large",
  InvalidHeaderLength: () => "invalid header length",
  InvalidHeader: () => "invalid UTF-8 in header",
  InvalidHeaderDeserialization: (t) => (t === undefined ? "invalid JSON in header" : `invalid header entry for tensor${q(t)}`),
  DuplicateKey: () => "duplicate key in header",
  InvalidOffset: (t) => `invalid offset for tensor${q(t)}`,
  ValidationOverflow: (t) => `overflow computing buffer size from shape and/or element type of tensor${q(t)}`,
  MisalignedSlice: (t) => `tensor${q(t)} does not end on a byte boundary`,
  TensorInvalidInfo: (t) => `invalid shape, data type, or offset for tensor${q(t)}`,
  MetadataIncompleteBuffer: (t) => (t === undefined ? "incomplete metadata, file not fully covered" : `incomplete data for tensor${q(t)}`),
  TensorNotFound: (t) => `tensor${q(t)} not found`,
  StreamTooLarge: () => "input stream too large",
};

/** `InvalidOffset` → `SAFETENSORS_INVALID_OFFSET`. */
export function safetensorsCode(variant: SafetensorsVariant): string {
  return "SAFETENSORS_" + variant.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();
}

export interface SafetensorsErrorOptions {
  /** The tensor concerned, when there is one; named on the first line of the message. */
  tensor?: string;
  /** Second line: what exactly was found. */
  detail?: string;
  /** Printed last by bin/ ("hint: …"). */
  hint?: string;
  cause?: unknown;
}

export class SafetensorsError extends InvalidInputError {
  override readonly code: string;
  /** The reference (Rust) variant name, e.g. "InvalidOffset". */
  readonly variant: SafetensorsVariant;
  /** The file label the error is about (a path, or "<stdin>"). */
  readonly file: string;
  readonly tensor?: string;
  readonly detail?: string;

  constructor(variant: SafetensorsVariant, file: string, options: SafetensorsErrorOptions = {}) {
    const message = `${file}: ${SUMMARY[variant](options.tensor)}` + (options.detail ? `\n  ${options.detail}` : "");
    super(message, { cause: options.cause, hint: options.hint });
    this.code = safetensorsCode(variant);
    this.variant = variant;
    this.file = file;
    if (options.tensor !== undefined) this.tensor = options.tensor;
    if (options.detail !== undefined) this.detail = options.detail;
  }
}

export function isSafetensorsError(e: unknown, variant?: SafetensorsVariant): e is SafetensorsError {
  return e instanceof SafetensorsError && (variant === undefined || e.variant === variant);
}
