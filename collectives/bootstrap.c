/* bootstrap.c: ddp_init / ddp_finalize (see ddp_init.h): MPI start-up, rank and node layout,
 * device choice, and the world communicator. */
#include "coll_internal.h"
#include "ddp_init.h"
#include "em_env.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef EMBER_HAVE_MPI
#include <mpi.h>
#endif

static struct {
  bool init;
  bool we_started_mpi;
  int rank, world, local_rank, local_world;
  em_device device;
  coll_comm *comm;
  void (*at_finalize[16])(void);
  int n_at_finalize;
} g = {.world = 1, .local_world = 1};

bool ddp_initialized(void) { return g.init; }
int ddp_rank(void) { return g.rank; }
int ddp_world_size(void) { return g.world; }
int ddp_local_rank(void) { return g.local_rank; }
int ddp_local_world_size(void) { return g.local_world; }
em_device ddp_device(void) { return g.device; }
coll_comm *ddp_comm(void) { return g.comm; }

int ddp_print0(const char *fmt, ...) {
  if (g.rank != 0) return 0;
  va_list ap;
  va_start(ap, fmt);
  int n = vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
  return n;
}

void ddp_eprint(const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[rank %d] %s", g.rank, buf);
  fflush(stderr);
}

/* The launcher's idea of the local rank, if it said (-1 if not). */
static int env_local_rank(const char **which) {
  const char *names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"};
  for (int k = 0; k < 2; k++) {
    const char *v = getenv(names[k]);
    if (v && *v) {
      *which = names[k];
      return atoi(v);
    }
  }
  return -1;
}

static em_status choose_device(void) {
  const char *want;
  em_status st = em_env_str("EMBER_DEVICE", &want); /* cpu, cuda or auto */
  if (st != EM_OK) return st;
  int n = em_cuda_device_count();
  g.device = EM_DEVICE_CPU;
  if (!strcmp(want, "auto")) {
    if (n > 0) g.device = (em_device){EM_CUDA, g.local_rank % n};
  } else if (!strcmp(want, "cuda")) {
    if (n == 0)
      return em_set_error(EM_ERR_UNSUPPORTED,
                          "ddp_init: EMBER_DEVICE=cuda but no CUDA device is visible%s",
                          em_built_with_cuda() ? "" : " (this build has no CUDA)");
    g.device = (em_device){EM_CUDA, g.local_rank % n};
  }
  return EM_OK;
}

em_status ddp_init(int *argc, char ***argv) { return ddp_init_ex(argc, argv, NULL); }

em_status ddp_init_ex(int *argc, char ***argv, const coll_options *opts) {
  if (g.init) return em_set_error(EM_ERR_STATE, "ddp_init: already initialised");
  em_status st = EM_OK;
#ifdef EMBER_HAVE_MPI
  int inited = 0, provided = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
      return em_set_error(EM_ERR_BACKEND, "ddp_init: MPI_Init_thread failed");
    g.we_started_mpi = true;
  } else {
    MPI_Query_thread(&provided);
  }
  /* The communication thread makes MPI calls, and a timeout may abort from the compute thread. */
  if (provided < MPI_THREAD_MULTIPLE) {
    st = em_set_error(EM_ERR_BACKEND,
                      "ddp_init: MPI gives thread level %d, Ember needs MPI_THREAD_MULTIPLE (%d)",
                      provided, MPI_THREAD_MULTIPLE);
    goto fail;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g.world);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g.rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &g.local_rank);
  MPI_Comm_size(node, &g.local_world);
  MPI_Comm_free(&node);
#else
  (void)argc;
  (void)argv;
  g.rank = g.local_rank = 0;
  g.world = g.local_world = 1;
#endif
  const char *which = NULL;
  int env_lr = env_local_rank(&which);
  if (env_lr >= 0 && env_lr != g.local_rank) {
    st = em_set_error(EM_ERR_STATE,
                      "ddp_init: rank %d: %s=%d but MPI puts this rank at local rank %d of %d "
                      "on its node",
                      g.rank, which, env_lr, g.local_rank, g.local_world);
    goto fail;
  }
  if ((st = choose_device()) != EM_OK) goto fail;
  g.comm = coll__comm_new(opts, g.rank, g.world, g.device.kind == EM_CUDA ? g.device.index : -1);
  if (!g.comm) {
    st = em_last_status();
    goto fail;
  }
#ifdef EMBER_HAVE_MPI
  MPI_Comm world = MPI_COMM_WORLD;
#ifdef EMBER_HAVE_NCCL
  /* NCCL first: its unique id travels by MPI_Bcast on this thread, before the comm thread runs. */
  if (g.device.kind == EM_CUDA &&
      !(g.comm->device = coll__nccl_new(g.comm, g.device.index, &world))) {
    st = em_last_status();
    goto fail;
  }
#endif
  g.comm->host = coll__mpi_new(g.comm, &world);
#else
#ifdef EMBER_HAVE_NCCL
  if (g.device.kind == EM_CUDA &&
      !(g.comm->device = coll__nccl_new(g.comm, g.device.index, NULL))) {
    st = em_last_status();
    goto fail;
  }
#endif
  g.comm->host = coll__self_new(g.comm);
#endif
  if (!g.comm->host) {
    st = em_last_status();
    goto fail;
  }
  g.init = true;
  return EM_OK;
fail:
  coll__comm_free(g.comm);
  g.comm = NULL;
#ifdef EMBER_HAVE_MPI
  if (g.we_started_mpi) MPI_Finalize();
  g.we_started_mpi = false;
#endif
  return st;
}

em_status ddp_at_finalize(void (*fn)(void)) {
  for (int i = 0; i < g.n_at_finalize; i++)
    if (g.at_finalize[i] == fn) return EM_OK;
  if (!fn || g.n_at_finalize == (int)(sizeof g.at_finalize / sizeof *g.at_finalize))
    return em_set_error(EM_ERR_INVALID, "ddp_at_finalize: %s",
                        fn ? "16 functions registered already" : "fn is NULL");
  g.at_finalize[g.n_at_finalize++] = fn;
  return EM_OK;
}

em_status ddp_finalize(void) {
  if (!g.init) return em_set_error(EM_ERR_STATE, "ddp_finalize: ddp_init was not called");
  while (g.n_at_finalize > 0) g.at_finalize[--g.n_at_finalize]();
  coll__comm_free(g.comm); /* joins the communication thread: every request has run */
  g.comm = NULL;
#ifdef EMBER_HAVE_MPI
  if (g.we_started_mpi) MPI_Finalize();
  g.we_started_mpi = false;
#endif
  g.init = false;
  return EM_OK;
}
