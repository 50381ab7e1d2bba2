/* metrics.h: ember-train's metrics files, progress display and plot (rank 0 only).
 *
 *   dir/metrics.csv    step,epoch,loss,lr,samples_per_s,EVAL       one row per optimizer step
 *   dir/metrics.jsonl  {"step":1,"epoch":1,"loss":2.30,...}         the same rows as JSON lines
 *   dir/curves.png     loss and the evaluation against the step     (gnuplot, when installed)
 *
 * loss is the step's training loss averaged over the ranks; EVAL (test_acc for classifiers,
 * val_loss for language models) is empty (null) except on the step after which the held-out set
 * was evaluated. Values are printed with enough digits to read
 * back the same float, so that a resumed run can be compared with an uninterrupted one exactly. */
#ifndef EMBER_TRAIN_METRICS_H
#define EMBER_TRAIN_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "em_core.h"

typedef struct train_metrics train_metrics;

/* Opens dir's metrics files (creating dir): afresh when keep_upto < 0; else keeping the rows with
 * step <= keep_upto (a resumed run then reads as one uninterrupted run). eval names the last
 * column ("test_acc", "val_loss"; a static string). NULL with the error set. */
train_metrics *train_metrics_open(const char *dir, int64_t keep_upto, const char *eval);
/* One row; eval < 0 means none. Buffered: train_metrics_flush writes it out. */
em_status train_metrics_row(train_metrics *m, int64_t step, int64_t epoch, double loss, double lr,
                            double samples_per_s, double eval);
em_status train_metrics_flush(train_metrics *m);
/* Writes dir/curves.png with gnuplot (its messages go to dir/gnuplot.log); total_steps sets the
 * smoothing. Returns false (with a note printed) when gnuplot is not installed or failed: that is
 * not an error of the job. */
bool train_metrics_plot(train_metrics *m, int64_t total_steps);
void train_metrics_close(train_metrics *m); /* NULL is fine */

/* Creates dir and its parents (mkdir -p). */
em_status train_mkdirs(const char *dir);

#endif
