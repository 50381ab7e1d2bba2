/* core/timeline.c: Chrome trace writer (see em_timeline.h). */
#include "em_timeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct em_timeline {
  FILE *f;
  int pid;
  double t0; /* trace time zero */
};

static em_timeline *current;

double em_timeline_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

em_timeline *em_timeline_open(const char *path, int rank) {
  char name[4096];
  size_t k = 0;
  for (const char *p = path; *p && k + 12 < sizeof name; p++) {
    if (p[0] == '%' && p[1] == 'r') {
      k += (size_t)snprintf(name + k, sizeof name - k, "%d", rank);
      p++;
    } else {
      name[k++] = *p;
    }
  }
  name[k] = '\0';
  em_timeline *tl = calloc(1, sizeof *tl);
  if (!tl) {
    em_set_error(EM_ERR_NOMEM, "timeline: out of memory");
    return NULL;
  }
  tl->f = fopen(name, "w");
  if (!tl->f) {
    em_set_error(EM_ERR_IO, "timeline: cannot write %s", name);
    free(tl);
    return NULL;
  }
  tl->pid = rank;
  tl->t0 = em_timeline_now();
  fprintf(tl->f,
          "[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"rank %d\"}}",
          rank, rank);
  fprintf(tl->f,
          ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":"
          "\"compute\"}}",
          rank);
  fprintf(tl->f,
          ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":1,\"args\":{\"name\":"
          "\"communication\"}}",
          rank);
  fflush(tl->f);
  return tl;
}

/* Names are ours (parameter names, fixed strings): escape quotes and backslashes anyway. */
static void put_name(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    if ((unsigned char)*s >= 0x20) fputc(*s, f);
  }
  fputc('"', f);
}

void em_timeline_span(em_timeline *tl, const char *name, const char *cat, int tid, double t0,
                      double t1) {
  if (!tl) return;
  fputs(",\n{\"name\":", tl->f);
  put_name(tl->f, name);
  fprintf(tl->f, ",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f}",
          cat, tl->pid, tid, (t0 - tl->t0) * 1e6, (t1 - t0) * 1e6);
}

void em_timeline_instant(em_timeline *tl, const char *name, const char *cat, int tid, double t) {
  if (!tl) return;
  fputs(",\n{\"name\":", tl->f);
  put_name(tl->f, name);
  fprintf(tl->f, ",\"cat\":\"%s\",\"ph\":\"i\",\"s\":\"t\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f}", cat,
          tl->pid, tid, (t - tl->t0) * 1e6);
}

void em_timeline_flush(em_timeline *tl) {
  if (tl) fflush(tl->f);
}

void em_timeline_close(em_timeline *tl) {
  if (!tl) return;
  fputs("\n]\n", tl->f);
  fclose(tl->f);
  if (current == tl) current = NULL;
  free(tl);
}

em_timeline *em_timeline_current(void) { return current; }
void em_timeline_set_current(em_timeline *tl) { current = tl; }
