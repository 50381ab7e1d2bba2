/* fuzz_seeds OUT SOURCE_DIR: writes the harnesses' seed corpora, OUT/<harness>/<name>, with
 * Ember's own writers where it has them (em_ckpt_write, dl_tokens_write, train_opts_print,
 * dl_state_save) and by the format's layout where it has none (IDX: Ember only reads it; gzip
 * through zlib). SOURCE_DIR's examples/configs/ YAML files are copied in as config seeds too. */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "dl.h"
#include "em_checkpoint.h"
#include "em_config.h"
#include "loader_state.h"
#include "options.h"

static const char *out_dir;

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_seeds: %s: %s\n", what, em_last_error());
    exit(1);
  }
}

/* OUT/harness/name (the directory made if needed); returns a static buffer. */
static const char *seed_path(const char *harness, const char *name) {
  static char path[1024];
  snprintf(path, sizeof path, "%s/%s", out_dir, harness);
  mkdir(out_dir, 0755);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/%s/%s", out_dir, harness, name);
  return path;
}

static void write_seed(const char *harness, const char *name, const void *data, size_t n) {
  const char *path = seed_path(harness, name);
  FILE *f = fopen(path, "wb");
  check(f && fwrite(data, 1, n, f) == n && fclose(f) == 0, path);
}

/* The whole of a file (caller frees). */
static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  check(f != NULL, path);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  rewind(f);
  unsigned char *buf = malloc(*n + 1);
  check(buf && fread(buf, 1, *n, f) == *n, path);
  fclose(f);
  return buf;
}

/* harness's seed `name`: a one-byte prefix, then the file at path. */
static void seed_from_file(const char *harness, const char *name, unsigned char prefix,
                           const char *path) {
  size_t n;
  unsigned char *body = slurp(path, &n);
  unsigned char *buf = malloc(n + 1);
  buf[0] = prefix;
  memcpy(buf + 1, body, n);
  write_seed(harness, name, buf, n + 1);
  free(buf);
  free(body);
}

static void config_seeds(const char *src) {
  char pattern[1024];
  snprintf(pattern, sizeof pattern, "%s/examples/configs/*.yaml", src);
  glob_t g;
  if (glob(pattern, 0, NULL, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) {
      size_t n;
      unsigned char *buf = slurp(g.gl_pathv[i], &n);
      write_seed("config", strrchr(g.gl_pathv[i], '/') + 1, buf, n);
      free(buf);
    }
    globfree(&g);
  }
  /* every key with its default and doc comment, as --print-config writes them */
  static const char *const overrides[][3] = {
      {"model.name=mlp", NULL},
      {"model.name=gpt", "data.dataset=tokens", "data.path=shard_*.bin"},
      {"model.name=cnn", "optim.name=adamw", "optim.schedule=cosine"},
  };
  for (size_t k = 0; k < sizeof overrides / sizeof overrides[0]; k++) {
    em_config *c = em_config_parse("", "seed");
    check(c != NULL, "em_config_parse");
    for (int i = 0; i < 3 && overrides[k][i]; i++)
      check(em_config_override(c, overrides[k][i]) == EM_OK, overrides[k][i]);
    train_opts o;
    check(train_opts_read(c, &o) == EM_OK, "train_opts_read");
    char name[32];
    snprintf(name, sizeof name, "printed-%zu.yaml", k);
    FILE *f = fopen(seed_path("config", name), "w");
    check(f != NULL, name);
    train_opts_print(&o, f);
    fclose(f);
    em_config_free(c);
  }
}

static void ckpt_seeds(void) {
  em_ckpt *c = em_ckpt_new();
  em_tensor *w = em_empty(EM_F32, EM_SHAPE(2, 3));
  em_tensor *b = em_empty(EM_I64, EM_SHAPE(3));
  em_tensor *h = em_empty(EM_F16, EM_SHAPE(2, 2));
  em_tensor *s = em_empty(EM_U8, 0, NULL);
  for (int i = 0; i < 6; i++) em_set(w, i, 0.5 * i - 1);
  for (int i = 0; i < 3; i++) em_set(b, i, i * 1000);
  for (int i = 0; i < 4; i++) em_set(h, i, i);
  em_set(s, 0, 7);
  check(em_ckpt_add(c, "model.0.weight", w) == EM_OK && em_ckpt_add(c, "model.0.bias", b) == EM_OK,
        "em_ckpt_add");
  check(em_ckpt_set_meta_i64(c, "step", 12) == EM_OK &&
            em_ckpt_set_meta_u64(c, "loader.seed", 42) == EM_OK &&
            em_ckpt_set_meta(c, "loss.sum", "0x1.8p+1") == EM_OK,
        "em_ckpt_set_meta");
  check(em_ckpt_write(c, seed_path("ckpt", "two-tensors.safetensors")) == EM_OK, "em_ckpt_write");
  check(em_ckpt_add(c, "half", h) == EM_OK && em_ckpt_add(c, "scalar", s) == EM_OK, "em_ckpt_add");
  check(em_ckpt_write(c, seed_path("ckpt", "four-dtypes.safetensors")) == EM_OK, "em_ckpt_write");
  em_ckpt_free(c);
  c = em_ckpt_new();
  check(em_ckpt_write(c, seed_path("ckpt", "empty.safetensors")) == EM_OK, "em_ckpt_write");
  em_ckpt_free(c);
  em_release(w);
  em_release(b);
  em_release(h);
  em_release(s);
}

/* An IDX u8 file of the given dims, element i = i * 7 mod 256: fz_idx's seeds as is (prefix 0),
 * to be gzipped by the harness (prefix 1), and gzipped here (prefix 0, the .gz file's bytes). */
static void idx_seed(const char *name, int ndim, const uint32_t *dims) {
  size_t n = 1, hdr = 4 + 4 * (size_t)ndim;
  for (int d = 0; d < ndim; d++) n *= dims[d];
  unsigned char *buf = malloc(1 + hdr + n);
  unsigned char *p = buf + 1;
  p[0] = p[1] = 0;
  p[2] = 0x08;
  p[3] = (unsigned char)ndim;
  for (int d = 0; d < ndim; d++)
    for (int k = 0; k < 4; k++) p[4 + 4 * d + k] = (unsigned char)(dims[d] >> (24 - 8 * k));
  for (size_t i = 0; i < n; i++) p[hdr + i] = (unsigned char)(i * 7);
  char fname[64];
  buf[0] = 0;
  snprintf(fname, sizeof fname, "%s-plain", name);
  write_seed("idx", fname, buf, 1 + hdr + n);
  buf[0] = 1;
  snprintf(fname, sizeof fname, "%s-to-gzip", name);
  write_seed("idx", fname, buf, 1 + hdr + n);
  /* a real .gz file, its bytes as the input */
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s/idx-tmp.gz", out_dir);
  gzFile gz = gzopen(tmp, "wb");
  check(gz && gzwrite(gz, p, (unsigned)(hdr + n)) == (int)(hdr + n) && gzclose(gz) == Z_OK, tmp);
  snprintf(fname, sizeof fname, "%s-gz", name);
  seed_from_file("idx", fname, 0, tmp);
  remove(tmp);
  free(buf);
}

static void tokens_seeds(void) {
  uint16_t tok[300];
  for (int i = 0; i < 300; i++) tok[i] = (uint16_t)(i * 977 % 50257);
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s/tokens-tmp.bin", out_dir);
  static const int64_t counts[] = {300, 17, 2};
  static const unsigned char windows[] = {15, 3, 0}; /* T - 1 */
  for (int k = 0; k < 3; k++) {
    check(dl_tokens_write(tmp, tok, counts[k]) == EM_OK, "dl_tokens_write");
    char name[32];
    snprintf(name, sizeof name, "shard-%lld", (long long)counts[k]);
    seed_from_file("tokens", name, windows[k], tmp);
  }
  remove(tmp);
}

/* Loader states as dl_state_save leaves them after a few batches, with their loader. */
static void loader_state_seeds(void) {
  static const fz_loader_input loaders[] = {
      {.len = 99, .batch = 7, .world = 1, .rank = 0, .flags = 1}, /* 100 samples, shuffled */
      {.len = 9, .batch = 3, .world = 2, .rank = 1, .flags = 0},  /* 10, 3 ranks, in order */
      {.len = 49, .batch = 4, .world = 3, .rank = 2, .flags = 3}, /* drop_last */
  };
  for (size_t k = 0; k < sizeof loaders / sizeof loaders[0]; k++) {
    fz_loader_input in = loaders[k];
    int64_t n = 1 + in.len % 200;
    em_tensor *x = em_zeros(EM_I64, EM_SHAPE(n));
    dl_dataset *d = dl_memory_new(&x, NULL, 1);
    em_release(x);
    int world = 1 + in.world % 4;
    dl_loader *l = dl_loader_new(d, &(dl_options){.batch = 1 + in.batch % 16,
                                                  .shuffle = in.flags & 1,
                                                  .drop_last = in.flags & 2,
                                                  .seed = 1234,
                                                  .rank = in.rank % world,
                                                  .world = world});
    check(l != NULL, "dl_loader_new");
    dl_batch b;
    for (size_t i = 0; i < 2 + k && dl_next(l, &b); i++) {
    }
    dl_state s = dl_state_save(l);
    in.seed = s.seed;
    in.epoch = s.epoch;
    in.position = s.position;
    in.dataset_len = s.dataset_len;
    in.state_shuffle = s.shuffle;
    char name[32];
    snprintf(name, sizeof name, "state-%zu", k);
    write_seed("loader_state", name, &in, sizeof in);
    dl_loader_free(l);
    dl_dataset_close(d);
  }
}

static void text_seed(const char *harness, const char *name, const char *words, const char *file) {
  size_t nw = strlen(words), nf = file ? strlen(file) : 0;
  char *buf = malloc(nw + 1 + nf);
  memcpy(buf, words, nw);
  buf[nw] = 0;
  if (file) memcpy(buf + nw + 1, file, nf);
  write_seed(harness, name, buf, file ? nw + 1 + nf : nw);
  free(buf);
}

static void command_line_seeds(void) {
  text_seed("ddprun_args", "nproc", "-n\n2\n--timeout\n20\n./prog\n--its-own\n", NULL);
  text_seed("ddprun_args", "hosts", "--hosts\nh1:2,h2:2,node-3\n-t\n1\n--bind\ncore\n--\nprog", NULL);
  text_seed("ddprun_args", "hostfile", "--hostfile\nhf\n-n\nauto\n--max-restarts\n1\nprog",
            "# nodes\nh1 slots=2\nh2:4 max_slots=8\n\nh3\n");
  text_seed("ddprun_args", "mpi-args",
            "--mpi-args\n--mca btl self,vader -x FOO\n--launcher\nmpirun\n--log-dir\nlogs\n--tee\n"
            "prog",
            NULL);
  text_seed("ddprun_args", "config", "-c\njob.yaml\n--dry-run\ntrain.epochs=1\noptim.lr=0.1", NULL);
  text_seed("ddprun_args", "help", "--help", NULL);
  static const char yaml[] = "model:\n  name: mlp\n  hidden: [64, 32]\ntrain:\n  epochs: 2\n"
                             "  batch: 32\noptim:\n  name: sgd\n  lr: 0.05\n";
  text_seed("train_args", "file-overrides", "job.yaml\noptim.lr=0.1\ntrain.epochs=1", yaml);
  text_seed("train_args", "print-config", "--print-config\nmodel.name=cnn\noptim.name=adam", NULL);
  text_seed("train_args", "print-file", "--print-config\njob.yaml\nddp.compression=fp16", yaml);
  text_seed("train_args", "help", "--help", NULL);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: fuzz_seeds OUT_DIR SOURCE_DIR\n");
    return 2;
  }
  out_dir = argv[1];
  config_seeds(argv[2]);
  ckpt_seeds();
  idx_seed("images-3x4x4", 3, (const uint32_t[]){3, 4, 4});
  idx_seed("labels-5", 1, (const uint32_t[]){5});
  tokens_seeds();
  loader_state_seeds();
  command_line_seeds();
  return 0;
}
