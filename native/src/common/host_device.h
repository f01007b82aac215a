// LORA_HOST_DEVICE marks the small functions that cpu/ and cuda/ both compile (nvcc: host and device).
#pragma once
#if defined(__CUDACC__) || defined(LORA_CUDA_EMU)
#define LORA_HOST_DEVICE __host__ __device__
#else
#define LORA_HOST_DEVICE
#endif
