// The float16 kernels of the tensor-core linear backward (linear_backward_tc_launch.cuh says why apart).
#include "linear_backward_tc_launch.cuh"

namespace actattn {
namespace cuda {

template void launch_linear_backward_tensor_core<__half>(const LinearParams&, cudaStream_t);

}  // namespace cuda
}  // namespace actattn
