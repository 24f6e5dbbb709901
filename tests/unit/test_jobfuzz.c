/*
 * test_jobfuzz.c — real jobs, damaged many ways, are refused with a message and
 * never crash the loader.
 *
 * The job comes from build/mplc (make test builds it first). Damage: single-bit
 * flips (caught by the checksum), flips with the checksum recomputed (so the
 * manifest parser and job_validate see the damage), truncation at many lengths,
 * and a wrong format version.
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
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  unlink(tmp_path);
  return failed ? 1 : 0;
}
