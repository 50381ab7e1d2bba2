/* cuda/dnn.h: private to runtime/cuda/, included only where EMBER_HAVE_CUDNN is defined. The
 * cuDNN handle of each device (cuda/handles.c), its status translation and check macro, and the
 * convolution kernels on cuDNN (cuda/conv.cu). A build without cuDNN leaves the table's conv2d
 * slots NULL ("conv2d: not supported on cuda:0"). */
#ifndef EMBER_CUDA_DNN_H
#define EMBER_CUDA_DNN_H

#include "cuda/cuda.h"

#include <cudnn.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Device index's cuDNN handle, bound to its compute stream (created on first use; NULL with the
 * error set, naming op, if that fails). */
cudnnHandle_t em__cudnn(int index, const char *op);
/* EM_OK, or EM_ERR_BACKEND (EM_ERR_NOMEM) with "<op> on cuda:<index>: <call> failed: <cuDNN's
 * message>". */
em_status em__cudnn_status(cudnnStatus_t s, const char *call, const char *op, int index);
/* The enclosing function has `em_status st`, `const char *op`, `int index` and `cleanup:`. */
#define EM_CUDNN_CHECK(call)                                                                       \
  do {                                                                                             \
    if ((st = em__cudnn_status((call), #call, op, index)) != EM_OK) goto cleanup;                  \
  } while (0)

em_status em__cuda_conv2d(const em_conv2d_geom *g, const em_tensor *x, const em_tensor *w,
                          const em_tensor *b, em_tensor *y, em_tensor **xs, em_tensor **ws);
em_status em__cuda_conv2d_backward(const em_conv2d_geom *g, const em_tensor *xs,
                                   const em_tensor *ws, const em_tensor *gy, em_tensor *gx,
                                   em_tensor *gw, em_tensor *gb);

#ifdef __cplusplus
}
#endif
#endif
