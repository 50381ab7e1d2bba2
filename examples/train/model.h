/* model.h: ember-train's model zoo and data: the model named by the config, the Fashion-MNIST
 * loaders (with augmentation for training, an exact loader for evaluation) and test accuracy. */
#ifndef EMBER_TRAIN_MODEL_H
#define EMBER_TRAIN_MODEL_H

#include "ember.h"
#include "options.h"

/* The model o describes, drawing its initial weights from the default generator (seed it first).
 * mlp: em_mlp's layers, with a dropout layer after each hidden ReLU when o->dropout > 0 (drawing
 * its masks from the default generator, so that a checkpoint of that generator restores them).
 * cnn: em_small_cnn(1, 28, 28, 10). Caller frees. NULL with the error set. */
em_module *train_model_new(const train_opts *o);

/* The datasets and loaders of a job (one rank's view). */
typedef struct {
  dl_dataset *train_set, *test_set;
  dl_loader *train, *test;
  int64_t height, width; /* image size (augmentation) */
  bool flip;
  int64_t crop_pad;
} train_data;

/* Opens o->data_dir's training and test sets (images (1, 28, 28) for the cnn, flat for the mlp)
 * and their loaders: training shuffled with seed o->seed and augmented as configured; test exact
 * (every image on one rank). EM_OK or an error naming the file. train_data_close frees. */
em_status train_data_open(train_data *d, const train_opts *o);
void train_data_close(train_data *d);

/* Test accuracy of model over d->test, summed over the ranks (collective). -1 on error. */
double train_accuracy(em_module *model, train_data *d);

#endif
