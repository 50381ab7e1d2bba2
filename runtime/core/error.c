/* core/error.c: status names and the per-thread last-error message. */
#include "em_core.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_msg[1024];
static _Thread_local em_status last_status = EM_OK;
static _Thread_local uint64_t error_count; /* em_set_error calls on this thread */

const char *em_status_str(em_status s) {
  switch (s) {
  case EM_OK: return "EM_OK";
  case EM_ERR_INVALID: return "EM_ERR_INVALID";
  case EM_ERR_NOMEM: return "EM_ERR_NOMEM";
  case EM_ERR_IO: return "EM_ERR_IO";
  case EM_ERR_FORMAT: return "EM_ERR_FORMAT";
  case EM_ERR_UNSUPPORTED: return "EM_ERR_UNSUPPORTED";
  case EM_ERR_STATE: return "EM_ERR_STATE";
  case EM_ERR_BACKEND: return "EM_ERR_BACKEND";
  case EM_ERR_TIMEOUT: return "EM_ERR_TIMEOUT";
  case EM_ERR_COMM: return "EM_ERR_COMM";
  }
  return "EM_ERR_UNKNOWN";
}

const char *em_last_error(void) { return last_msg; }
em_status em_last_status(void) { return last_status; }

void em_clear_error(void) {
  last_msg[0] = '\0';
  last_status = EM_OK;
}

uint64_t em__error_count(void) { return error_count; }

em_status em_set_error(em_status s, const char *fmt, ...) {
  error_count++;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_msg, sizeof last_msg, fmt, ap);
  va_end(ap);
  last_status = s;
  return s;
}
