{
  # Two addons, kept apart so that a CUDA build failure or a missing driver never touches the CPU path.
  #   lora_cpu.node : N-API + BLAS/LAPACK opened with dlopen at first use (links no BLAS; loads without one).
  #   lora_cuda.node: own kernels on the CUDA runtime (cudart linked statically, cuBLAS opened at run time when
  #                   present) plus the cpu code the fused operations reuse; built only with_cuda==1.
  # native/build.js drives this (node native/build.js); by hand: npx node-gyp rebuild --directory native -- -Dwith_cuda=0
  "variables": {
    "variables": {
      "cuda_home%": "<!(node -p \"process.env.CUDA_HOME||process.env.CUDA_PATH||'/usr/local/cuda'\")"
    },
    "cuda_home%": "<(cuda_home)",
    "with_cuda%": "<!(node -e \"const fs=require('fs'),p=require('path');const h=process.env.CUDA_HOME||process.env.CUDA_PATH||'/usr/local/cuda';process.stdout.write(fs.existsSync(p.join(h,'bin','nvcc'))?'1':'0')\")",
    "cuda_lib%": "<(cuda_home)/lib64",
    "cuda_arch%": "-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90"
  },
  "targets": [
    {
      "target_name": "lora_cpu",
      "sources": ["src/cpu/addon.cc", "src/cpu/blas.cc", "src/cpu/ops.cc", "src/cpu/kernels.cc", "src/cpu/truncate.cc", "src/cpu/rsvd.cc", "src/cpu/streamed.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-O3", "-std=c++17", "-fexceptions", "-Wno-psabi"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "libraries": ["-ldl", "-lpthread"]
    },
    {
      "target_name": "lora_cuda",
      "conditions": [
        ["with_cuda==1", {
          "sources": ["src/cuda/addon.cc", "src/cuda/kernels.cu", "src/cuda/fused.cu", "src/cuda/cublas.cc", "src/cuda/streamed.cc",
                      "src/cpu/blas.cc", "src/cpu/ops.cc", "src/cpu/kernels.cc", "src/cpu/truncate.cc"],
          "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<(cuda_home)/include"],
          "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
          "cflags_cc": ["-O3", "-std=c++17", "-fexceptions", "-Wno-psabi"],
          "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
          "rules": [{
            "rule_name": "nvcc",
            "extension": "cu",
            "outputs": ["<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).o"],
            "action": ["sh", "-c", "<(cuda_home)/bin/nvcc -O3 -std=c++17 -Xcompiler -fPIC <(cuda_arch) -c <(RULE_INPUT_PATH) -o <(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).o"],
            "message": "nvcc <(RULE_INPUT_PATH)",
            "process_outputs_as_sources": 1
          }],
          "libraries": ["<(cuda_lib)/libcudart_static.a", "-ldl", "-lpthread", "-lrt"]
        }, {
          "type": "none"
        }]
      ]
    }
  ]
}
