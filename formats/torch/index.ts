// Public surface of the PyTorch checkpoint reader (docs/formats.md "PyTorch checkpoints").
export { openTorchCheckpoint, readCheckpointBuffer, sniffCheckpoint, sniffCheckpointFile, type Checkpoint, type CheckpointKind } from "./checkpoint.js";
export { RefusedGlobalError } from "./globals.js";
