/* device.c (no CUDA): the device queries of a build configured with EMBER_CUDA off or without the
 * CUDA toolkit. Such a build is complete on the CPU; CUDA tensors cannot be created. */
#include "em_internal.h"

int em_cuda_device_count(void) { return 0; }
bool em_built_with_cuda(void) { return false; }

void *em__host_alloc_pinned(size_t nbytes) { return NULL; }
void em__host_free_pinned(void *p) {}
