/* cuda/absent.c: the CUDA side of a build configured with EMBER_CUDA off or without the toolkit.
 * Such a build is complete on the CPU; its CUDA table has no kernels, so every op and allocation
 * on cuda:N fails with "no device cuda:N (this build has no CUDA)". */
#include "core/kernels.h"

#include <string.h>

int em_cuda_device_count(void) { return 0; }
bool em_built_with_cuda(void) { return false; }

void *em__host_alloc_pinned(size_t nbytes) { return NULL; }
void em__host_free_pinned(void *p, size_t nbytes, void *done) {}
void em__host_pinned_wait(void *done) {}

static em_status no_cuda(const char *op, int index) {
  return em_set_error(EM_ERR_UNSUPPORTED, "%s: no device cuda:%d (this build has no CUDA)", op,
                      index);
}

em_status em_cuda_memory_stats(int index, em_cuda_memstats *out) {
  if (!out) return em_set_error(EM_ERR_INVALID, "cuda_memory_stats: out is NULL");
  memset(out, 0, sizeof *out);
  return no_cuda("cuda_memory_stats", index);
}

em_status em_cuda_empty_cache(int index) { return no_cuda("cuda_empty_cache", index); }

const em_kernels em__cuda_kernels = {.name = "cuda"};
