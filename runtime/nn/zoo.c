/* nn/zoo.c: ready-made models (em_mlp, em_small_cnn). Each is a Sequential whose parameter names and
 * shapes equal those of the torch.nn.Sequential given in em_nn.h, so a PyTorch peer script can
 * build the same model and exchange weights by name. */
#include "em_nn.h"

#include <stdint.h>
#include <stdlib.h>

em_module *em_mlp(int in, const int *hidden, int n_hidden, int out) {
  if (in <= 0 || out <= 0 || n_hidden < 0 || (n_hidden > 0 && !hidden)) {
    em_set_error(EM_ERR_INVALID, "mlp: need in > 0 (got %d), out > 0 (got %d) and %d hidden sizes",
                 in, out, n_hidden);
    return NULL;
  }
  for (int i = 0; i < n_hidden; i++) {
    if (hidden[i] <= 0) {
      em_set_error(EM_ERR_INVALID, "mlp: hidden[%d] must be > 0, got %d", i, hidden[i]);
      return NULL;
    }
  }
  em_module *seq = em_sequential_new(0, NULL);
  if (!seq) return NULL;
  int prev = in;
  for (int i = 0; i < n_hidden; i++) {
    if (em_sequential_append(seq, em_linear_new(prev, hidden[i], true)) != EM_OK ||
        em_sequential_append(seq, em_relu_new()) != EM_OK)
      goto fail;
    prev = hidden[i];
  }
  if (em_sequential_append(seq, em_linear_new(prev, out, true)) != EM_OK) goto fail;
  return seq;
fail:
  em_module_free(seq);
  return NULL;
}

em_module *em_small_cnn(int in_ch, int h, int w, int classes) {
  if (in_ch <= 0 || h < 4 || w < 4 || classes <= 0) {
    em_set_error(EM_ERR_INVALID,
                 "small_cnn: need in_ch > 0, h >= 4, w >= 4, classes > 0 (got %d, %d, %d, %d)",
                 in_ch, h, w, classes);
    return NULL;
  }
  if ((int64_t)(h / 4) * (w / 4) > INT32_MAX / 64) {
    em_set_error(EM_ERR_INVALID, "small_cnn: image %dx%d too large", h, w);
    return NULL;
  }
  /* One statement per layer: initial weights are drawn in this order (the elements of an array
   * initialiser are evaluated in no specified order, so em_sequential(...) would not do). */
  const em_conv2d_opts pad2 = {.padding = {2, 2}};
  int flat = 64 * (h / 4) * (w / 4);
  em_module *seq = em_sequential_new(0, NULL);
  if (!seq) return NULL;
  if (em_sequential_append(seq, em_conv2d_new(in_ch, 32, 5, &pad2, true)) != EM_OK ||
      em_sequential_append(seq, em_relu_new()) != EM_OK ||
      em_sequential_append(seq, em_max_pool2d_new(2, 0, 0)) != EM_OK ||
      em_sequential_append(seq, em_conv2d_new(32, 64, 5, &pad2, true)) != EM_OK ||
      em_sequential_append(seq, em_relu_new()) != EM_OK ||
      em_sequential_append(seq, em_max_pool2d_new(2, 0, 0)) != EM_OK ||
      em_sequential_append(seq, em_flatten_new(1, -1)) != EM_OK ||
      em_sequential_append(seq, em_linear_new(flat, 1024, true)) != EM_OK ||
      em_sequential_append(seq, em_relu_new()) != EM_OK ||
      em_sequential_append(seq, em_linear_new(1024, classes, true)) != EM_OK) {
    em_module_free(seq);
    return NULL;
  }
  return seq;
}
