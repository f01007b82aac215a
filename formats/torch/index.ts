// Public surface of the PyTorch checkpoint reader (docs/formats.md "PyTorch checkpoints").
export { openTorchCheckpoint, readCheckpointBuffer, type Checkpoint } from "./checkpoint.js";
export { sniffCheckpoint, sniffCheckpointFile, type CheckpointKind } from "./sniff.js";
export { RefusedGlobalError } from "./globals.js";
