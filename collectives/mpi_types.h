/* mpi_types.h: Ember's dtypes and reductions as MPI sees them (private to the MPI backend).
 * MPI has no bf16 or f16: they travel as 16-bit integers and user-defined operations reduce them
 * in f32; COLL_AVG is a sum, divided afterwards. */
#ifndef EMBER_MPI_TYPES_H
#define EMBER_MPI_TYPES_H

#include <mpi.h>

#include "coll.h"

/* The MPI datatype of dt; MPI_DATATYPE_NULL for a dtype MPI cannot carry. */
MPI_Datatype coll__mpi_type(em_dtype dt);
/* The MPI operation that reduces dt by op (a user-defined one for bf16/f16, made once). */
MPI_Op coll__mpi_reduce_op(em_dtype dt, coll_redop op);
/* p[0, n) /= world in place: the last step of COLL_AVG (floating dtypes only). */
void coll__mpi_avg_divide(em_dtype dt, void *p, int64_t n, int world);

#endif
