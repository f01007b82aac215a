// cpu/truncate.cc implements Ops<Cpu>::truncateFactors and Ops<Cpu>::factorSpectrum (common/ops.h):
// one module's optimal rank-t truncation (and its spectrum alone) fused into a single call on the
// calling thread, the same maths as the TS Gram route (docs/algorithms.md §2.2). With TruncateArgs::grams
// set, both skip their Gram pass: the cuda addon forms the Grams on the GPU and reuses this code.
#pragma once
#include "../common/ops.h"
