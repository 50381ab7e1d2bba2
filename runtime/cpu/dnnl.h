/* cpu/dnnl.h: private to runtime/cpu/. The oneDNN engine, stream and primitive cache that the CPU
 * kernels share. Nothing outside runtime/cpu/ includes oneDNN. */
#ifndef EMBER_CPU_DNNL_H
#define EMBER_CPU_DNNL_H

#include "core/internal.h"

#include <oneapi/dnnl/dnnl.h>

/* ---- oneDNN ---------------------------------------------------------------------------- */
dnnl_engine_t em__dnnl_engine(void);
dnnl_stream_t em__dnnl_stream(void);
/* Cached primitive by key; on a miss, build(ctx, &pd) creates the primitive descriptor (returns
 * a dnnl status) and the cache creates the primitive and keeps both. Returns NULL with the error
 * set on failure. */
typedef struct {
  dnnl_primitive_t prim;
  const_dnnl_primitive_desc_t pd;
} em_dnnl_prim;
typedef dnnl_status_t (*em_dnnl_build_fn)(void *ctx, dnnl_primitive_desc_t *pd);
const em_dnnl_prim *em__dnnl_get(const char *key, em_dnnl_build_fn build, void *ctx);
/* Execute p with (arg, memory desc, pointer) triples and wait. Returns EM_OK or an error. */
typedef struct {
  int arg;
  const dnnl_memory_desc_t *md;
  void *ptr;
} em_dnnl_arg;
em_status em__dnnl_exec(const char *op, const em_dnnl_prim *p, int nargs, const em_dnnl_arg *args);
/* Plain row-major f32 memory descriptor. */
dnnl_memory_desc_t em__dnnl_md(int ndim, const int64_t *shape);
/* The memory descriptor the primitive wants for a query (e.g. dnnl_query_workspace_md). */
const dnnl_memory_desc_t *em__dnnl_query_md(const em_dnnl_prim *p, dnnl_query_t what, int index);
#define EM_DNNL_CHECK(call, opname)                                                                \
  do {                                                                                             \
    dnnl_status_t st_ = (call);                                                                    \
    if (st_ != dnnl_success)                                                                       \
      return em_set_error(EM_ERR_BACKEND, "%s: oneDNN %s failed (status %d)", opname, #call,       \
                          (int)st_);                                                               \
  } while (0)

#endif
