/* ddp_init.h: process bootstrap for data-parallel programs.
 *
 *   int main(int argc, char **argv) {
 *     if (ddp_init(&argc, &argv) != EM_OK) { fprintf(stderr, "%s\n", em_last_error()); return 1; }
 *     ddp_print0("training on %d ranks\n", ddp_world_size());
 *     ...
 *     ddp_finalize();
 *   }
 *
 * ddp_init starts MPI (MPI_Init_thread, asking for MPI_THREAD_MULTIPLE: the communicator's
 * thread makes the MPI calls and an abort may come from the compute thread), learns the rank,
 * the world size, the local rank and local world size (ranks sharing this node, from
 * MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), cross-checked with OMPI_COMM_WORLD_LOCAL_RANK or
 * SLURM_LOCALID when set), chooses the device and creates the world communicator. Run without a
 * launcher it is a world of 1.
 *
 * Device: cuda:(local_rank % visible GPUs) when GPUs are visible, else the CPU. EMBER_DEVICE=cpu
 * forces the CPU; EMBER_DEVICE=cuda makes a missing GPU an error. */
#ifndef EMBER_DDP_INIT_H
#define EMBER_DDP_INIT_H

#include "coll.h"
#include "em_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* argc/argv may be NULL. opts NULL = defaults/environment. Fails (with a message) if called twice
 * without ddp_finalize in between, or if MPI cannot give the thread level needed. */
em_status ddp_init(int *argc, char ***argv);
em_status ddp_init_ex(int *argc, char ***argv, const coll_options *opts);
/* Stops the communicator, and MPI if ddp_init started it (a program that called MPI_Init itself
 * finalizes MPI itself). After MPI_Finalize, MPI cannot be started again in this process. */
em_status ddp_finalize(void);
bool ddp_initialized(void);
/* Registers fn to run at the start of the next ddp_finalize, before the communicator stops (in
 * the reverse order of registration, as atexit; each once). ddp_wrap uses it so that a model
 * still wrapped at ddp_finalize is freed there (ddp_free). At most 16 functions; registering one
 * already registered does nothing. Not thread-safe: call from the thread that calls
 * ddp_finalize. */
em_status ddp_at_finalize(void (*fn)(void));

int ddp_rank(void);       /* 0 before ddp_init */
int ddp_world_size(void); /* 1 before ddp_init */
int ddp_local_rank(void);
int ddp_local_world_size(void);
em_device ddp_device(void);
coll_comm *ddp_comm(void); /* borrowed; NULL before ddp_init */

/* printf on rank 0 only (flushes). Returns what printf returned there, 0 elsewhere. */
int ddp_print0(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* fprintf(stderr) prefixed with "[rank r] " on every rank. */
void ddp_eprint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#ifdef __cplusplus
}
#endif
#endif
