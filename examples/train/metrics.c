/* metrics.c: ember-train's metrics files and their plot (metrics.h). Resuming filters the files
 * to the rows up to the checkpoint's step through a temporary file and a rename, so that a crash
 * while filtering leaves the old file whole. */
#include "metrics.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CSV_COLUMNS "step,epoch,loss,lr,samples_per_s," /* then the evaluation's name */

struct train_metrics {
  char *dir;
  char csv_path[PATH_MAX], jsonl_path[PATH_MAX];
  FILE *csv, *jsonl;
  const char *eval; /* "test_acc", "val_loss" */
  char header[128]; /* CSV_COLUMNS + eval */
};

em_status train_mkdirs(const char *dir) {
  char p[PATH_MAX];
  if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
    return em_set_error(EM_ERR_INVALID, "%s: path too long", dir);
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s) continue;
    char c = *s;
    *s = '\0';
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
      return em_set_error(EM_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
    *s = c;
    if (!c) break;
  }
  struct stat sb;
  if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return em_set_error(EM_ERR_IO, "%s: not a directory", p);
  return EM_OK;
}

/* Rewrites path keeping the lines whose step (parsed by step_of; -1: not a row) is <= upto, and
 * a CSV header line if header is given. A missing file is fine. */
static em_status keep_rows(const char *path, int64_t upto, const char *header,
                           int64_t (*step_of)(const char *line)) {
  FILE *in = fopen(path, "r");
  if (!in)
    return errno == ENOENT ? EM_OK : em_set_error(EM_ERR_IO, "%s: %s", path, strerror(errno));
  char tmp[PATH_MAX + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *out = fopen(tmp, "w");
  if (!out) {
    fclose(in);
    return em_set_error(EM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
  }
  if (header) fprintf(out, "%s\n", header);
  char line[4096];
  while (fgets(line, sizeof line, in)) {
    int64_t s = step_of(line);
    if (s >= 0 && s <= upto && strchr(line, '\n')) fputs(line, out);
  }
  bool bad = ferror(in) || fflush(out) != 0 || ferror(out);
  fclose(in);
  if (fclose(out) != 0 || bad || rename(tmp, path) != 0) {
    remove(tmp);
    return em_set_error(EM_ERR_IO, "%s: cannot rewrite: %s", path, strerror(errno));
  }
  return EM_OK;
}

static int64_t csv_step(const char *line) {
  char *end;
  long long s = strtoll(line, &end, 10);
  return end != line && *end == ',' ? s : -1;
}

static int64_t jsonl_step(const char *line) {
  long long s;
  return sscanf(line, "{\"step\":%lld,", &s) == 1 ? s : -1;
}

train_metrics *train_metrics_open(const char *dir, int64_t keep_upto, const char *eval) {
  train_metrics *m = calloc(1, sizeof *m);
  if (!m || !(m->dir = strdup(dir))) {
    free(m);
    em_set_error(EM_ERR_NOMEM, "metrics: out of memory");
    return NULL;
  }
  m->eval = eval;
  snprintf(m->header, sizeof m->header, CSV_COLUMNS "%s", eval);
  snprintf(m->csv_path, sizeof m->csv_path, "%s/metrics.csv", dir);
  snprintf(m->jsonl_path, sizeof m->jsonl_path, "%s/metrics.jsonl", dir);
  em_status st = train_mkdirs(dir);
  if (st == EM_OK && keep_upto >= 0) {
    st = keep_rows(m->csv_path, keep_upto, m->header, csv_step);
    if (st == EM_OK) st = keep_rows(m->jsonl_path, keep_upto, NULL, jsonl_step);
  }
  const char *mode = keep_upto >= 0 ? "a" : "w";
  if (st == EM_OK && !(m->csv = fopen(m->csv_path, mode)))
    st = em_set_error(EM_ERR_IO, "%s: cannot open: %s", m->csv_path, strerror(errno));
  if (st == EM_OK && !(m->jsonl = fopen(m->jsonl_path, mode)))
    st = em_set_error(EM_ERR_IO, "%s: cannot open: %s", m->jsonl_path, strerror(errno));
  if (st == EM_OK && ftell(m->csv) == 0) fprintf(m->csv, "%s\n", m->header);
  if (st != EM_OK) {
    train_metrics_close(m);
    return NULL;
  }
  return m;
}

em_status train_metrics_row(train_metrics *m, int64_t step, int64_t epoch, double loss, double lr,
                            double samples_per_s, double eval) {
  /* %.9g reads back as the same float: resumed and uninterrupted runs compare exactly */
  fprintf(m->csv, "%lld,%lld,%.9g,%.9g,%.1f,", (long long)step, (long long)epoch, loss, lr,
          samples_per_s);
  if (eval >= 0) fprintf(m->csv, "%.4f", eval);
  fputc('\n', m->csv);
  fprintf(m->jsonl,
          "{\"step\":%lld,\"epoch\":%lld,\"loss\":%.9g,\"lr\":%.9g,\"samples_per_s\":%.1f,",
          (long long)step, (long long)epoch, loss, lr, samples_per_s);
  if (eval >= 0)
    fprintf(m->jsonl, "\"%s\":%.4f}\n", m->eval, eval);
  else
    fprintf(m->jsonl, "\"%s\":null}\n", m->eval);
  return ferror(m->csv) || ferror(m->jsonl)
             ? em_set_error(EM_ERR_IO, "%s: write error: %s", m->dir, strerror(errno))
             : EM_OK;
}

em_status train_metrics_flush(train_metrics *m) {
  if (fflush(m->csv) != 0 || fflush(m->jsonl) != 0)
    return em_set_error(EM_ERR_IO, "%s: write error: %s", m->dir, strerror(errno));
  return EM_OK;
}

/* True if an executable called name is on PATH. */
static bool on_path(const char *name) {
  const char *path = getenv("PATH");
  if (!path) return false;
  char buf[PATH_MAX];
  for (const char *s = path; *s;) {
    const char *e = strchr(s, ':');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n > 0 && snprintf(buf, sizeof buf, "%.*s/%s", (int)n, s, name) < (int)sizeof buf &&
        access(buf, X_OK) == 0)
      return true;
    s += n + (e != NULL);
  }
  return false;
}

/* s single-quoted for sh (quote -> '\'') or for gnuplot (quote -> ''), into buf. */
static const char *quote(const char *s, bool sh, char *buf, size_t cap) {
  size_t k = 0;
  if (sh) buf[k++] = '\'';
  for (; *s && k + 6 < cap; s++) {
    if (*s == '\'') k += (size_t)snprintf(buf + k, cap - k, "%s", sh ? "'\\'" : "'");
    buf[k++] = *s;
  }
  if (sh) buf[k++] = '\'';
  buf[k] = '\0';
  return buf;
}

bool train_metrics_plot(train_metrics *m, int64_t total_steps) {
  if (train_metrics_flush(m) != EM_OK) return false;
  if (!on_path("gnuplot")) {
    printf("note: gnuplot is not installed (Debian: gnuplot-nox): no %s/curves.png\n", m->dir);
    return false;
  }
  char cmd[3 * PATH_MAX], dir_sh[3 * PATH_MAX], dir[2 * PATH_MAX];
  snprintf(cmd, sizeof cmd, "gnuplot 2>%s/gnuplot.log", quote(m->dir, true, dir_sh, sizeof dir_sh));
  quote(m->dir, false, dir, sizeof dir);
  FILE *g = popen(cmd, "w");
  if (!g) {
    printf("note: cannot start gnuplot: %s\n", strerror(errno));
    return false;
  }
  /* the smoothed loss: an exponential moving average over about 1% of the run */
  const char *label = strcmp(m->eval, "val_loss") ? "test accuracy" : "validation loss";
  double alpha = total_steps >= 100 ? 100.0 / (double)total_steps : 1.0;
  alpha = alpha < 0.01 ? 0.01 : alpha;
  fprintf(g,
          "set terminal pngcairo size 1000,600\n"
          "set output '%s/curves.png'\n"
          "set datafile separator ','\n"
          "set termoption noenhanced\n"
          "set title 'ember-train: %s'\n"
          "set key top center\n"
          "set grid\n"
          "set xlabel 'step'\n"
          "set ylabel 'training loss'\n"
          "set y2label '%s'\n"
          "set ytics nomirror\n"
          "set y2tics\n"
          "ema = -1\n"
          "smooth(x) = (ema = ema < 0 ? x : (1 - %g) * ema + %g * x)\n"
          "plot '%s/metrics.csv' using 1:3 skip 1 with lines lc rgb '#c0c0e0' "
          "title 'loss per step', \\\n"
          "     '' using 1:(smooth($3)) skip 1 with lines lw 2 lc rgb '#2040a0' "
          "title 'loss (moving average)', \\\n"
          "     '' using 1:6 skip 1 axes x1y2 with linespoints pt 7 lw 2 lc rgb '#c03020' "
          "title '%s'\n",
          dir, dir, label, alpha, alpha, dir, label);
  int rc = pclose(g);
  if (rc != 0) {
    printf("note: gnuplot failed (status %d, see %s/gnuplot.log): no curves.png\n", rc, m->dir);
    return false;
  }
  return true;
}

void train_metrics_close(train_metrics *m) {
  if (!m) return;
  if (m->csv) fclose(m->csv);
  if (m->jsonl) fclose(m->jsonl);
  free(m->dir);
  free(m);
}
