/* cuda/absent.c: the CUDA side of a build configured with EMBER_CUDA off or without the toolkit.
 * Such a build is complete on the CPU; its CUDA table has no kernels, so every op and allocation
 * on cuda:N fails with "no device cuda:N (this build has no CUDA)". */
#include "core/kernels.h"

int em_cuda_device_count(void) { return 0; }
bool em_built_with_cuda(void) { return false; }

void *em__host_alloc_pinned(size_t nbytes) { return NULL; }
void em__host_free_pinned(void *p) {}

const em_kernels em__cuda_kernels = {.name = "cuda"};
