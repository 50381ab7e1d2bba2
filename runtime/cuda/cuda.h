/* cuda/cuda.h: private to runtime/cuda/. The CUDA kernels that cuda/table.c puts in the CUDA
 * table, following the contract in core/kernels.h. */
#ifndef EMBER_CUDA_H
#define EMBER_CUDA_H

#include "core/kernels.h"

/* ---- device.c: memory on device `index` (cudaMalloc, cudaMemset, cudaMemcpy, synchronous) --- */
void *em__cuda_alloc(int index, size_t nbytes);
void em__cuda_free(int index, void *p, size_t nbytes);
em_status em__cuda_zero(int index, void *dst, size_t nbytes);
em_status em__cuda_copy_from_host(int index, void *dst, const void *src, size_t nbytes);
em_status em__cuda_copy_to_host(int index, void *dst, const void *src, size_t nbytes);
em_status em__cuda_copy(int index, void *dst, const void *src, size_t nbytes);

#endif
