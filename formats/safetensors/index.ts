// Public surface of the safetensors layer. Atomic output (ByteSink, writeFileAtomic, …) lives in
// ../atomic.ts; ByteSink is re-exported here as a type for writer users.
export {
  DTYPES,
  DTYPE_BITS,
  DECODABLE_DTYPES,
  FLOAT_DTYPES,
  isDType,
  isFloatDType,
  canDecode,
  dtypeBits,
  dtypeRank,
  dtypeAlignment,
  elementCount,
  tensorByteLength,
  f16BitsToNumber,
  bf16BitsToNumber,
  f32BitsToF16Bits,
  f32BitsToBf16Bits,
  numberToF16Bits,
  numberToBf16Bits,
  decodeToFloat32,
  decodeToFloat64,
  encodeFloats,
  encodeFloatsWithResidual,
  type DType,
  type FloatDType,
  type DecodeOptions,
} from "../../common/dtype.js";
export {
  SafetensorsError,
  UnsupportedDTypeError,
  SAFETENSORS_VARIANTS,
  safetensorsCode,
  isSafetensorsError,
  type SafetensorsVariant,
  type SafetensorsErrorOptions,
} from "./errors.js";
export { parseHeader, readHeaderLength, type Header, type TensorInfo } from "./header.js";
export { SafetensorsFile, type DerivedTensor } from "./reader.js";
export { layoutSafetensors, writeSafetensors, serializeSafetensors, compareNames, type CopySource, type TensorSpec, type SafetensorsLayout } from "./writer.js";
export * as limits from "./limits.js";
export type { ByteSink } from "../../common/atomic.js";
export {
  writeSafetensorsHashed,
  hashedMetadata,
  LEGACY_HASH_START,
  LEGACY_HASH_BYTES,
  type ContentHashes,
  type HashFields,
} from "./content-hash.js";
