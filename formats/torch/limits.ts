// Named safety limits of the PyTorch checkpoint reader (docs/HARDENING.md): every bound a hostile
// .bin/.pt file could otherwise push without limit (memory, time, stack) is a constant here,
// grouped by the part of the reader it bounds.
import { constants as bufferConstants } from "node:buffer";

/** The unpickler (pickle.ts). */
export const PICKLE = {
  /** Largest data.pkl (or legacy pickle section) read, in bytes. A state dict of 100k tensors pickles to a few MB. */
  maxBytes: 256 << 20,
  /** Most memo entries (PUT/BINPUT/LONG_BINPUT/MEMOIZE) one pickle may define. */
  maxMemoEntries: 1_000_000,
  /** Most values on the unpickler stack at once (all marks together). */
  maxStackItems: 1_000_000,
  /** Deepest MARK nesting (pickletools: the "metastack"). */
  maxMarkDepth: 10_000,
  /** Longest string or bytes object, and longest text line of the protocol-0 opcodes. */
  maxStringBytes: 16 << 20,
  /** Longest integer accepted from LONG1/LONG4/LONG (bytes; 2^2048 is more than any size or stride). */
  maxLongBytes: 256,
} as const;

/** The walk of the unpickled value that looks for the state dict (state-dict.ts, values.ts). */
export const WALK = {
  /** Deepest container nesting walked, and the deepest tuple used as a dict key. */
  maxNesting: 64,
  /** Most container entries visited (shared sub-objects count each time). */
  maxEntries: 2_000_000,
} as const;

/** The tensors of one checkpoint (checkpoint.ts, tensor.ts). */
export const TENSORS = {
  /** Most tensors in one checkpoint. */
  maxCount: 1_000_000,
  /** Most dimensions of one tensor. */
  maxRank: 64,
  /**
   * Bytes the tensors may materialise in all, beyond the file's own size × maxExpansion: views with
   * zero strides (expand) and deflated entries can describe far more bytes than the file holds.
   */
  expansionSlackBytes: 64 << 20,
  maxExpansion: 4,
} as const;

/** The zip container (zip.ts). */
export const ZIP = {
  /** Most entries in the central directory, and its largest size. */
  maxEntries: 1_000_000,
  maxCentralDirectoryBytes: 256 << 20,
  /** Deflate cannot expand more than 1032:1 (RFC 1951 stored-length bound), so a larger claim is a lie. */
  maxDeflateRatio: 1032,
} as const;

/** Largest buffer Node can allocate: the cap on one tensor, one storage and a legacy file read whole. */
export const MAX_BUFFER_BYTES: number = bufferConstants.MAX_LENGTH;
