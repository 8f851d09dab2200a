# Sourced by the scripts that build the CUDA extension: sets CUDA_HOME, unless it is set, to the root
# of the toolkit of $NVCC (or of the nvcc on the PATH). torch guesses CUDA_HOME from nvcc's location,
# which is wrong when nvcc is a wrapper script; nvcc itself reports its root (TOP in `nvcc -v`).
if [ -z "${CUDA_HOME:-}" ]; then
  cuda_home_nvcc=${NVCC:-$(command -v nvcc || true)}
  if [ -n "$cuda_home_nvcc" ]; then
    CUDA_HOME=$(realpath "$("$cuda_home_nvcc" -v -E -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)")
    export CUDA_HOME
  fi
  unset cuda_home_nvcc
fi
