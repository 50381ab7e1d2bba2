/* model.h: ember-train's model zoo and data: the model named by the config, the Fashion-MNIST
 * loaders (with augmentation for training, an exact loader for evaluation) and test accuracy. */
#ifndef EMBER_TRAIN_MODEL_H
#define EMBER_TRAIN_MODEL_H

#include "ember.h"
#include "options.h"

/* The model o describes, drawing its initial weights from the default generator (seed it first).
 * mlp: em_mlp's layers, with a dropout layer after each hidden ReLU when o->dropout > 0 (drawing
 * its masks from the default generator, so that a checkpoint of that generator restores them).
 * cnn: em_small_cnn(1, 28, 28, 10). resnet_cifar: em_resnet_cifar(depth, 1, 10). resnet18:
 * em_resnet18(10, 1). char_rnn: em_char_rnn(vocab, width, layers). gpt: em_gpt with block_size
 * seq_len. Caller frees. NULL with the error set. */
em_module *train_model_new(const train_opts *o);

/* The datasets and loaders of a job (one rank's view). For language models test_set is the
 * validation set (NULL for tokens without data.val_path). */
typedef struct {
  dl_dataset *train_set, *test_set;
  dl_loader *train, *test;
  int64_t height, width; /* image size (augmentation) */
  bool flip;
  int64_t crop_pad;
  double unigram_bits; /* text: the training text's unigram entropy, bits per byte; else -1 */
} train_data;

/* Opens the job's data and loaders. Images (o->data_dir): training and test sets ((1, 28, 28) for
 * the convnets, flat for the mlp); training shuffled with seed o->seed and augmented as
 * configured; test exact (every image on one rank). Language models (lm.c): windows of seq_len+1
 * tokens of o->data_path, shuffled; validation exact. EM_OK or an error naming the file.
 * train_data_close frees. */
em_status train_data_open(train_data *d, const train_opts *o);
em_status train_lm_data_open(train_data *d, const train_opts *o);
void train_data_close(train_data *d);

/* The training loss of batch b: cross-entropy of the images' logits against their labels, or of
 * a language model's next-token logits (inputs tokens [0, T), targets [1, T]). Scope-owned
 * scalar; NULL with the error set. */
em_tensor *train_loss(em_module *model, const train_opts *o, const dl_batch *b);

/* Sums v[0..n) (of dtype dt) over the ranks in place (collective; nothing to do in a world of
 * 1). */
em_status train_sum_over_ranks(void *v, int n, em_dtype dt);

/* Test accuracy of model over d->test, summed over the ranks (collective). -1 on error. */
double train_accuracy(em_module *model, train_data *d);
/* Mean validation cross-entropy (nats per token) of a language model over d->test, over the
 * ranks (collective); -1 on error, NAN when there is no validation set. */
double train_val_loss(em_module *model, const train_opts *o, train_data *d);
/* Rank 0: n tokens sampled from a language model at o->temperature after a prompt (the start of
 * the validation text, or of the training text), printed to f (bytes as text for data.dataset
 * text, token ids for tokens). Draws from its own generator seeded by o->seed. */
em_status train_sample(em_module *model, const train_opts *o, train_data *d, int64_t n, FILE *f);

#endif
