/* cpu/mask.c: the CPU's causal mask, a plain loop: each row of x (B, T, S) is copied up to its
 * last visible column and filled with the mask value after it.
 *
 *   row i (of T), S columns, offset S - T:   | x x x x x | value value value |
 *                                             0           i + S - T + 1       S
 */
#include "cpu/cpu.h"

#include <string.h>

em_status em__cpu_causal_mask(const em_tensor *x, float value, em_tensor *y) {
  int nd = x->ndim;
  int64_t T = x->shape[nd - 2], S = x->shape[nd - 1];
  int64_t B = em__shape_numel(nd - 2, x->shape);
  const float *px = em_data_f32(x);
  float *py = em_data_f32(y);
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < T; i++) {
      int64_t row = (b * T + i) * S;
      int64_t keep = i + S - T + 1; /* columns 0 .. keep-1 are visible */
      keep = keep < 0 ? 0 : keep > S ? S : keep;
      if (px != py) memcpy(py + row, px + row, (size_t)keep * sizeof *py);
      for (int64_t j = keep; j < S; j++) py[row + j] = value;
    }
  return EM_OK;
}
