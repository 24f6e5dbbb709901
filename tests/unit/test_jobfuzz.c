/*
 * test_jobfuzz.c — real jobs, damaged many ways, are refused with a message and
 * never crash the loader.
 *
 * The job comes from build/mplc (make test builds it first). Damage: single-bit
 * flips (caught by the checksum), flips with the checksum recomputed (so the
 * manifest parser and job_validate see the damage), truncation at many lengths,
 * and a wrong format version; then damage the flips rarely reach (pass 107): each framing
 * rule (a reserved field, a section longer than the file or than its reader reads, the
 * final padding, a string's NUL, a count, a rank, the format), and each field job_read
 * bounds (schedule, precision, eval_batches, a step's kind, value and kernel, an offset, a
 * micro-batch, a tied gradient's peer, a check's value), refused with a message naming it.
 */
#include "runtime/job.h"
#include "runtime/mpl.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint8_t *job_bytes;
static size_t job_len;
static char tmp_path[256];

static void make_job(void) {
  const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
  char cmd[1024];
  snprintf(tmp_path, sizeof tmp_path, "/tmp/mpl_jobfuzz_%d.job", (int)getpid());
  snprintf(cmd, sizeof cmd, "%s/mplc tests/e2e/small_mlp.mpl -o %s.orig", build, tmp_path);
  ck_assert_msg(system(cmd) == 0, "mplc failed: %s", cmd);
  char orig[300];
  snprintf(orig, sizeof orig, "%s.orig", tmp_path);
  MplErr e;
  ck_assert_msg(mpl_file_read_all(orig, &job_bytes, &job_len, &e) == MPL_OK, "%s", e.msg);
  unlink(orig);
}

static void write_bytes(const uint8_t *b, size_t n) {
  FILE *f = fopen(tmp_path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(b, 1, n, f), n);
  fclose(f);
}

static void reseal(uint8_t *b, size_t n) {
  uint64_t h = mpl_fnv1a64(b + MPL_JOB_HEADER, n - MPL_JOB_HEADER);
  for (int i = 0; i < 8; i++) b[24 + i] = (uint8_t)(h >> (8 * i));
}

/* Loads the bytes as a job: returns 1 if accepted, 0 if refused (with a message). */
static int try_load(const uint8_t *b, size_t n) {
  write_bytes(b, n);
  char err[700] = "";
  Job *j = job_read(tmp_path, err, sizeof err);
  if (j) {
    job_free(j);
    return 1;
  }
  ck_assert_msg(err[0] != 0, "refused without a message");
  return 0;
}

START_TEST(test_intact_job_loads) {
  make_job();
  ck_assert_int_eq(try_load(job_bytes, job_len), 1);
  Job *j;
  char err[700];
  write_bytes(job_bytes, job_len);
  j = job_read(tmp_path, err, sizeof err);
  ck_assert_ptr_nonnull(j);
  ck_assert_int_eq(j->mesh.pp, 2);
  ck_assert_int_gt(j->nparams, 0);
  ck_assert_int_gt(j->kernels.nkernels, 0);
  job_free(j);
}
END_TEST

START_TEST(test_flips_and_truncations) {
  make_job();
  uint8_t *b = malloc(job_len);
  unsigned seed = 12345;
  int refused = 0, accepted_resealed = 0;
  for (int i = 0; i < 400; i++) { /* plain flips: the checksum catches every one */
    memcpy(b, job_bytes, job_len);
    size_t at = (size_t)rand_r(&seed) % job_len;
    b[at] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
    refused += !try_load(b, job_len);
  }
  ck_assert_int_eq(refused, 400);
  for (int i = 0; i < 1500; i++) { /* resealed: the parser and the validator must cope */
    memcpy(b, job_bytes, job_len);
    int nflips = 1 + rand_r(&seed) % 4;
    for (int k = 0; k < nflips; k++) {
      size_t at = MPL_JOB_HEADER + (size_t)rand_r(&seed) % (job_len - MPL_JOB_HEADER);
      b[at] = (uint8_t)rand_r(&seed);
    }
    reseal(b, job_len);
    accepted_resealed += try_load(b, job_len);
  }
  /* some damage lands in harmless places (float settings, padding); most must be refused */
  ck_assert_int_lt(accepted_resealed, 1500);
  for (size_t n = 0; n < job_len; n += 1 + job_len / 300) ck_assert_int_eq(try_load(job_bytes, n), 0);
  free(b);
}
END_TEST

START_TEST(test_wrong_version) {
  make_job();
  uint8_t *b = malloc(job_len);
  memcpy(b, job_bytes, job_len);
  b[8] = 99; /* format version */
  write_bytes(b, job_len);
  char err[700] = "";
  ck_assert_ptr_null(job_read(tmp_path, err, sizeof err));
  ck_assert_msg(strstr(err, "version") != NULL, "message does not name the version: %s", err);
  free(b);
}
END_TEST

/* `model` compiled by mplc into tmp_path and read back (the test fails if either fails). */
static Job *compile_job(const char *model) {
  const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
  char cmd[1024], err[700] = "";
  snprintf(tmp_path, sizeof tmp_path, "/tmp/mpl_jobfuzz_%d.job", (int)getpid());
  snprintf(cmd, sizeof cmd, "%s/mplc %s -o %s", build, model, tmp_path);
  ck_assert_msg(system(cmd) == 0, "mplc failed: %s", cmd);
  Job *j = job_read(tmp_path, err, sizeof err);
  ck_assert_msg(j != NULL, "%s", err);
  return j;
}

/* The job's first step of `kind` in any stage and program, or NULL. */
static JobStep *first_step(Job *j, int kind) {
  for (int s = 0; s < j->nstages; s++)
    for (int k = 0; k < JP__COUNT; k++)
      for (int i = 0; i < j->stages[s].prog[k].nsteps; i++)
        if (j->stages[s].prog[k].steps[i].kind == kind) return &j->stages[s].prog[k].steps[i];
  return NULL;
}

/* The fused cross-entropy's step (mplc's default): each damaged field is refused by
 * job_validate with a message (sizes, block of rows, operand count, an operand's size or
 * dtype). */
START_TEST(test_fused_ce_steps) {
  char err[700] = "";
  Job *j = compile_job("tests/e2e/fused_ce.mpl");
  JobStep *ce[1] = {first_step(j, JS_CE)};
  ck_assert_msg(ce[0] != NULL, "no fused cross-entropy step in the job");
  ck_assert_int_eq(ce[0]->N, 2500);
  ck_assert_int_eq(ce[0]->chunk, 32); /* all 32 rows of a micro-batch in one block */
  for (int w = 0; w < 1; w++)
    for (int d = 0; d < 7; d++) {
      JobStep keep = *ce[w];
      int32_t args[7];
      memcpy(args, ce[w]->args, sizeof(int32_t) * (size_t)ce[w]->nargs);
      switch (d) {
      case 0: ce[w]->chunk = 0; break;
      case 1: ce[w]->chunk = ce[w]->M + 1; break;
      case 2: ce[w]->nargs--; break;
      case 3: ce[w]->M = 0; break;
      case 4: ce[w]->K *= 2; break;
      case 5: ce[w]->args[2] = ce[w]->args[0]; break; /* the targets: an f32 value */
      case 6: ce[w]->prec = 9; break;
      }
      err[0] = 0;
      ck_assert_msg(job_validate(j, err, sizeof err) != 0, "step %d, damage %d accepted", w, d);
      ck_assert_msg(strstr(err, "cross-entropy"), "damage %d: %s", d, err);
      memcpy(ce[w]->args, args, sizeof(int32_t) * (size_t)keep.nargs);
      *ce[w] = keep;
    }
  ck_assert_int_eq(job_validate(j, err, sizeof err), 0);
  job_free(j);
}
END_TEST

/* The fused attention's steps (JS_SDPA, JS_SDPA_BWD): each damaged field is refused by
 * job_validate with a message naming sdpa (sizes, heads that do not group, operand count, an
 * operand's size or dtype, the precision). */
START_TEST(test_sdpa_steps) {
  char err[700] = "";
  Job *j = compile_job("tests/e2e/v2/sdpa_grad.mpl");
  JobStep *st2[2] = {first_step(j, JS_SDPA), first_step(j, JS_SDPA_BWD)}; /* a forward and a backward step */
  ck_assert_msg(st2[0] && st2[1], "no fused attention steps in the job");
  for (int w = 0; w < 2; w++)
    for (int d = 0; d < 7; d++) {
      JobStep keep = *st2[w];
      int32_t args[9];
      memcpy(args, st2[w]->args, sizeof(int32_t) * (size_t)st2[w]->nargs);
      switch (d) {
      case 0: st2[w]->heads = 0; break;
      case 1: st2[w]->kv_heads = st2[w]->heads + 1; break;
      case 2: st2[w]->nargs--; break;
      case 3: st2[w]->M *= 2; break;
      case 4: st2[w]->K *= 2; break;
      case 5: st2[w]->prec = 9; break;
      case 6: st2[w]->hv = -1; break;
      }
      err[0] = 0;
      ck_assert_msg(job_validate(j, err, sizeof err) != 0, "step %d, damage %d accepted", w, d);
      ck_assert_msg(strstr(err, "sdpa"), "step %d, damage %d: %s", w, d, err);
      memcpy(st2[w]->args, args, sizeof(int32_t) * (size_t)keep.nargs);
      *st2[w] = keep;
    }
  ck_assert_int_eq(job_validate(j, err, sizeof err), 0);
  job_free(j);
}
END_TEST

/* bf16 storage (tests/e2e/half_bf16.mpl: products and attention of bf16 values): a GEMM or
 * attention step whose operands' types disagree, or that reads bf16 outside a bf16 step, or a
 * GEMM that writes bf16, is refused with a message naming the step. */
START_TEST(test_bf16_steps) {
  char err[700] = "";
  Job *j = compile_job("tests/e2e/half_bf16.mpl");
  JobStep *gemm = NULL, *sdpa = first_step(j, JS_SDPA);
  for (int s = 0; s < j->nstages && !gemm; s++)
    for (int k = 0; k < JP__COUNT && !gemm; k++)
      for (int i = 0; i < j->stages[s].prog[k].nsteps; i++) {
        JobStep *st = &j->stages[s].prog[k].steps[i];
        if (st->kind == JS_GEMM && st->in16) {
          gemm = st;
          break;
        }
      }
  ck_assert_msg(gemm && sdpa && sdpa->in16, "no bf16 GEMM or attention step in the job");
  for (int d = 0; d < 5; d++) {
    JobStep *st = d < 3 ? gemm : sdpa;
    JobValue *b = &j->values[st->args[1]], *c = &j->values[st->args[2]];
    JobValue kb = *b, kc = *c;
    uint8_t prec = st->prec;
    switch (d) {
    case 0: b->dtype = JDT_F32; break;  /* bf16 x f32 */
    case 1: st->prec = PREC_F32; break; /* bf16 operands in an f32 product */
    case 2: c->dtype = JDT_BF16; break; /* a bf16 result */
    case 3: b->dtype = JDT_F32; break;  /* k f32 beside bf16 q */
    case 4: st->prec = PREC_F32; break;
    }
    err[0] = 0;
    ck_assert_msg(job_validate(j, err, sizeof err) != 0, "damage %d accepted", d);
    ck_assert_msg(strstr(err, d < 3 ? "gemm" : "sdpa"), "damage %d: %s", d, err);
    *b = kb, *c = kc, st->prec = prec;
  }
  ck_assert_int_eq(job_validate(j, err, sizeof err), 0);
  job_free(j);
}
END_TEST

/* ---- framing: damage the flips rarely reach, each refused with its message (pass 107) ---- */

static uint64_t le_get(const uint8_t *b, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
  return v;
}
static void le_put(uint8_t *b, int n, uint64_t v) {
  for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
}

/* The section framing as the format says it (magic 8, version 4, flags 4, size 8, checksum 8;
 * then sections: tag 4, reserved 4, length 8, the data, zeros to a multiple of 8), read here
 * on its own: the byte offset of each section's header, and its tag. */
typedef struct Sec {
  size_t at;
  char tag[5];
} Sec;

static int sections_of(const uint8_t *b, size_t n, Sec *out, int cap) {
  size_t at = MPL_JOB_HEADER;
  int k = 0;
  while (at + 16 <= n && k < cap) {
    out[k].at = at;
    memcpy(out[k].tag, b + at, 4);
    out[k].tag[4] = 0;
    k++;
    at += 16 + le_get(b + at + 8, 8);
    at += (8 - at % 8) % 8;
  }
  ck_assert_uint_eq(at, n); /* the sections tile the job */
  return k;
}

static const Sec *sec_named(const Sec *s, int n, const char *tag) {
  for (int i = 0; i < n; i++)
    if (!strcmp(s[i].tag, tag)) return &s[i];
  ck_abort_msg("no section %s in the job", tag);
  return NULL;
}

/* The bytes b (n of them, header size and checksum made right) are refused, the message
 * holding `want`. */
static void refused_with(uint8_t *b, size_t n, const char *what, const char *want) {
  le_put(b + 16, 8, n);
  reseal(b, n);
  write_bytes(b, n);
  char err[700] = "";
  Job *j = job_read(tmp_path, err, sizeof err);
  ck_assert_msg(j == NULL, "%s: accepted", what);
  ck_assert_msg(strstr(err, want), "%s: the message does not say '%s': %s", what, want, err);
}

START_TEST(test_framing_damage) {
  make_job(); /* tests/e2e/small_mlp.mpl: MANI VALS PARM INPT OPID STAG XFER RANK KERN CHEK */
  Sec sec[16];
  int ns = sections_of(job_bytes, job_len, sec, 16);
  ck_assert_int_ge(ns, 9);
  uint8_t *b = malloc(job_len + 64);
  const Sec *mani = sec_named(sec, ns, "MANI"), *vals = sec_named(sec, ns, "VALS"), *last = &sec[ns - 1];
  size_t last_len = le_get(job_bytes + last->at + 8, 8), last_end = last->at + 16 + last_len;
  ck_assert_uint_eq(job_len - last_end, (8 - last_end % 8) % 8);

  memcpy(b, job_bytes, job_len); /* a section's reserved field not zero */
  le_put(b + mani->at + 4, 4, 7);
  refused_with(b, job_len, "reserved field 7", "bad section header");
  for (int k = 1; k <= 8; k++) { /* the last section claims k bytes more than it has */
    memcpy(b, job_bytes, job_len);
    le_put(b + last->at + 8, 8, last_len + (uint64_t)k);
    char what[64];
    snprintf(what, sizeof what, "last section %d bytes longer", k);
    /* past its padding the framing refuses it; within, its reader finds bytes left over */
    refused_with(b, job_len, what, last_end + (size_t)k > job_len ? "bad section header" : "after its last field");
  }
  if (job_len > last_end) { /* the last section's padding cut off */
    memcpy(b, job_bytes, last_end);
    refused_with(b, last_end, "no final padding", "bad section header");
  }
  for (int i = 0; i < ns; i++) { /* 8 zero bytes more at a section's end: framed, but left over */
    size_t len = le_get(job_bytes + sec[i].at + 8, 8), end = sec[i].at + 16 + len;
    memcpy(b, job_bytes, end);
    memset(b + end, 0, 8);
    memcpy(b + end + 8, job_bytes + end, job_len - end);
    le_put(b + sec[i].at + 8, 8, len + 8);
    char what[64];
    snprintf(what, sizeof what, "%s with 8 bytes more", sec[i].tag);
    refused_with(b, job_len + 8, what, "8 bytes after its last field");
  }
  memcpy(b, job_bytes, job_len); /* the model's name without its NUL (u32 length, bytes, NUL) */
  uint32_t name_len = (uint32_t)le_get(job_bytes + mani->at + 16, 4);
  ck_assert_int_eq(b[mani->at + 16 + 4 + name_len], 0);
  b[mani->at + 16 + 4 + name_len] = 'X';
  refused_with(b, job_len, "name without NUL", "malformed string");
  memcpy(b, job_bytes, job_len); /* a count no section could hold */
  le_put(b + vals->at + 16, 4, (uint64_t)1 << 26);
  refused_with(b, job_len, "values count 2^26", "does not fit");
  memcpy(b, job_bytes, job_len); /* a value of rank 9 (dtype u8, kind u8, rank u32) */
  le_put(b + vals->at + 16 + 4 + 2, 4, 9);
  refused_with(b, job_len, "rank 9", "dimensions count 9");
  memcpy(b, job_bytes, job_len); /* KERN ends with the PTX's length (none here): 1 byte it has not */
  const Sec *kern = sec_named(sec, ns, "KERN");
  size_t ptx_len_at = kern->at + 16 + le_get(job_bytes + kern->at + 8, 8) - 8;
  ck_assert_uint_eq(le_get(job_bytes + ptx_len_at, 8), 0);
  le_put(b + ptx_len_at, 8, 1);
  refused_with(b, job_len, "PTX 1 byte past KERN", "truncated: a byte block needs 1 bytes, 0 left");
  memcpy(b, job_bytes, job_len); /* the format before this one (the flags are outside the checksum) */
  le_put(b + 12, 4, MPL_JOB_FORMAT - 1);
  write_bytes(b, job_len);
  char err[700] = "";
  ck_assert_ptr_null(job_read(tmp_path, err, sizeof err));
  char want[64];
  snprintf(want, sizeof want, "job format %d, but this mplrun reads format %d", MPL_JOB_FORMAT - 1, MPL_JOB_FORMAT);
  ck_assert_msg(strstr(err, want), "format %d: %s", MPL_JOB_FORMAT - 1, err);
  free(b);
}
END_TEST

/* ---- fields: each out-of-range field job_read must refuse, written by job_write (pass 107) ---- */

static JobStep *first_kernel_step(Job *j) { return first_step(j, JS_KERNEL); }

/* Reads the job at `orig`, damages it (d), writes it to tmp_path and reads it back: refused,
 * the message holding `want`. */
static void field_refused(const char *orig, int d, const char *want) {
  char err[700] = "";
  Job *j = job_read(orig, err, sizeof err);
  ck_assert_msg(j != NULL, "%s", err);
  JobRank *rk = &j->ranks[0];
  int64_t m = j->train.microbatches;
  bool done = true;
  switch (d) {
  case 0: j->train.schedule = SCHED__COUNT; break;
  case 1: j->train.precision = PREC_BF16 + 1; break;
  case 2: j->train.eval_batches = 0; break;
  case 3: first_kernel_step(j)->kind = JS__COUNT; break;
  case 4: first_kernel_step(j)->args[0] = j->nvalues; break;
  case 5: first_kernel_step(j)->kernel = j->kernels.nkernels; break;
  case 6: /* an activation of more than one element at the arena's last 4 bytes */
    done = false;
    for (int64_t k = 0; k < (int64_t)j->nvalues * m && !done; k++)
      if (rk->offset[k] != UINT64_MAX && j->values[k / m].kind == JV_ACT && j->values[k / m].numel > 1)
        rk->offset[k] = rk->arena_bytes - 4, done = true;
    break;
  case 7: /* a pass on a micro-batch past the last */
    done = false;
    for (int i = 0; i < rk->nins && !done; i++)
      if (rk->ins[i].kind == JI_FWD) rk->ins[i].mb = (int32_t)m, done = true;
    break;
  case 8: /* a tied param's gradient sent to its own rank */
    done = false;
    for (int r = 0; r < j->mesh.pp && !done; r++)
      for (int i = 0; i < j->ranks[r].nins && !done; i++)
        if (j->ranks[r].ins[i].kind == JI_TIED_SEND) j->ranks[r].ins[i].peer = r, done = true;
    break;
  case 9: /* a run-time check naming a param's value */
    done = j->nchecks > 0;
    if (done) j->checks[0].value = j->params[0].value;
    break;
  }
  ck_assert_msg(done, "damage %d: nothing to damage in %s", d, orig);
  ck_assert_msg(job_write(j, tmp_path, err, sizeof err) == 0, "%s", err);
  job_free(j);
  err[0] = 0;
  j = job_read(tmp_path, err, sizeof err);
  ck_assert_msg(j == NULL, "damage %d: accepted", d);
  ck_assert_msg(strstr(err, want), "damage %d: the message does not say '%s': %s", d, want, err);
}

START_TEST(test_field_damage) {
  const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
  char lm[300], gather[300], cmd[1024];
  snprintf(lm, sizeof lm, "/tmp/mpl_jobfuzz_%d.lm.job", (int)getpid());
  snprintf(gather, sizeof gather, "/tmp/mpl_jobfuzz_%d.gather.job", (int)getpid());
  snprintf(tmp_path, sizeof tmp_path, "/tmp/mpl_jobfuzz_%d.job", (int)getpid());
  /* tiny_lm: two stages with a tied embedding (tied_send); ops_v2_gather: run-time checks */
  snprintf(cmd, sizeof cmd, "%s/mplc tests/e2e/tiny_lm.mpl -o %s && %s/mplc tests/e2e/ops_v2_gather.mpl -o %s", build, lm,
           build, gather);
  ck_assert_msg(system(cmd) == 0, "mplc failed: %s", cmd);
  static const char *const want[] = {"schedule 6",         "precision 3",       "eval_batches 0", "bad step kind",
                                     "step reads value",   "kernel ",           "outside the arena",
                                     "micro-batch",        "tied_send",         "check 0: bad value"};
  ck_assert_int_eq(SCHED__COUNT, 6);
  for (int d = 0; d < 10; d++) field_refused(d == 9 ? gather : lm, d, want[d]);
  unlink(lm);
  unlink(gather);
}
END_TEST

int main(void) {
  Suite *s = suite_create("jobfuzz");
  TCase *tc = tcase_create("jobfuzz");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_intact_job_loads);
  tcase_add_test(tc, test_flips_and_truncations);
  tcase_add_test(tc, test_wrong_version);
  tcase_add_test(tc, test_fused_ce_steps);
  tcase_add_test(tc, test_sdpa_steps);
  tcase_add_test(tc, test_bf16_steps);
  tcase_add_test(tc, test_framing_damage);
  tcase_add_test(tc, test_field_damage);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  unlink(tmp_path);
  return failed ? 1 : 0;
}
