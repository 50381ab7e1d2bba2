/* test_checkpoint.c: safetensors checkpoints (em_checkpoint.h).
 *
 *   - round trip: an MLP + AdamW after 3 steps, written, read into a model and optimizer built
 *     from another seed: every parameter and state tensor bit-equal, and one more step gives the
 *     same loss and parameters bit for bit; metadata (strings, i64, u64 above 2^53) round-trips;
 *   - interop: Debian's python3 reads the file with json + numpy only (checking the safetensors
 *     rules: no holes, no trailing bytes, aligned tensors) and prints per-tensor sums, first and
 *     last values, compared with C; and python writes a file (with holes and odd alignment) that
 *     em_ckpt_read loads;
 *   - malformed files (truncated data or header, header length past the end, invalid JSON, bad
 *     offsets, sizes, dtypes, overlaps, metadata): NULL and a message naming the path and fault;
 *   - loading a different model: every difference listed with both shapes, nothing changed;
 *   - crash safety: saves SIGKILLed at many moments never leave "latest" at a partial file.
 * Directories, unwritable destinations and a full disk: test_checkpoint_dir.c. */
#include "ckpt_test.h"

/* ---- round trip -------------------------------------------------------------------------- */
Test(checkpoint, round_trip_restores_the_run_bit_for_bit) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), path[512];
  tu_path(path, dir, "rt.safetensors");
  em_module *a = make_mlp(1, 16);
  em_optim *oa = make_adamw(a);
  for (int s = 0; s < 3; s++) train_step(a, oa, s);
  cr_assert_eq(em_optim_set_lr(oa, 0.00731), EM_OK); /* not the constructor's: must be restored */

  em_ckpt *c = em_ckpt_new();
  cr_assert_eq(em_ckpt_add_module(c, "model.", a), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_ckpt_add_optim(c, "optim.", oa), EM_OK, "%s", em_last_error());
  const char *text = "MLP \"8-16-12-4\"\\ tab\there, newline\nand \xc3\xa9t\xc3\xa9";
  cr_assert_eq(em_ckpt_set_meta(c, "note", "replaced below"), EM_OK);
  cr_assert_eq(em_ckpt_set_meta(c, "note", text), EM_OK);
  cr_assert_eq(em_ckpt_set_meta_i64(c, "neg", -1234567890123LL), EM_OK);
  cr_assert_eq(em_ckpt_set_meta_i64(c, "min", INT64_MIN), EM_OK);
  cr_assert_eq(em_ckpt_set_meta_u64(c, "seed", (1ULL << 53) + 1), EM_OK);
  cr_assert_eq(em_ckpt_set_meta_u64(c, "max", UINT64_MAX), EM_OK);
  cr_assert_eq(em_ckpt_set_meta_i64(c, "step", 3), EM_OK);
  /* 6 parameters and 13 optimizer tensors (12 moments + param_steps). */
  cr_assert_eq(em_ckpt_count(c), 6 + 13);
  cr_assert_str_eq(em_ckpt_name_at(c, 0), "model.0.weight");
  cr_assert_eq(em_ckpt_get(c, "model.2.bias"), em_module_get(a, "2.bias"), "borrowed, not copied");
  cr_assert_eq(em_ckpt_write(c, path), EM_OK, "%s", em_last_error());

  em_ckpt *r = em_ckpt_read(path);
  cr_assert_not_null(r, "%s", em_last_error());
  cr_assert_eq(em_ckpt_count(r), em_ckpt_count(c));
  for (int i = 0; i < em_ckpt_count(c); i++) {
    const char *name = em_ckpt_name_at(c, i);
    cr_assert_str_eq(em_ckpt_name_at(r, i), name, "header order is the order added");
    cr_assert(same_bits(em_ckpt_get(r, name), em_ckpt_get(c, name)), "%s differs", name);
  }
  cr_assert_str_eq(em_ckpt_meta(r, "note"), text);
  cr_assert_str_eq(em_ckpt_meta(r, "optim.name"), "AdamW");
  int64_t i64;
  uint64_t u64;
  cr_assert_eq(em_ckpt_meta_i64(r, "neg", &i64), EM_OK);
  cr_assert_eq(i64, -1234567890123LL);
  cr_assert_eq(em_ckpt_meta_i64(r, "min", &i64), EM_OK);
  cr_assert_eq(i64, INT64_MIN);
  cr_assert_eq(em_ckpt_meta_u64(r, "seed", &u64), EM_OK);
  cr_assert_eq(u64, (1ULL << 53) + 1);
  cr_assert_eq(em_ckpt_meta_u64(r, "max", &u64), EM_OK);
  cr_assert_eq(u64, UINT64_MAX);
  cr_assert_eq(em_ckpt_meta_i64(r, "optim.step", &i64), EM_OK);
  cr_assert_eq(i64, 3);
  /* Lookups that fail. */
  cr_assert_null(em_ckpt_get(r, "model.9.weight"));
  cr_assert_null(em_ckpt_meta(r, "nope"));
  cr_assert_eq(em_ckpt_meta_i64(r, "nope", &i64), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "'nope'"), "%s", em_last_error());
  cr_assert_eq(em_ckpt_meta_i64(r, "note", &i64), EM_ERR_FORMAT);
  cr_assert(strstr(em_last_error(), "'note'") && strstr(em_last_error(), "not an i64"));
  cr_assert_eq(em_ckpt_meta_u64(r, "neg", &u64), EM_ERR_FORMAT, "a negative u64 is refused");
  cr_assert_eq(em_ckpt_meta_i64(r, "max", &i64), EM_ERR_FORMAT, "an i64 overflow is refused");

  /* A fresh model and optimizer from another seed, restored from the file. */
  em_module *b = make_mlp(2, 16);
  em_optim *ob = make_adamw(b);
  cr_assert(!same_bits(em_module_tensor_at(a, 0), em_module_tensor_at(b, 0)), "seeds differ");
  cr_assert_eq(em_ckpt_load_module(r, "model.", b), EM_OK, "%s", em_last_error());
  cr_assert_eq(em_ckpt_load_optim(r, "optim.", ob), EM_OK, "%s", em_last_error());
  assert_params_equal(a, b, "restored");
  for (int i = 0; i < em_optim_num_state(oa); i++) {
    const char *name;
    em_tensor *sa = em_optim_state_at(oa, i, &name);
    cr_assert(same_bits(sa, em_optim_state(ob, name)), "state %s differs", name);
  }
  cr_assert_eq(em_optim_step_count(ob), 3);
  cr_assert(em_optim_lr(ob) == 0.00731, "lr %.17g", em_optim_lr(ob));
  em_ckpt_free(r);

  /* One more step on each: the same loss and parameters, bit for bit. */
  float la = train_step(a, oa, 3), lb = train_step(b, ob, 3);
  cr_assert(!memcmp(&la, &lb, sizeof la), "loss %.9g vs %.9g", la, lb);
  assert_params_equal(a, b, "after one more step");
  cr_assert_eq(em_optim_step_count(ob), 4);

  em_ckpt_free(c);
  em_optim_free(oa);
  em_optim_free(ob);
  em_module_free(a);
  em_module_free(b);
  tu_rm_rf(dir);
  TU_END;
}

Test(checkpoint, building_errors) {
  TU_BEGIN;
  em_ckpt *c = em_ckpt_new();
  em_tensor *t = tu_ramp(EM_SHAPE(2, 3), 1, 0);
  cr_assert_eq(em_ckpt_add(c, "t", t), EM_OK);
  cr_assert_eq(em_ckpt_add(c, "t", t), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "already holds a tensor 't'"), "%s", em_last_error());
  cr_assert_eq(em_ckpt_add(c, "__metadata__", t), EM_ERR_INVALID);
  cr_assert_eq(em_ckpt_add(c, "u", NULL), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "'u'"), "%s", em_last_error());
  /* A strided tensor is copied when added: contiguous, its values in logical order, a snapshot. */
  em_tensor *tt = em_transpose(t, 0, 1);
  cr_assert_eq(em_ckpt_add(c, "tt", tt), EM_OK, "%s", em_last_error());
  const em_tensor *kept = em_ckpt_get(c, "tt");
  cr_assert(kept && kept != tt && em_is_contiguous(kept) && kept->shape[0] == 3);
  double t01 = em_get(t, 1);
  em_set(t, 1, 99.0);
  cr_assert_eq(em_get(kept, 2), t01, "tt[1][0] = t[0][1], as it was when added");
  /* A module whose names collide with what is there: nothing of it is added. */
  em_module *m = make_mlp(3, 5);
  cr_assert_eq(em_ckpt_add(c, "m.2.bias", t), EM_OK);
  cr_assert_eq(em_ckpt_add_module(c, "m.", m), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "'m.2.bias'"), "%s", em_last_error());
  cr_assert_eq(em_ckpt_count(c), 3, "a failed add_module adds nothing");
  cr_assert_null(em_ckpt_name_at(c, 3));
  cr_assert_eq(em_ckpt_count(NULL), 0);
  em_ckpt_free(c);
  em_ckpt_free(NULL);
  em_module_free(m);
  TU_END;
}

/* ---- interop with numpy ------------------------------------------------------------------ */
static const char *py_script =
    "import json, struct, sys\n"
    "import numpy as np\n"
    "DT = {'F32': '<f4', 'I64': '<i8', 'I32': '<i4', 'U8': 'u1', 'F16': '<f2', 'BF16': '<u2'}\n"
    "raw = open(sys.argv[1], 'rb').read()\n"
    "(n,) = struct.unpack('<Q', raw[:8])\n"
    "hdr = json.loads(raw[8:8 + n])\n"
    "data = raw[8 + n:]\n"
    "meta = hdr.pop('__metadata__', {})\n"
    "assert n % 8 == 0, 'header not padded to 8'\n"
    "pos = 0\n"
    "for b, e in sorted(tuple(v['data_offsets']) for v in hdr.values()):\n"
    "    assert b == pos, ('hole or overlap at', b, pos)\n"
    "    pos = e\n"
    "assert pos == len(data), ('trailing bytes', pos, len(data))\n"
    "for name, v in hdr.items():\n"
    "    dt = np.dtype(DT[v['dtype']])\n"
    "    b, e = v['data_offsets']\n"
    "    assert b % dt.itemsize == 0, (name, 'misaligned')\n"
    "    a = np.frombuffer(data, dtype=dt, count=(e - b) // dt.itemsize, offset=b)\n"
    "    if v['dtype'] == 'BF16':\n"
    "        a = (a.astype(np.uint32) << 16).view(np.float32)\n"
    "    a = a.reshape(v['shape']).astype(np.float64)\n"
    "    shape = 'x'.join(str(d) for d in v['shape']) or '-'\n"
    "    f = repr(float(a.flat[0])) if a.size else '0.0'\n"
    "    l = repr(float(a.flat[-1])) if a.size else '0.0'\n"
    "    print(name, v['dtype'], shape, a.size, repr(float(a.sum())), f, l)\n"
    /* the checksums (crc.h), recomputed here with Python's zlib */
    "import zlib\n"
    "crcs = {k[6:]: meta.pop(k) for k in list(meta) if k.startswith('crc32.')}\n"
    "hc = crcs.pop('__header__')\n"
    "for name, v in hdr.items():\n"
    "    b, e = v['data_offsets']\n"
    "    assert '%08x' % zlib.crc32(data[b:e]) == crcs.pop(name), ('crc', name)\n"
    "assert not crcs, ('checksums of no tensor', crcs)\n"
    "def z(s): return s.encode() + b'\\0'\n"
    "text = b''.join(b'm' + z(k) + z(meta[k]) for k in sorted(meta, key=str.encode))\n"
    "for name in sorted(hdr, key=str.encode):\n"
    "    v = hdr[name]\n"
    "    text += b't' + z(name) + z(v['dtype']) + z(','.join(map(str, v['shape'])))\n"
    "    text += z('%d,%d' % tuple(v['data_offsets']))\n"
    "assert '%08x' % zlib.crc32(text) == hc, ('header crc', hc)\n"
    "print('CRC', len(hdr))\n"
    "for k in sorted(meta):\n"
    "    print('META', k, meta[k])\n"
    /* And a file written by numpy: F32 first (so the I64 after it is not 8-aligned), a hole. */
    "x = np.arange(6, dtype='<f4').reshape(2, 3) / 4\n"
    "y = np.array([-3, 1 << 40, 7], dtype='<i8')\n"
    "h = {'x': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]},\n"
    "     'y': {'dtype': 'I64', 'shape': [3], 'data_offsets': [28, 52]},\n"
    "     '__metadata__': {'from': 'numpy'}}\n"
    "j = json.dumps(h).encode()\n"
    "body = x.tobytes() + b'\\0' * 4 + y.tobytes()\n"
    "open(sys.argv[2], 'wb').write(struct.pack('<Q', len(j)) + j + body)\n";

Test(checkpoint, numpy_reads_it_and_writes_one_we_read, .timeout = 120) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), path[512], py[512], pyfile[512], cmd[2048];
  tu_path(path, dir, "interop.safetensors");
  tu_path(py, dir, "read.py");
  tu_path(pyfile, dir, "from_numpy.safetensors");
  em_module *m = make_mlp(5, 16);
  em_optim *o = make_adamw(m);
  train_step(m, o, 0);
  em_ckpt *c = em_ckpt_new();
  cr_assert_eq(em_ckpt_add_module(c, "model.", m), EM_OK);
  cr_assert_eq(em_ckpt_add_optim(c, "optim.", o), EM_OK);
  /* Every dtype, a scalar and an empty tensor; sizes that make the grouping matter. */
  em_tensor *u8 = em_empty(EM_U8, EM_SHAPE(7)), *i32 = em_empty(EM_I32, EM_SHAPE(3, 1));
  em_tensor *bf = em_empty(EM_BF16, EM_SHAPE(5)), *f16 = em_empty(EM_F16, EM_SHAPE(3, 2));
  em_tensor *i64 = em_empty(EM_I64, EM_SHAPE(3)), *sc = em_scalar(-2.5f);
  em_tensor *empty = em_empty(EM_F32, EM_SHAPE(0, 3));
  for (int i = 0; i < 7; i++) em_set(u8, i, 37 * i % 256);
  for (int i = 0; i < 3; i++) em_set(i32, i, -100000 * (i + 1) + 7);
  for (int i = 0; i < 5; i++) em_set(bf, i, (i - 2) * 0.375);
  for (int i = 0; i < 6; i++) em_set(f16, i, 1.0 / (i + 1));
  int64_t big[3] = {-5, (1LL << 40) + 3, 123};
  memcpy(em_data(i64), big, sizeof big);
  const char *names[] = {"x.u8", "x.i32", "x.bf16", "x.f16", "x.i64", "x.scalar", "x.empty"};
  em_tensor *ts[] = {u8, i32, bf, f16, i64, sc, empty};
  for (int i = 0; i < 7; i++) cr_assert_eq(em_ckpt_add(c, names[i], ts[i]), EM_OK);
  cr_assert_eq(em_ckpt_set_meta(c, "run", "interop"), EM_OK);
  cr_assert_eq(em_ckpt_write(c, path), EM_OK, "%s", em_last_error());

  write_raw(py, py_script, strlen(py_script));
  snprintf(cmd, sizeof cmd, "%s %s %s %s 2>&1", EMBER_PYTHON3, py, path, pyfile);
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p, "popen %s", cmd);
  char line[1024];
  int seen = 0;
  bool meta_seen = false, crc_seen = false;
  while (fgets(line, sizeof line, p)) {
    char name[256], dtype[16], shape[64];
    long long numel;
    double sum, first, last;
    if (!strncmp(line, "CRC ", 4)) { /* every checksum matched, for this many tensors */
      cr_assert_eq(atoi(line + 4), em_ckpt_count(c), "%s", line);
      crc_seen = true;
      continue;
    }
    if (!strncmp(line, "META ", 5)) { /* "META key value" */
      char key[64], value[256];
      cr_assert_eq(sscanf(line, "META %63s %255s", key, value), 2, "%s", line);
      cr_assert_not_null(em_ckpt_meta(c, key), "python saw metadata '%s' we did not write", key);
      cr_assert_str_eq(value, em_ckpt_meta(c, key), "metadata '%s'", key);
      meta_seen |= !strcmp(key, "run");
      continue;
    }
    cr_assert_eq(sscanf(line, "%255s %15s %63s %lld %lf %lf %lf", name, dtype, shape, &numel, &sum,
                        &first, &last),
                 7, "unexpected python output: %s", line);
    em_tensor *t = em_ckpt_get(c, name);
    cr_assert_not_null(t, "python saw a tensor '%s' we did not write", name);
    static const char *st[] = {"F32", "I64", "I32", "U8", "BF16", "F16"};
    cr_assert_str_eq(dtype, st[t->dtype], "%s", name);
    char want[64] = "";
    for (int d = 0; d < t->ndim; d++)
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "x" : "",
               (long long)t->shape[d]);
    cr_assert_str_eq(shape, t->ndim ? want : "-", "%s", name);
    int64_t n = em_numel(t);
    cr_assert_eq(numel, n, "%s", name);
    double s = 0, abs_s = 0;
    for (int64_t i = 0; i < n; i++) {
      s += em_get(t, i);
      abs_s += fabs(em_get(t, i));
    }
    cr_assert(fabs(sum - s) <= 1e-12 * abs_s, "%s: numpy sum %.17g, C %.17g", name, sum, s);
    if (n) {
      cr_assert(first == em_get(t, 0), "%s: first %.17g vs %.17g", name, first, em_get(t, 0));
      cr_assert(last == em_get(t, n - 1), "%s: last %.17g vs %.17g", name, last, em_get(t, n - 1));
    }
    seen++;
  }
  int rc = pclose(p);
  cr_assert_eq(rc, 0, "python failed (%d): last line %s", rc, line);
  cr_assert_eq(seen, em_ckpt_count(c), "python listed %d tensors of %d", seen, em_ckpt_count(c));
  cr_assert(meta_seen);
  cr_assert(crc_seen, "python found no checksums");

  /* The file numpy wrote: unaligned I64 after a 4-byte hole. */
  em_ckpt *r = em_ckpt_read(pyfile);
  cr_assert_not_null(r, "%s", em_last_error());
  cr_assert_eq(em_ckpt_count(r), 2);
  cr_assert_str_eq(em_ckpt_meta(r, "from"), "numpy");
  em_tensor *x = em_ckpt_get(r, "x"), *y = em_ckpt_get(r, "y");
  cr_assert(x && x->dtype == EM_F32 && x->ndim == 2 && x->shape[0] == 2 && x->shape[1] == 3);
  for (int i = 0; i < 6; i++) cr_assert_eq(em_data_f32(x)[i], i / 4.0f);
  cr_assert(y && y->dtype == EM_I64 && y->ndim == 1 && y->shape[0] == 3);
  int64_t want_y[3] = {-3, 1LL << 40, 7};
  cr_assert(!memcmp(em_data(y), want_y, sizeof want_y));
  em_ckpt_free(r);

  em_ckpt_free(c);
  em_optim_free(o);
  em_module_free(m);
  tu_rm_rf(dir);
  TU_END;
}

/* ---- malformed files --------------------------------------------------------------------- */
Test(checkpoint, malformed_files_are_errors_naming_path_and_fault) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), good[512], bad[512];
  tu_path(good, dir, "good.safetensors");
  tu_path(bad, dir, "bad.safetensors");
  em_ckpt *c = em_ckpt_new();
  cr_assert_eq(em_ckpt_add(c, "a", tu_ramp(EM_SHAPE(4, 3), 1, 0)), EM_OK);
  cr_assert_eq(em_ckpt_add(c, "b", em_zeros(EM_I64, EM_SHAPE(5))), EM_OK);
  cr_assert_eq(em_ckpt_set_meta(c, "k", "v"), EM_OK);
  cr_assert_eq(em_ckpt_write(c, good), EM_OK, "%s", em_last_error());
  em_ckpt_free(c);
  size_t n;
  char *bytes = read_raw(good, &n);
  uint64_t hlen = 0;
  for (int b = 7; b >= 0; b--) hlen = hlen << 8 | (unsigned char)bytes[b];
  cr_assert_eq(hlen % 8, 0, "header padded to 8");
  cr_assert_eq(n, 8 + hlen + 5 * 8 + 12 * 4, "no gaps, no trailing bytes");

  /* Cut in the data section: 'a' (the F32 tensor, laid out after the I64) runs past the end. */
  write_raw(bad, bytes, n - 5);
  assert_read_fails(bad, "tensor 'a'", "past the data section");
  /* Cut inside the header, and a header length larger than the file. */
  write_raw(bad, bytes, 20);
  assert_read_fails(bad, "byte offset 0: header length", "truncated");
  write_raw(bad, bytes, 5);
  assert_read_fails(bad, "too short", NULL);
  bytes[2] = 0x10; /* N += 2^20 */
  write_raw(bad, bytes, n);
  char needle[160];
  snprintf(needle, sizeof needle, "byte offset 0: header length %llu, but the file has %zu bytes",
           (unsigned long long)(hlen + (1 << 20)), n - 8);
  assert_read_fails(bad, needle, "file size");
  free(bytes);
  assert_read_fails("no/such/file.safetensors", "cannot open", NULL);

  float d4[4] = {1, 2, 3, 4};
  write_st(bad, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2]", d4, 16);
  assert_read_fails(bad, "invalid JSON", "byte offset");
  write_st(bad, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}} x", d4,
           16);
  assert_read_fails(bad, "unexpected data after the JSON header", NULL);
  write_st(bad, "[1, 2]", d4, 16);
  assert_read_fails(bad, "not an object", NULL);
  write_st(bad, "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}", d4, 16);
  assert_read_fails(bad, "tensor 'a': data_offsets [8, 24] end past the data section (16 bytes)",
                    NULL);
  write_st(bad, "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", d4, 16);
  assert_read_fails(bad,
                    "tensor 'a': data_offsets [0, 8] span 8 bytes, but shape (3) of F32 "
                    "needs 12",
                    NULL);
  write_st(bad, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", d4, 16);
  assert_read_fails(bad, "tensor 'a': data_offsets must be", NULL);
  write_st(bad, "{\"a\": {\"dtype\": \"F33\", \"shape\": [2], \"data_offsets\": [0, 8]}}", d4, 16);
  assert_read_fails(bad, "tensor 'a': unknown dtype 'F33'", NULL);
  write_st(bad, "{\"a\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [0, 16]}}", d4, 16);
  assert_read_fails(bad, "tensor 'a': dtype F64 is not supported", NULL);
  cr_assert_eq(em_last_status(), EM_ERR_UNSUPPORTED);
  write_st(bad, "{\"a\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", d4, 16);
  assert_read_fails(bad, "tensor 'a': shape entry 0 is not a non-negative integer", NULL);
  write_st(bad, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 8]}}", d4,
           16);
  assert_read_fails(bad, "shape entry 0", NULL);
  write_st(bad,
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], "
           "\"data_offsets\": [0, 4]}}",
           d4, 16);
  assert_read_fails(bad, "tensor 'a': shape must be an array of at most 8", NULL);
  write_st(bad,
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
           "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
           d4, 16);
  assert_read_fails(bad, "tensors 'a' [0, 8] and 'b' [4, 12] overlap", NULL);
  write_st(bad,
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
           "\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
           d4, 16);
  assert_read_fails(bad, "tensor 'a' appears twice", NULL);
  write_st(bad, "{\"__metadata__\": {\"step\": 5}}", NULL, 0);
  assert_read_fails(bad, "__metadata__ value for 'step' is not a string", NULL);
  write_st(bad, "{\"a\": 3}", NULL, 0);
  assert_read_fails(bad, "tensor 'a': expected an object", NULL);
  write_st(bad, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2]}}", d4, 16);
  assert_read_fails(bad, "tensor 'a': data_offsets must be", NULL);

  /* Accepted: an empty header object, zero-size tensors anywhere, and the good file. */
  write_st(bad, "{}", NULL, 0);
  em_ckpt *r = em_ckpt_read(bad);
  cr_assert(r && em_ckpt_count(r) == 0, "%s", em_last_error());
  em_ckpt_free(r);
  write_st(bad,
           "{\"z\": {\"dtype\": \"U8\", \"shape\": [0, 5], \"data_offsets\": [2, 2]}, "
           "\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}",
           d4, 16);
  r = em_ckpt_read(bad);
  cr_assert_not_null(r, "%s", em_last_error());
  cr_assert(!memcmp(em_data(em_ckpt_get(r, "a")), d4, 16));
  cr_assert_eq(em_numel(em_ckpt_get(r, "z")), 0);
  em_ckpt_free(r);
  r = em_ckpt_read(good);
  cr_assert_not_null(r, "%s", em_last_error());
  cr_assert_str_eq(em_ckpt_meta(r, "k"), "v");
  em_ckpt_free(r);
  tu_rm_rf(dir);
  TU_END;
}

/* ---- loading into a different model ---------------------------------------------------------- */
/* Copies of m's tensors (scope-owned) for an "unchanged" check. */
static void snapshot(em_module *m, em_tensor **out) {
  for (int i = 0; i < em_module_num_tensors(m); i++) {
    em_tensor *t = em_module_tensor_at(m, i);
    out[i] = em_from_data(t->dtype, t->ndim, t->shape, em_data(t));
  }
}

static void assert_unchanged(em_module *m, em_tensor **snap) {
  for (int i = 0; i < em_module_num_tensors(m); i++)
    cr_assert(same_bits(em_module_tensor_at(m, i), snap[i]), "%s was changed by a failed load",
              em_module_tensor_name(m, i));
}

Test(checkpoint, loading_a_different_model_lists_every_difference) {
  TU_BEGIN;
  em_module *a = make_mlp(1, 16), *b = make_mlp(2, 32);
  em_ckpt *c = em_ckpt_new();
  cr_assert_eq(em_ckpt_add_module(c, "model.", a), EM_OK);
  em_tensor *snap[8];
  snapshot(b, snap);
  em_status st = em_ckpt_load_module(c, "model.", b);
  const char *msg = em_last_error();
  cr_assert_eq(st, EM_ERR_INVALID);
  cr_assert(strstr(msg, "(3 differences"), "%s", msg);
  cr_assert(strstr(msg, "model.0.weight shape (16, 8) vs (32, 8)"), "%s", msg);
  cr_assert(strstr(msg, "model.0.bias shape (16) vs (32)"), "%s", msg);
  cr_assert(strstr(msg, "model.2.weight shape (12, 16) vs (12, 32)"), "%s", msg);
  cr_assert(!strstr(msg, "model.4"), "matching tensors are not listed: %s", msg);
  assert_unchanged(b, snap);

  /* Missing, unexpected and dtype differences (same shapes otherwise). */
  em_module *a2 = make_mlp(4, 16);
  em_ckpt *d = em_ckpt_new();
  for (int i = 0; i < em_module_num_tensors(a2); i++) {
    const char *name = em_module_tensor_name(a2, i);
    char full[128];
    snprintf(full, sizeof full, "model.%s", name);
    if (!strcmp(name, "0.bias")) continue;
    em_tensor *t = em_module_tensor_at(a2, i);
    if (!strcmp(name, "4.bias")) t = em_zeros(EM_I64, t->ndim, t->shape);
    cr_assert_eq(em_ckpt_add(d, full, t), EM_OK);
  }
  cr_assert_eq(em_ckpt_add(d, "model.extra", tu_ramp(EM_SHAPE(2), 1, 0)), EM_OK);
  cr_assert_eq(em_ckpt_add(d, "other.ignored", tu_ramp(EM_SHAPE(2), 1, 0)), EM_OK);
  snapshot(a, snap);
  cr_assert_eq(em_ckpt_load_module(d, "model.", a), EM_ERR_INVALID);
  msg = em_last_error();
  cr_assert(strstr(msg, "(3 differences"), "%s", msg);
  cr_assert(strstr(msg, "missing model.0.bias F32 (16)"), "%s", msg);
  cr_assert(strstr(msg, "model.4.bias dtype I64 vs F32"), "%s", msg);
  cr_assert(strstr(msg, "unexpected model.extra F32 (2)"), "%s", msg);
  cr_assert(!strstr(msg, "other.ignored"), "%s", msg);
  assert_unchanged(a, snap);

  /* Many differences: the message is cut with a count, never overflows. */
  int h[30];
  for (int i = 0; i < 30; i++) h[i] = 4;
  em_module *deep = em_mlp(3, h, 30, 2);
  for (int i = 0; i < 30; i++) h[i] = 5;
  em_module *deep5 = em_mlp(3, h, 30, 2);
  em_ckpt *e = em_ckpt_new();
  cr_assert_eq(em_ckpt_add_module(e, "", deep), EM_OK);
  cr_assert_eq(em_ckpt_load_module(e, "", deep5), EM_ERR_INVALID);
  msg = em_last_error();
  cr_assert(strstr(msg, "(61 differences"), "%s", msg);
  cr_assert(strstr(msg, "more"), "%s", msg);
  cr_assert_lt(strlen(msg), 1023, "the message was truncated by the error buffer");
  cr_assert_eq(msg[strlen(msg) - 1], 'e', "ends with '... and N more': %s", msg);

  /* The optimizer: wrong kind and a missing prefix. */
  em_optim *adamw = make_adamw(a), *sgd = em_sgd(em_parameters(a), .lr = 0.1, .momentum = 0.9);
  em_ckpt *f = em_ckpt_new();
  cr_assert_eq(em_ckpt_add_optim(f, "opt.", adamw), EM_OK);
  cr_assert_eq(em_ckpt_load_optim(f, "opt.", sgd), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "AdamW") && strstr(em_last_error(), "SGD"), "%s",
            em_last_error());
  cr_assert_eq(em_ckpt_load_optim(f, "optim.", adamw), EM_ERR_INVALID);
  cr_assert(strstr(em_last_error(), "no metadata key 'optim.name'"), "%s", em_last_error());
  cr_assert_eq(em_ckpt_set_meta(f, "opt.step", "three"), EM_OK);
  cr_assert_eq(em_ckpt_load_optim(f, "opt.", adamw), EM_ERR_FORMAT);
  cr_assert(strstr(em_last_error(), "'opt.step' = 'three'"), "%s", em_last_error());
  cr_assert_eq(em_optim_step_count(adamw), 0, "nothing restored");

  em_ckpt_free(c);
  em_ckpt_free(d);
  em_ckpt_free(e);
  em_ckpt_free(f);
  em_optim_free(adamw);
  em_optim_free(sgd);
  em_module_free(a);
  em_module_free(a2);
  em_module_free(b);
  em_module_free(deep);
  em_module_free(deep5);
  TU_END;
}

/* ---- crash safety ------------------------------------------------------------------------ */
#define BIG_N ((int64_t)16 << 20) /* 64 MiB of f32 */

static float pattern(int64_t step, int64_t i) { return (float)step + (float)(i % 1021) * 0.25f; }

/* Reads path completely and checks it is the checkpoint of its step. Returns that step. */
static int64_t check_big(const char *path) {
  em_ckpt *r = em_ckpt_read(path);
  cr_assert_not_null(r, "a partial or corrupt checkpoint under a final name: %s", em_last_error());
  int64_t step;
  cr_assert_eq(em_ckpt_meta_i64(r, "step", &step), EM_OK);
  em_tensor *t = em_ckpt_get(r, "big");
  cr_assert(t && em_numel(t) == BIG_N);
  const float *p = em_data_f32(t);
  for (int64_t i = 0; i < BIG_N; i++)
    if (p[i] != pattern(step, i)) cr_assert_fail("%s: element %lld is wrong", path, (long long)i);
  em_ckpt_free(r);
  return step;
}

Test(checkpoint, killed_saves_never_leave_latest_at_a_partial_file, .timeout = 600) {
  TU_BEGIN;
  char *dir = tu_tmpdir("ckpt"), listing[4096];
  em_tensor *big = em_empty(EM_F32, 1, (int64_t[]){BIG_N});
  float *p = em_data_f32(big);
  /* Kill delays in microseconds; the last save is not killed. */
  static const long delays[] = {0, 1000, 3000, 8000, 15000, 30000, 60000, 120000, 250000, -1};
  int n_delays = (int)(sizeof delays / sizeof *delays), kept_old = 0, got_new = 0;
  int64_t good = -1;
  for (int it = 0; it <= n_delays; it++) {
    int64_t step = it + 1;
    for (int64_t i = 0; i < BIG_N; i++) p[i] = pattern(step, i);
    em_ckpt *c = em_ckpt_new();
    cr_assert_eq(em_ckpt_add(c, "big", big), EM_OK);
    cr_assert_eq(em_ckpt_set_meta_i64(c, "step", step), EM_OK);
    bool completed;
    if (it == 0) { /* the first checkpoint, written whole */
      cr_assert_eq(em_ckpt_save_dir(c, dir, step, 2), EM_OK, "%s", em_last_error());
      completed = true;
    } else {
      fflush(NULL);
      pid_t pid = fork();
      cr_assert_geq(pid, 0);
      if (pid == 0) _exit(em_ckpt_save_dir(c, dir, step, 2) == EM_OK ? 0 : 1);
      long us = delays[it - 1];
      if (us >= 0) {
        nanosleep(&(struct timespec){us / 1000000, us % 1000000 * 1000}, NULL);
        kill(pid, SIGKILL);
      }
      int ws;
      cr_assert_eq(waitpid(pid, &ws, 0), pid);
      completed = WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
      cr_assert(completed || WIFSIGNALED(ws), "save failed without being killed");
    }
    em_ckpt_free(c);
    em_status st;
    char *latest = em_ckpt_latest(dir, &st);
    cr_assert_not_null(latest, "no latest after step %lld: %s", (long long)step, em_last_error());
    cr_assert_eq(st, EM_OK);
    cr_assert(!strstr(latest, ".tmp."), "latest names a temporary: %s", latest);
    int64_t s = check_big(latest);
    cr_assert(s == step || (!completed && s == good),
              "latest is step %lld after saving step %lld (previous %lld, completed %d)",
              (long long)s, (long long)step, (long long)good, completed);
    if (s == step)
      got_new++;
    else
      kept_old++;
    good = s;
    free(latest);
    /* No checkpoint under a final name is partial, temporaries aside. */
    tu_list_dir(dir, listing, sizeof listing);
    for (char *tok = strtok(listing, " "); tok; tok = strtok(NULL, " ")) {
      char path[512];
      if (!strncmp(tok, "ckpt-", 5) && !strstr(tok, ".tmp.")) check_big(tu_path(path, dir, tok));
    }
  }
  cr_log_info("killed saves: %d kept the previous checkpoint, %d completed", kept_old, got_new);
  cr_assert_eq(good, n_delays + 1, "the last, unkilled save is the latest");
  tu_rm_rf(dir);
  TU_END;
}

