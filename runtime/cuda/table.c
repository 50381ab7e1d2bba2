/* cuda/table.c: the CUDA kernel table. Today it holds the memory kernels (cuda/device.c), so that
 * tensors and modules move to a GPU with em_to/em_module_to; the op kernels (cuBLAS, cuDNN, the
 * project's own) are NULL until the GPU issue fills them, and an op on a CUDA tensor fails with
 * "<op>: not supported on cuda:N". */
#include "cuda/cuda.h"

const em_kernels em__cuda_kernels = {
    .name = "cuda",
    .alloc = em__cuda_alloc,
    .free = em__cuda_free,
    .zero = em__cuda_zero,
    .copy_from_host = em__cuda_copy_from_host,
    .copy_to_host = em__cuda_copy_to_host,
    .copy = em__cuda_copy,
    .upload = em__cuda_upload,
    .copy_view = em__cuda_copy_view,
    .fill = em__cuda_fill,
};
