// Named safety limits of the PyTorch checkpoint reader (docs/HARDENING.md): every bound a hostile
// .bin/.pt file could otherwise push without limit (memory, time, stack) is a constant here.
import { constants as bufferConstants } from "node:buffer";

/** Largest data.pkl (or legacy pickle section) read, in bytes. A state dict of 100k tensors pickles to a few MB. */
export const MAX_PICKLE_BYTES = 256 << 20;

/** Most memo entries (PUT/BINPUT/LONG_BINPUT/MEMOIZE) one pickle may define. */
export const MAX_MEMO_ENTRIES = 1_000_000;

/** Most values on the unpickler stack at once (all marks together). */
export const MAX_STACK_ITEMS = 1_000_000;

/** Deepest MARK nesting (pickletools: the "metastack"). */
export const MAX_MARK_DEPTH = 10_000;

/** Longest string or bytes object, and longest text line of the protocol-0 opcodes. */
export const MAX_STRING_BYTES = 16 << 20;

/** Longest integer accepted from LONG1/LONG4/LONG (bytes; 2^2048 is more than any size or stride). */
export const MAX_LONG_BYTES = 256;

/** Deepest container nesting walked when looking for the state dict, and the deepest tuple used as a dict key. */
export const MAX_NESTING = 64;

/** Most containers entries visited when looking for the state dict (shared sub-objects count each time). */
export const MAX_WALK_ENTRIES = 2_000_000;

/** Most tensors in one checkpoint. */
export const MAX_TENSORS = 1_000_000;

/** Most dimensions of one tensor. */
export const MAX_TENSOR_RANK = 64;

/**
 * Bytes the tensors may materialise in all, beyond the file's own size × MAX_EXPANSION: views with
 * zero strides (expand) and deflated entries can describe far more bytes than the file holds.
 */
export const EXPANSION_SLACK_BYTES = 64 << 20;
export const MAX_EXPANSION = 4;

/** Most entries in the zip central directory, and its largest size. */
export const MAX_ZIP_ENTRIES = 1_000_000;
export const MAX_CENTRAL_DIRECTORY_BYTES = 256 << 20;

/** Deflate cannot expand more than 1032:1 (RFC 1951 stored-length bound), so a larger claim is a lie. */
export const MAX_DEFLATE_RATIO = 1032;

/** Largest buffer Node can allocate: the cap on one tensor, one storage and a legacy file read whole. */
export const MAX_BUFFER_BYTES: number = bufferConstants.MAX_LENGTH;
