# nvcc's flags in torch's extension build of the CUDA kernels (setup.py's own, -O3 -lineinfo
# --expt-relaxed-constexpr, and those torch's builder adds: C++20, no implicit half conversions), as in
# CI's log of tools/check_cuda_build.sh. Sourced by the checks that compile the kernels without that
# build (tools/check_cuda.sh, tools/ptxas_paths.sh), so that ptxas sees what the build gives it.
nvcc_build_flags=(-std=c++20 -O3 -lineinfo --expt-relaxed-constexpr -D__CUDA_NO_HALF_OPERATORS__
  -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__)
