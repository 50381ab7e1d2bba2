/* mpi_types.c: Ember's dtypes and reductions for MPI (mpi_types.h). */
#include "mpi_types.h"

#include "em_half.h"

#include <pthread.h>

MPI_Datatype coll__mpi_type(em_dtype dt) {
  switch (dt) {
  case EM_F32: return MPI_FLOAT;
  case EM_I64: return MPI_INT64_T;
  case EM_I32: return MPI_INT32_T;
  case EM_U8: return MPI_UINT8_T;
  case EM_BF16:
  case EM_F16: return MPI_UINT16_T; /* reduced by the user-defined operations below */
  default: return MPI_DATATYPE_NULL;
  }
}

static MPI_Op mpi_op(coll_redop op);

/* ---- 16-bit floats: MPI has no bf16/f16 type; user-defined operations reduce them in f32 ---- */
/* b = a op b for n 16-bit floats, in f32 blocks converted in bulk (em_half.h). */
static void half_combine(const uint16_t *a, uint16_t *b, int n, bool bf, coll_redop op) {
  float x[1024], y[1024];
  for (int off = 0; off < n; off += 1024) {
    int m = n - off < 1024 ? n - off : 1024;
    if (bf) {
      em_bf16_to_f32_n(x, a + off, m);
      em_bf16_to_f32_n(y, b + off, m);
    } else {
      em_f16_to_f32_n(x, a + off, m);
      em_f16_to_f32_n(y, b + off, m);
    }
    for (int i = 0; i < m; i++)
      y[i] = op == COLL_MAX   ? (x[i] > y[i] ? x[i] : y[i])
             : op == COLL_MIN ? (x[i] < y[i] ? x[i] : y[i])
                              : x[i] + y[i];
    if (bf)
      em_f32_to_bf16_n(b + off, y, m, 1.0f);
    else
      em_f32_to_f16_n(b + off, y, m, 1.0f);
  }
}

#define HALF_OP(name, bf, op)                                                                      \
  static void name(void *in, void *inout, int *len, MPI_Datatype *dt) {                            \
    (void)dt;                                                                                      \
    half_combine(in, inout, *len, bf, op);                                                         \
  }
HALF_OP(bf16_sum, true, COLL_SUM)
HALF_OP(bf16_max, true, COLL_MAX)
HALF_OP(bf16_min, true, COLL_MIN)
HALF_OP(f16_sum, false, COLL_SUM)
HALF_OP(f16_max, false, COLL_MAX)
HALF_OP(f16_min, false, COLL_MIN)

static MPI_Op half_ops[2][3]; /* [bf16, f16][sum, max, min], made once per process */
static pthread_once_t half_once = PTHREAD_ONCE_INIT;
static void make_half_ops(void) {
  MPI_User_function *fn[2][3] = {{bf16_sum, bf16_max, bf16_min}, {f16_sum, f16_max, f16_min}};
  for (int t = 0; t < 2; t++)
    for (int o = 0; o < 3; o++) MPI_Op_create(fn[t][o], 1, &half_ops[t][o]);
}

/* avg for 16-bit floats: divide in f32, round back. */
static void half_divide(em_dtype dt, void *p, int64_t n, float w) {
  uint16_t *h = p;
  float x[1024];
  for (int64_t off = 0; off < n; off += 1024) {
    int m = (int)(n - off < 1024 ? n - off : 1024);
    if (dt == EM_BF16) {
      em_bf16_to_f32_n(x, h + off, m);
      for (int i = 0; i < m; i++) x[i] /= w;
      em_f32_to_bf16_n(h + off, x, m, 1.0f);
    } else {
      em_f16_to_f32_n(x, h + off, m);
      for (int i = 0; i < m; i++) x[i] /= w;
      em_f32_to_f16_n(h + off, x, m, 1.0f);
    }
  }
}

MPI_Op coll__mpi_reduce_op(em_dtype dt, coll_redop op) {
  if (dt == EM_BF16 || dt == EM_F16) {
    pthread_once(&half_once, make_half_ops);
    return half_ops[dt == EM_F16][op == COLL_MAX ? 1 : op == COLL_MIN ? 2 : 0];
  }
  return mpi_op(op);
}

static MPI_Op mpi_op(coll_redop op) {
  switch (op) {
  case COLL_MAX: return MPI_MAX;
  case COLL_MIN: return MPI_MIN;
  default: return MPI_SUM; /* avg = sum, then divide */
  }
}

/* The sum over ranks divided by the world size, in place (floating dtypes only). */
void coll__mpi_avg_divide(em_dtype dt, void *p, int64_t n, int world) {
  if (dt == EM_F32) {
    float *f = p, w = (float)world;
    for (int64_t i = 0; i < n; i++) f[i] /= w;
  } else {
    half_divide(dt, p, n, (float)world);
  }
}
