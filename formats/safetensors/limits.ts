// Named safety limits of the safetensors layer (huggingface.js gguf.ts habit: every bound is a
// named constant with the reason it exists). Values that mirror the reference reader
// (huggingface/safetensors safetensors/src/tensor.rs) say so.
import { constants as bufferConstants } from "node:buffer";

/** Bytes of the little-endian u64 header length that starts every file (tensor.rs `N_LEN`). */
export const N_LEN = 8;

/** Largest JSON header accepted or written, in bytes (tensor.rs `MAX_HEADER_SIZE`; CWE-770). */
export const MAX_HEADER_SIZE = 100_000_000;

/** The header JSON is padded with spaces to a multiple of this many bytes on write (tensor.rs `prepare`). */
export const HEADER_ALIGNMENT = 8;

/**
 * Deepest JSON nesting accepted in a header, checked by a bracket scan before `JSON.parse` so a
 * hostile header cannot exhaust the stack (serde_json's own recursion limit is 128; CWE-674).
 * A valid header nests 3 deep (`{name: {shape: [..]}}`).
 */
export const MAX_JSON_DEPTH = 128;

/**
 * Largest single buffer this Node can allocate. A tensor larger than this cannot be read into
 * memory (`readRaw`); it can still be streamed with `copyRaw`. stdin is buffered whole, so it is
 * capped by this too.
 */
export const MAX_BUFFER_BYTES: number = bufferConstants.MAX_LENGTH;

/** Default cap for a safetensors stream read from stdin (the whole stream is buffered). */
export const MAX_STREAM_BYTES: number = MAX_BUFFER_BYTES;

/**
 * Largest positional read issued at once. Linux returns at most 0x7ffff000 bytes per read(2) and
 * Node refuses lengths ≥ 2 GiB, so bigger tensors are read as several reads into one buffer.
 */
export const READ_CHUNK_BYTES = 1 << 30;

/**
 * Reads of at most this many bytes are synchronous: from the page cache a read of a few MB takes
 * well under a millisecond, less than a thread-pool round trip (two thread wake-ups); larger
 * reads go to the thread pool so the event loop keeps dispatching native work meanwhile.
 */
export const SYNC_READ_BYTES = 4 << 20;

/** Default chunk of `copyRaw` (passthrough tensors of many GB are streamed, never held whole). */
export const COPY_CHUNK_BYTES = 16 << 20;

/**
 * Files up to this size whose tensors average at most SMALL_TENSOR_BYTES are read whole when
 * opened (one read instead of one per tensor); others are read tensor by tensor, so memory stays
 * bounded by the largest tensor, not the file. Larger tensors gain nothing from it (measured on
 * the catalog benchmark: the fresh whole-file buffers cost more than pooled per-tensor reads).
 */
export const WHOLE_READ_BYTES = 32 << 20;
export const SMALL_TENSOR_BYTES = 64 << 10;

/**
 * With a buffer pool (catalog mode), files up to this size are read whole whatever their tensor
 * sizes: with reads synchronous, what a kohya SD file's 48 tensor reads and 16 alpha reads cost is
 * their system calls (catalog inspect of 1000 such files: 0.96× wall read whole), and a pooled
 * buffer costs no fresh pages.
 */
export const POOLED_WHOLE_READ_BYTES = 8 << 20;
