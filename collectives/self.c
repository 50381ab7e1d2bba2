/* self.c: the host backend of a build without MPI: a world of one rank. Every operation is a
 * copy (or nothing, in place), done at once on the caller's thread. */
#include "coll_internal.h"

#include <stdlib.h>
#include <string.h>

static em_status self_start(void *state, coll_req *r) {
  (void)state;
  size_t bytes = (size_t)r->count * em_dtype_size(r->dtype);
  pthread_mutex_lock(&r->comm->lock);
  r->state = REQ_RUNNING;
  r->t_started = coll__now();
  pthread_mutex_unlock(&r->comm->lock);
  /* With one rank: allreduce (any op, avg included), reduce_scatter and allgather copy send to
   * recv; broadcast and barrier have nothing to do. */
  if (r->kind != COLL_BROADCAST && r->kind != COLL_BARRIER && r->send != r->recv && bytes)
    memmove(r->recv, r->send, bytes);
  coll__complete(r, EM_OK, NULL);
  return EM_OK;
}

static void self_destroy(void *state) { (void)state; }

coll_backend *coll__self_new(coll_comm *c) {
  (void)c;
  coll_backend *b = calloc(1, sizeof *b);
  if (!b) {
    em_set_error(EM_ERR_NOMEM, "communicator: out of memory");
    return NULL;
  }
  *b = (coll_backend){.name = "self", .start = self_start, .destroy = self_destroy};
  return b;
}
