/* core/device.c: which kernel table serves a device, and moving tensors between devices
 * (em_to, em__move_tensors for em_module_to). A copy between two devices goes through the host
 * when neither side is the CPU. */
#include "core/kernels.h"

#include <stdio.h>
#include <stdlib.h>

/* A CUDA device this process does not have: no kernels, so every op and allocation on it fails
 * with "<op>: no device cuda:N" (em__unsupported) before anything touches its memory. */
static const em_kernels no_device = {.name = "cuda"};

const em_kernels *em__kernels(em_device dev) {
  if (dev.kind == EM_CPU) return &em__cpu_kernels;
  return dev.index >= 0 && dev.index < em_cuda_device_count() ? &em__cuda_kernels : &no_device;
}

const em_kernels *em__unsupported(const char *op, em_device dev) {
  char d[EM_DEVICE_STR_LEN];
  em__device_str(dev, d, sizeof d);
  if (dev.kind == EM_CUDA && !em_built_with_cuda())
    em_set_error(EM_ERR_UNSUPPORTED, "%s: no device %s (this build has no CUDA)", op, d);
  else if (dev.kind == EM_CUDA && dev.index >= em_cuda_device_count())
    em_set_error(EM_ERR_UNSUPPORTED, "%s: no device %s (%d CUDA devices present)", op, d,
                 em_cuda_device_count());
  else
    em_set_error(EM_ERR_UNSUPPORTED, "%s: not supported on %s", op, d);
  return NULL;
}

/* A device that tensors can live on: the CPU, or a present CUDA device with a memory table. */
static bool device_usable(const char *op, em_device dev) {
  if (dev.kind != EM_CPU && dev.kind != EM_CUDA) {
    em_set_error(EM_ERR_INVALID, "%s: unknown device kind %d", op, (int)dev.kind);
    return false;
  }
  if (dev.index < 0 || (dev.kind == EM_CPU && dev.index != 0)) {
    em_set_error(EM_ERR_INVALID, "%s: no device index %d for %s", op, dev.index,
                 dev.kind == EM_CPU ? "cpu" : "cuda");
    return false;
  }
  if (dev.kind == EM_CUDA && dev.index >= em_cuda_device_count()) {
    em__unsupported(op, dev);
    return false;
  }
  return em__kernels(dev)->alloc || em__unsupported(op, dev);
}

/* dst (storage on dst_dev) = src (storage on src_dev), nbytes, through the host if needed. */
static em_status copy_between(em_device dst_dev, void *dst, em_device src_dev, const void *src,
                              size_t nbytes) {
  const em_kernels *kd = em__kernels(dst_dev), *ks = em__kernels(src_dev);
  if (nbytes == 0) return EM_OK;
  if (dst_dev.kind == src_dev.kind && dst_dev.index == src_dev.index)
    return kd->copy(dst_dev.index, dst, src, nbytes);
  if (src_dev.kind == EM_CPU) return kd->copy_from_host(dst_dev.index, dst, src, nbytes);
  if (dst_dev.kind == EM_CPU) return ks->copy_to_host(src_dev.index, dst, src, nbytes);
  void *host = malloc(nbytes);
  if (!host) return em_set_error(EM_ERR_NOMEM, "to: out of memory staging %zu bytes", nbytes);
  em_status st = ks->copy_to_host(src_dev.index, host, src, nbytes);
  if (st == EM_OK) st = kd->copy_from_host(dst_dev.index, dst, host, nbytes);
  free(host);
  return st;
}

/* A pinned CPU tensor (contiguous) on its way to a GPU: the device's upload slot copies it on
 * the host-to-device stream, so that the copy overlaps the kernels still queued (a data loader's
 * batch going to the model). NULL (no error) when dev has no upload slot or the upload fails:
 * the caller copies the ordinary way, and reports its own error if that fails too. Two threads
 * must not upload from the same pinned storage at once (its upload_done is not locked). */
static em_tensor *upload(em_tensor *c, em_device dev, size_t nbytes) {
  const em_kernels *k = em__kernels(dev);
  if (dev.kind == EM_CPU || !k->upload) return NULL;
  void *d = k->upload(dev.index, em_data(c), nbytes, &c->storage->upload_done);
  em_tensor *out = d ? em__tensor_lent(d, nbytes, dev, c->dtype, c->ndim, c->shape, NULL, NULL,
                                       NULL)
                     : NULL;
  if (out) {
    out->storage->owns = true; /* the block is the tensor's: freed with it through the table */
    return em__scope_adopt(out);
  }
  if (d) k->free(dev.index, d, em__padded_size(nbytes));
  return NULL;
}

static em_status to_backward(em_node *n, em_tensor *gout, em_tensor **gin) {
  gin[0] = em_to(gout, n->inputs[0]->device);
  return gin[0] ? EM_OK : em_last_status();
}

static em_tensor *to_impl(em_tensor *t, em_device dev) {
  EM_CHECK_INPUT(t, "to");
  if (!device_usable("to", dev)) return NULL;
  if (t->device.kind == dev.kind && t->device.index == dev.index) return t;
  em_tensor *c = em__contig(t);
  if (!c) return NULL;
  size_t nbytes = (size_t)em_numel(t) * em_dtype_size(t->dtype);
  em_tensor *out = c->storage->pinned && nbytes ? upload(c, dev, nbytes) : NULL;
  if (!out) {
    out = em__empty_on(dev, t->dtype, t->ndim, t->shape);
    if (!out || copy_between(dev, em_data(out), t->device, em_data(c), nbytes) != EM_OK)
      return NULL;
  }
  em__record(out, "to", to_backward, 1, &t);
  return out;
}

em_tensor *em_to(em_tensor *t, em_device dev) {
  em_scope s = em_scope_begin(); /* the contiguous copy of t is op-private */
  return em__op_end(s, to_impl(t, dev));
}

em_status em__move_tensors(em_tensor *const *ts, int n, em_device dev) {
  if (!device_usable("module_to", dev)) return em_last_status();
  /* Each distinct storage moves once, and every tensor that views it follows (the parameter
   * arena keeps its layout). A failure leaves every tensor where it was. */
  em_storage **from = calloc((size_t)n + 1, sizeof *from), **to = calloc((size_t)n + 1, sizeof *to);
  int m = 0;
  em_status st = from && to ? EM_OK : em_set_error(EM_ERR_NOMEM, "module_to: out of memory");
  for (int i = 0; i < n && st == EM_OK; i++) {
    em_storage *s = ts[i]->storage;
    bool seen = s->device.kind == dev.kind && s->device.index == dev.index;
    for (int j = 0; j < m && !seen; j++) seen = from[j] == s;
    if (seen) continue;
    if (s->pinned || !s->owns) {
      st = em_set_error(EM_ERR_UNSUPPORTED, "module_to: '%s' views memory Ember does not own",
                        em_tensor_name(ts[i]));
      break;
    }
    from[m] = s;
    to[m] = em__storage_new(dev, s->nbytes, false);
    if (!to[m]) st = em_last_status();
    else st = copy_between(dev, to[m]->data, s->device, s->data, s->nbytes);
    m++;
  }
  for (int i = 0; i < n && st == EM_OK; i++) {
    for (int j = 0; j < m; j++) {
      if (ts[i]->storage != from[j]) continue;
      __atomic_add_fetch(&to[j]->refcount, 1, __ATOMIC_RELAXED);
      em__storage_release(ts[i]->storage);
      ts[i]->storage = to[j];
      ts[i]->device = dev;
      break;
    }
  }
  for (int j = 0; j < m; j++) em__storage_release(to[j]); /* the tensors hold the new ones */
  free(from);
  free(to);
  return st;
}
