/*
 * test_exec.c — the executor on a job built by hand: a two-stage model
 *   h = x @ W0 + b (stage 0),  y = h @ W1 + b (stage 1),  loss = mean(y^2)
 * with the bias b tied across the stages, two micro-batches, run on one rank and on
 * two ranks (activations and gradients as messages, the tied gradient exchanged).
 * Checks: it runs without deadlock; the loss and the gradients match a plain-C
 * reference; one rank and two ranks give the same bits; a failing rank aborts the run
 * cleanly; checkpoint + resume continues bit for bit; --save/--init round-trip.
 * The kernels are C functions with the JIT's ABI, passed in through the test hook.
 */
#include <check.h>
#include <sys/stat.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/exec.h"
#include "runtime/mpl_rng.h"

enum { R = 2, C = 4, M = 2 }; /* rows per micro-batch, width, micro-batches */

/* ---- kernels (ABI: args, scalars {seed, step, mb, tpi}, outer iterations [b, e)) ---- */

static void k_bias_add(void **a, const int64_t *s, int64_t b, int64_t e) { /* (in, bias, out), rows */
  const float *in = a[0], *bias = a[1];
  float *out = a[2];
  for (int64_t r = b; r < e; r++)
    for (int c = 0; c < C; c++) out[r * C + c] = in[r * C + c] + bias[c];
}
static void k_loss(void **a, const int64_t *s, int64_t b, int64_t e) { /* (y, loss), 1 */
  const float *y = a[0];
  float acc = 0;
  for (int i = 0; i < R * C; i++) acc = acc + y[i] * y[i];
  *(float *)a[1] = acc / (float)(R * C);
}
static void k_dy(void **a, const int64_t *s, int64_t b, int64_t e) { /* (y, dy), rows: d(loss/M)/dy */
  const float *y = a[0];
  float *dy = a[1];
  for (int64_t i = b * C; i < e * C; i++) dy[i] = y[i] * (2.0f / (float)(R * C * M));
}
static void k_colsum(void **a, const int64_t *s, int64_t b, int64_t e) { /* (d, out[C]), columns */
  const float *d = a[0];
  float *out = a[1];
  for (int64_t c = b; c < e; c++) {
    float acc = 0;
    for (int r = 0; r < R; r++) acc = acc + d[r * C + c];
    out[c] = acc;
  }
}
static const MplKernelFn kernels[] = {k_bias_add, k_loss, k_dy, k_colsum};
enum { K_BIAS, K_LOSS, K_DY, K_COLSUM };

/* ---- the job ---- */

enum {
  V_X, V_W0, V_B, V_HPRE, V_H, V_W1, V_YPRE, V_Y, V_LOSS, V_DY, V_DW1, V_GW1, V_DH, V_DB1, V_GB1,
  V_DW0, V_GW0, V_DB0, V_GB0, NV
};

static void set_value(Job *j, int v, int kind, int rank, int64_t d0, int64_t d1) {
  JobValue *x = &j->values[v];
  x->dtype = JDT_F32;
  x->kind = (uint8_t)kind;
  x->rank = rank;
  x->dims[0] = d0;
  x->dims[1] = d1;
  x->numel = rank == 0 ? 1 : rank == 1 ? d0 : d0 * d1;
}

static int32_t *ints(int n, ...) {
  va_list ap;
  int32_t *v = calloc((size_t)n + 1, sizeof *v);
  va_start(ap, n);
  for (int i = 0; i < n; i++) v[i] = va_arg(ap, int);
  va_end(ap);
  return v;
}

static JobStep gemm(int a, int b, int c, bool ta, bool tb, int64_t Mm, int64_t N, int64_t K) {
  return (JobStep){.kind = JS_GEMM, .nargs = 3, .args = ints(3, a, b, c), .ta = ta, .tb = tb, .M = Mm, .N = N,
                   .K = K, .batch = 1, .alpha = 1.0, .beta = 0.0};
}
static JobStep kern(int k, int64_t n_outer, int nargs, int a0, int a1, int a2) {
  return (JobStep){.kind = JS_KERNEL, .kernel = k, .nargs = nargs, .args = ints(3, a0, a1, a2), .n_outer = n_outer};
}
static JobStep accum(int acc, int src) {
  return (JobStep){.kind = JS_ACCUM, .nargs = 2, .args = ints(2, acc, src)};
}

static void set_prog(JobProgram *p, int n, const JobStep *steps) {
  p->nsteps = n;
  p->steps = calloc((size_t)n + 1, sizeof *p->steps);
  memcpy(p->steps, steps, sizeof *steps * (size_t)n);
}

static void set_param(JobParam *p, const char *name, int value, int rank, int64_t d0, int64_t d1, bool decay,
                      int nuses, int32_t *use_value, int32_t *use_stage) {
  *p = (JobParam){.name = strdup(name), .value = value, .rank = rank, .dims = {d0, d1},
                  .numel = rank == 1 ? d0 : d0 * d1, .init = 2, .init_a = 0.5, .decay = decay,
                  .nuses = nuses, .use_value = use_value, .use_stage = use_stage};
}

/* Values each rank holds (pp = 2); with pp = 1 rank 0 holds everything. */
static const int rank0_vals[] = {V_X, V_W0, V_B, V_HPRE, V_H, V_DH, V_DW0, V_GW0, V_DB0, V_GB0, -1};
static const int rank1_vals[] = {V_B, V_H, V_W1, V_YPRE, V_Y, V_LOSS, V_DY, V_DW1, V_GW1, V_DH, V_DB1, V_GB1, -1};

static bool persistent(const Job *j, int v) { return j->values[v].kind == JV_PARAM || j->values[v].kind == JV_GRAD; }

/* Every held (value, micro-batch) gets its own 64-byte aligned buffer. */
static void plan_rank(Job *j, JobRank *jr, const int *vals) {
  jr->offset = malloc(sizeof(uint64_t) * NV * M);
  for (int k = 0; k < NV * M; k++) jr->offset[k] = UINT64_MAX;
  uint64_t off = 0;
  for (int i = 0; vals[i] >= 0; i++) {
    int v = vals[i];
    uint64_t bytes = ((uint64_t)j->values[v].numel * 4 + 63) / 64 * 64;
    for (int mb = 0; mb < M; mb++) {
      if (persistent(j, v) && mb > 0) {
        jr->offset[v * M + mb] = jr->offset[v * M];
        continue;
      }
      jr->offset[v * M + mb] = off;
      off += bytes;
    }
  }
  jr->arena_bytes = off;
}

static void set_ins(JobRank *jr, int n, const JobIns *ins) {
  jr->nins = n;
  jr->ins = calloc((size_t)n, sizeof *ins);
  memcpy(jr->ins, ins, sizeof *ins * (size_t)n);
}

#define INS(K, S, B, X) {.kind = K, .stage = S, .mb = B, .xfer = X, .param = -1, .use = -1, .peer = -1}
#define FWD(S, B) INS(JI_FWD, S, B, -1)
#define BWB(S, B) INS(JI_BWD_B, S, B, -1)
#define BWW(S, B) INS(JI_BWD_W, S, B, -1)
#define SEND(X, B) INS(JI_SEND, -1, B, X)
#define RECV(X, B) INS(JI_RECV, -1, B, X)
/* update phase: params b (0, tied over the stages), w0 (1), w1 (2) */
#define UPD(K, P) {.kind = K, .stage = -1, .mb = -1, .xfer = -1, .param = P, .use = -1, .peer = -1}
#define TSEND(P, U, R) {.kind = JI_TIED_SEND, .stage = -1, .mb = -1, .xfer = -1, .param = P, .use = U, .peer = R}

/* Rank r's update phase as mplc's update.c writes it: the tied bias's exchange, the norm
 * (with clip) on each param's lowest rank, the update of the rank's params. */
static int update_phase(JobIns *out, int pp, int r, bool clip) {
  int n = 0, mine[2] = {1, 2}, nmine = pp == 1 ? 2 : 1; /* w0 on rank 0, w1 on rank 1 */
  if (pp == 2) mine[0] = r == 0 ? 1 : 2;
  if (pp == 2) out[n++] = (JobIns)TSEND(0, r, 1 - r);
  out[n++] = (JobIns)UPD(JI_GRAD_SUM, 0);
  if (clip) {
    if (r == 0) out[n++] = (JobIns)UPD(JI_NORM_ADD, 0);
    for (int k = 0; k < nmine; k++) out[n++] = (JobIns)UPD(JI_NORM_ADD, mine[k]);
    out[n++] = (JobIns)UPD(JI_NORM_ALLREDUCE, -1);
    out[n++] = (JobIns)UPD(JI_CLIP, 0);
    for (int k = 0; k < nmine; k++) out[n++] = (JobIns)UPD(JI_CLIP, mine[k]);
  }
  out[n++] = (JobIns)UPD(JI_UPDATE, 0);
  for (int k = 0; k < nmine; k++) out[n++] = (JobIns)UPD(JI_UPDATE, mine[k]);
  return n;
}

static void set_rank(JobRank *jr, int n, const JobIns *pipe, int pp, int r, bool clip) {
  JobIns all[32];
  memcpy(all, pipe, sizeof *pipe * (size_t)n);
  set_ins(jr, n + update_phase(all + n, pp, r, clip), all);
}

static void set_schedule(Job *j, int pp, bool clip) {
  if (pp == 1) {
    const JobIns r0[] = {FWD(0, 0), FWD(1, 0), FWD(0, 1), FWD(1, 1), BWB(1, 0), BWW(1, 0), BWB(0, 0), BWW(0, 0),
                         BWB(1, 1), BWW(1, 1), BWB(0, 1), BWW(0, 1)};
    set_rank(&j->ranks[0], (int)(sizeof r0 / sizeof r0[0]), r0, 1, 0, clip);
    return;
  }
  /* 1f1b-like: rank 0 runs both forwards first, rank 1 alternates */
  const JobIns r0[] = {FWD(0, 0), SEND(0, 0), FWD(0, 1), SEND(0, 1), RECV(1, 0), BWB(0, 0), BWW(0, 0),
                       RECV(1, 1), BWB(0, 1), BWW(0, 1)};
  const JobIns r1[] = {RECV(0, 0), FWD(1, 0), BWB(1, 0), SEND(1, 0), RECV(0, 1), FWD(1, 1), BWB(1, 1), SEND(1, 1),
                       BWW(1, 0), BWW(1, 1)};
  set_rank(&j->ranks[0], (int)(sizeof r0 / sizeof r0[0]), r0, 2, 0, clip);
  set_rank(&j->ranks[1], (int)(sizeof r1 / sizeof r1[0]), r1, 2, 1, clip);
}

static Job *build_job(int pp, int optimizer, double clip) {
  Job *j = calloc(1, sizeof *j);
  j->model_name = strdup("tiny");
  j->mesh.dp = j->mesh.tp = 1;
  j->mesh.pp = pp;
  j->nstages = 2;
  j->train = (JobTrain){.data_kind = 0, .synthetic_n = 16, .batch = R * M, .seq = 1, .microbatches = M,
                        .optimizer = (uint8_t)optimizer, .lr = 0.05, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .weight_decay = 0.1, .momentum = 0.0, .grad_clip = clip, .steps = 3, .seed = 7};
  j->nvalues = NV;
  j->values = calloc(NV, sizeof *j->values);
  for (int v = 0; v < NV; v++) set_value(j, v, JV_ACT, 2, R, C);
  /* params, sorted by name: b, w0, w1 */
  set_value(j, V_W0, JV_PARAM, 2, C, C);
  set_value(j, V_W1, JV_PARAM, 2, C, C);
  set_value(j, V_B, JV_PARAM, 1, C, 0);
  set_value(j, V_X, JV_INPUT, 2, R, C);
  set_value(j, V_LOSS, JV_ACT, 0, 0, 0);
  set_value(j, V_DW1, JV_ACT, 2, C, C);
  set_value(j, V_DW0, JV_ACT, 2, C, C);
  set_value(j, V_GW0, JV_GRAD, 2, C, C);
  set_value(j, V_GW1, JV_GRAD, 2, C, C);
  set_value(j, V_DB0, JV_ACT, 1, C, 0);
  set_value(j, V_DB1, JV_ACT, 1, C, 0);
  set_value(j, V_GB0, JV_GRAD, 1, C, 0);
  set_value(j, V_GB1, JV_GRAD, 1, C, 0);
  j->nparams = 3;
  j->params = calloc(3, sizeof *j->params);
  set_param(&j->params[0], "b", V_B, 1, C, 0, false, 2, ints(2, V_GB0, V_GB1), ints(2, 0, 1));
  set_param(&j->params[1], "w0", V_W0, 2, C, C, true, 1, ints(1, V_GW0), ints(1, 0));
  set_param(&j->params[2], "w1", V_W1, 2, C, C, true, 1, ints(1, V_GW1), ints(1, 1));
  j->ninputs = 1;
  j->inputs = calloc(1, sizeof *j->inputs);
  j->inputs[0] = (JobInput){.name = strdup("x"), .value = V_X, .dtype = JDT_F32, .rank = 2, .dims = {R, C},
                            .token_role = -1};
  j->stages = calloc(2, sizeof *j->stages);
  for (int s = 0; s < 2; s++) j->stages[s] = (JobStage){.rank = pp == 1 ? 0 : s, .loss_value = -1, .logits_value = -1};
  j->stages[1].loss_value = V_LOSS;
  set_prog(&j->stages[0].prog[JP_FWD], 2,
           (JobStep[]){gemm(V_X, V_W0, V_HPRE, false, false, R, C, C), kern(K_BIAS, R, 3, V_HPRE, V_B, V_H)});
  set_prog(&j->stages[0].prog[JP_BWD_W], 4,
           (JobStep[]){gemm(V_X, V_DH, V_DW0, true, false, C, C, R), accum(V_GW0, V_DW0),
                       kern(K_COLSUM, C, 2, V_DH, V_DB0, 0), accum(V_GB0, V_DB0)});
  set_prog(&j->stages[1].prog[JP_FWD], 3,
           (JobStep[]){gemm(V_H, V_W1, V_YPRE, false, false, R, C, C), kern(K_BIAS, R, 3, V_YPRE, V_B, V_Y),
                       kern(K_LOSS, 1, 2, V_Y, V_LOSS, 0)});
  set_prog(&j->stages[1].prog[JP_BWD_B], 2,
           (JobStep[]){kern(K_DY, R, 2, V_Y, V_DY, 0), gemm(V_DY, V_W1, V_DH, false, true, R, C, C)});
  set_prog(&j->stages[1].prog[JP_BWD_W], 4,
           (JobStep[]){gemm(V_H, V_DY, V_DW1, true, false, C, C, R), accum(V_GW1, V_DW1),
                       kern(K_COLSUM, C, 2, V_DY, V_DB1, 0), accum(V_GB1, V_DB1)});
  j->nxfers = 2;
  j->xfers = calloc(2, sizeof *j->xfers);
  j->xfers[0] = (JobXfer){.src = 0, .dst = 1, .grad = 0, .nvals = 1, .vals = ints(1, V_H)};
  j->xfers[1] = (JobXfer){.src = 1, .dst = 0, .grad = 1, .nvals = 1, .vals = ints(1, V_DH)};
  j->ranks = calloc((size_t)pp, sizeof *j->ranks);
  if (pp == 1) {
    int all[NV + 1];
    for (int v = 0; v < NV; v++) all[v] = v;
    all[NV] = -1;
    plan_rank(j, &j->ranks[0], all);
  } else {
    plan_rank(j, &j->ranks[0], rank0_vals);
    plan_rank(j, &j->ranks[1], rank1_vals);
  }
  set_schedule(j, pp, clip > 0);
  j->kernels.nkernels = 4;
  return j;
}

static void free_prog(JobProgram *p) {
  for (int i = 0; i < p->nsteps; i++) free(p->steps[i].args);
  free(p->steps);
}

static void free_job(Job *j) {
  free(j->model_name);
  free(j->values);
  for (int i = 0; i < j->nparams; i++) {
    free(j->params[i].name);
    free(j->params[i].use_value);
    free(j->params[i].use_stage);
  }
  free(j->params);
  free(j->inputs[0].name);
  free(j->inputs);
  for (int s = 0; s < j->nstages; s++)
    for (int k = 0; k < JP__COUNT; k++) free_prog(&j->stages[s].prog[k]);
  free(j->stages);
  for (int x = 0; x < j->nxfers; x++) free(j->xfers[x].vals);
  free(j->xfers);
  for (int r = 0; r < j->mesh.pp; r++) {
    free(j->ranks[r].offset);
    free(j->ranks[r].ins);
  }
  free(j->ranks);
  free(j);
}

static MplRunOpts quiet_opts(void) {
  MplRunOpts o;
  mpl_run_opts_default(&o);
  o.quiet = true;
  o.kernels = kernels;
  o.nkernels = 4;
  return o;
}

/* Runs the job for `steps` steps and returns its params (b, w0, w1 concatenated). */
static void train_params(Job *j, const MplRunOpts *o, float *out, double *loss) {
  MplRun *r;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, j, o, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(mpl_run_train(r, &err) == MPL_OK, "%s", err.msg);
  int off = 0;
  for (int p = 0; p < j->nparams; p++) {
    ck_assert(mpl_run_get_param(r, p, out + off, &err) == MPL_OK);
    off += (int)j->params[p].numel;
  }
  if (loss) *loss = mpl_run_last_loss(r);
  mpl_run_free(r);
}

enum { NPARAM_FLOATS = C + 2 * C * C };

/* ---- the reference: the same model in double ---- */

static void matmul(const double *a, const double *b, double *c, int n, int k, int m, bool ta, bool tb) {
  for (int i = 0; i < n; i++)
    for (int jj = 0; jj < m; jj++) {
      double s = 0;
      for (int q = 0; q < k; q++) s += (ta ? a[q * n + i] : a[i * k + q]) * (tb ? b[jj * k + q] : b[q * m + jj]);
      c[i * m + jj] = s;
    }
}

/* Loss and gradients of one step from params p (b, w0, w1) and the step's data. */
static double reference(const float *p, const float *data, double *grad) {
  double b[C], w0[C * C], w1[C * C], loss = 0;
  for (int i = 0; i < C; i++) b[i] = p[i];
  for (int i = 0; i < C * C; i++) w0[i] = p[C + i], w1[i] = p[C + C * C + i];
  memset(grad, 0, sizeof(double) * NPARAM_FLOATS);
  for (int mb = 0; mb < M; mb++) {
    double x[R * C], h[R * C], y[R * C], dy[R * C], dh[R * C], dw[C * C];
    for (int i = 0; i < R * C; i++) x[i] = data[mb * R * C + i];
    matmul(x, w0, h, R, C, C, false, false);
    for (int i = 0; i < R * C; i++) h[i] += b[i % C];
    matmul(h, w1, y, R, C, C, false, false);
    double l = 0;
    for (int i = 0; i < R * C; i++) y[i] += b[i % C], l += y[i] * y[i];
    loss += l / (R * C) / M;
    for (int i = 0; i < R * C; i++) dy[i] = 2 * y[i] / (R * C * M), grad[i % C] += dy[i];
    matmul(h, dy, dw, C, R, C, true, false);
    for (int i = 0; i < C * C; i++) grad[C + C * C + i] += dw[i];
    matmul(dy, w1, dh, R, C, C, false, true);
    for (int i = 0; i < R * C; i++) grad[i % C] += dh[i];
    matmul(x, dh, dw, C, R, C, true, false);
    for (int i = 0; i < C * C; i++) grad[C + i] += dw[i];
  }
  return loss;
}

/* One SGD step (lr 0.05) of the pp-stage job with grad_clip `clip`: the params before and
 * after, the step's data (synthetic rows 0 .. R*M-1 of input 0) and its loss. */
static void one_sgd_step(int pp, double clip, float *before, float *after, float *data, double *loss) {
  Job *j = build_job(pp, OPT_SGD, clip);
  MplRunOpts o = quiet_opts();
  o.steps = 1;
  MplRun *r;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, j, &o, &err) == MPL_OK, "%s", err.msg);
  for (int p = 0, off = 0; p < 3; off += (int)j->params[p].numel, p++) mpl_run_get_param(r, p, before + off, &err);
  ck_assert_msg(mpl_run_train(r, &err) == MPL_OK, "%s", err.msg);
  for (int p = 0, off = 0; p < 3; off += (int)j->params[p].numel, p++) mpl_run_get_param(r, p, after + off, &err);
  *loss = mpl_run_last_loss(r);
  mpl_run_free(r);
  free_job(j);
  MplSynth s = {0};
  MplSynthInput si = {.kind = MPL_SYNTH_F32, .row_elems = C};
  ck_assert(mpl_synth_init(&s, 16, &si, 1, 7, &err) == MPL_OK);
  mpl_synth_rows(&s, 0, 0, R * M, 0, R * M, data);
  mpl_synth_free(&s);
}

START_TEST(test_matches_reference) {
  /* one SGD step: the loss and (p_old - p_new) / lr against the reference, without clipping
     and with it active (grad_clip 0.05: pass 82's norm without its sqrt passed every test) */
  for (int pp = 1; pp <= 2; pp++)
    for (int clip = 0; clip < 2; clip++) {
      float before[NPARAM_FLOATS], after[NPARAM_FLOATS], data[R * M * C];
      double loss, g[NPARAM_FLOATS], ss = 0;
      one_sgd_step(pp, clip ? 0.05 : 0, before, after, data, &loss);
      double want = reference(before, data, g);
      ck_assert_double_eq_tol(loss, want, 1e-5 * fabs(want) + 1e-6);
      for (int i = 0; i < NPARAM_FLOATS; i++) ss += g[i] * g[i];
      double coef = clip ? 0.05 / (sqrt(ss) + 1e-6) : 1; /* torch's clip_grad_norm_ */
      ck_assert_msg(coef < 0.9 || !clip, "clipping inactive: norm %g", sqrt(ss));
      for (int i = 0; i < NPARAM_FLOATS; i++) {
        double got = ((double)before[i] - (double)after[i]) / 0.05;
        ck_assert_msg(fabs(got - coef * g[i]) < 1e-4 * (1 + fabs(coef * g[i])), "pp %d clip %d: grad %d: %g vs %g", pp,
                      clip, i, got, coef * g[i]);
      }
      /* init: normal(0.5) from the seed's stream of the name, identical on every rank */
      ck_assert_float_eq(before[0], (float)(mpl_normal(mpl_mix64(mpl_mix64(7) ^ mpl_hash_name("b")), 0) * 0.5));
    }
}
END_TEST

START_TEST(test_pp1_equals_pp2) {
  float a[NPARAM_FLOATS], b[NPARAM_FLOATS], c[NPARAM_FLOATS];
  double la, lb;
  Job *j1 = build_job(1, OPT_ADAMW, 0.05), *j2 = build_job(2, OPT_ADAMW, 0.05);
  MplRunOpts o = quiet_opts();
  train_params(j1, &o, a, &la);
  train_params(j2, &o, b, &lb);
  o.threads = 3;
  train_params(j2, &o, c, NULL);
  ck_assert(memcmp(a, b, sizeof a) == 0);
  ck_assert(memcmp(a, c, sizeof a) == 0);
  ck_assert(la == lb && isfinite(la));
  free_job(j1);
  free_job(j2);
}
END_TEST

/* A transfer's tag names its micro-batch: a stream that receives two micro-batches' gradients
 * in the order they were not sent fails at the first receive, naming the tags, instead of
 * training on swapped values (pass 116: the micro-batch could be dropped from the tag and
 * every test passed, messages arriving in order anyway). */
START_TEST(test_recv_order_checked) {
  Job *j = build_job(2, OPT_ADAMW, 0);
  JobRank *r0 = &j->ranks[0];
  int a = -1, b = -1;
  for (int i = 0; i < r0->nins; i++)
    if (r0->ins[i].kind == JI_RECV) {
      if (a < 0) a = i;
      else if (b < 0) b = i;
    }
  ck_assert(a >= 0 && b >= 0 && r0->ins[a].mb == 0 && r0->ins[b].mb == 1);
  r0->ins[a].mb = 1, r0->ins[b].mb = 0; /* each still followed by its micro-batch's backward */
  MplRunOpts o = quiet_opts();
  MplRun *r;
  MplErr err = {{0}};
  if (mpl_run_init(&r, j, &o, &err) == MPL_OK) {
    ck_assert(mpl_run_train(r, &err) == MPL_ERR);
    mpl_run_free(r);
  }
  ck_assert_msg(strstr(err.msg, "rank 0: recv from rank 1 expected tag") && strstr(err.msg, "but the next message has tag"),
                "%s", err.msg);
  free_job(j);
}
END_TEST

START_TEST(test_failure_aborts) {
  Job *j = build_job(2, OPT_ADAMW, 0);
  for (int fr = 0; fr < 2; fr++) {
    MplRunOpts o = quiet_opts();
    o.fail_rank = fr;
    o.fail_step = 1;
    o.fail_ins = fr == 0 ? 4 : 1; /* rank 0 before a recv, rank 1 while rank 0 waits on it */
    MplRun *r;
    MplErr err = {{0}};
    ck_assert(mpl_run_init(&r, j, &o, &err) == MPL_OK);
    ck_assert(mpl_run_train(r, &err) == MPL_ERR);
    ck_assert_msg(strstr(err.msg, "injected") != NULL, "%s", err.msg);
    ck_assert_int_eq(mpl_run_step(r), 1);
    mpl_run_free(r);
  }
  free_job(j);
}
END_TEST

/* Removes a test's temporary folder and what it holds. */
static void rm_tree(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert(system(cmd) == 0);
}

START_TEST(test_checkpoint_resume) {
  char dir[] = "/tmp/mpl_test_exec_XXXXXX";
  ck_assert(mkdtemp(dir) != NULL);
  char ck[256], save[256], trace[256], metrics[256];
  snprintf(ck, sizeof ck, "%s/ckpt", dir);
  snprintf(save, sizeof save, "%s/final.safetensors", dir);
  snprintf(trace, sizeof trace, "%s/trace.json", dir);
  snprintf(metrics, sizeof metrics, "%s/m.jsonl", dir);
  Job *j = build_job(2, OPT_ADAMW, 0.05);
  float full[NPARAM_FLOATS], resumed[NPARAM_FLOATS], loaded[NPARAM_FLOATS];
  MplRunOpts o = quiet_opts();
  o.steps = 6;
  train_params(j, &o, full, NULL);
  /* 6 steps with a checkpoint every 3, then a fresh run resumed from the checkpoint */
  o.ckpt_dir = ck;
  o.ckpt_every = 3;
  o.steps = 3;
  float tmp[NPARAM_FLOATS];
  train_params(j, &o, tmp, NULL);
  MplRunOpts o2 = quiet_opts();
  o2.steps = 6;
  o2.resume_dir = ck;
  o2.save_path = save;
  o2.trace_path = trace;
  o2.metrics_path = metrics;
  train_params(j, &o2, resumed, NULL);
  ck_assert(memcmp(full, resumed, sizeof full) == 0);
  ck_assert(access(trace, R_OK) == 0 && access(metrics, R_OK) == 0);
  /* --init from the saved params, no steps: the same params */
  MplRunOpts o3 = quiet_opts();
  o3.steps = 0;
  o3.init_path = save;
  train_params(j, &o3, loaded, NULL);
  ck_assert(memcmp(full, loaded, sizeof full) == 0);
  /* a resume of another model is refused */
  Job *other = build_job(2, OPT_SGD, 0);
  MplRun *r;
  MplErr err = {{0}};
  MplRunOpts o4 = quiet_opts();
  o4.resume_dir = ck;
  ck_assert(mpl_run_init(&r, other, &o4, &err) == MPL_ERR);
  ck_assert_msg(strstr(err.msg, "another model") != NULL, "%s", err.msg);
  free_job(other);
  free_job(j);
  rm_tree(dir);
}
END_TEST

/* Nothing non-finite is written, to --save or a checkpoint, however far in the tensor it is
 * (pass 115: a check one element short passed every test, whose diverged runs were NaN
 * throughout): a param whose last element alone is infinite is refused, naming it, the file
 * not made and a checkpoint folder left as it was. */
START_TEST(test_save_refuses_last_inf) {
  char dir[] = "/tmp/mpl_test_exec_XXXXXX";
  ck_assert(mkdtemp(dir) != NULL);
  char save[256], ck[256], state[300];
  snprintf(save, sizeof save, "%s/p.safetensors", dir);
  snprintf(ck, sizeof ck, "%s/ck", dir);
  snprintf(state, sizeof state, "%s/state.json", ck);
  Job *j = build_job(2, OPT_ADAMW, 0.05);
  MplRunOpts o = quiet_opts();
  MplRun *r;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, j, &o, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(mpl_ckpt_write_dir(r, ck, 1, &err) == MPL_OK, "%s", err.msg);
  struct stat before;
  ck_assert(stat(state, &before) == 0);
  int p = 0;
  const JobParam *jp = mpl_run_param(r, p);
  float *v = malloc(sizeof(float) * (size_t)jp->numel);
  ck_assert_msg(mpl_run_get_param(r, p, v, &err) == MPL_OK, "%s", err.msg);
  v[jp->numel - 1] = INFINITY;
  ck_assert_msg(mpl_run_set_param(r, p, v, &err) == MPL_OK, "%s", err.msg);
  ck_assert(mpl_ckpt_save_params(r, save, &err) == MPL_ERR);
  char want[64];
  snprintf(want, sizeof want, "[%lld] is inf", (long long)(jp->numel - 1));
  ck_assert_msg(strstr(err.msg, want) != NULL, "%s", err.msg);
  ck_assert(access(save, F_OK) != 0);
  ck_assert(mpl_ckpt_write_dir(r, ck, 2, &err) == MPL_ERR);
  ck_assert_msg(strstr(err.msg, want) != NULL, "%s", err.msg);
  struct stat after;
  ck_assert(stat(state, &after) == 0 && after.st_ino == before.st_ino && after.st_mtime == before.st_mtime);
  free(v);
  mpl_run_free(r);
  free_job(j);
  rm_tree(dir);
}
END_TEST

START_TEST(test_init_errors) {
  Job *j = build_job(2, OPT_ADAMW, 0);
  MplRunOpts o = quiet_opts();
  MplRun *r;
  MplErr err = {{0}};
  o.init_path = "/nonexistent/params.safetensors";
  ck_assert(mpl_run_init(&r, j, &o, &err) == MPL_ERR);
  ck_assert_msg(strstr(err.msg, "/nonexistent/params.safetensors") != NULL, "%s", err.msg);
  o = quiet_opts();
  j->ranks[1].offset[V_Y * M + 1] = j->ranks[1].arena_bytes; /* out of the arena */
  ck_assert(mpl_run_init(&r, j, &o, &err) == MPL_ERR);
  ck_assert_msg(strstr(err.msg, "does not fit") != NULL, "%s", err.msg);
  free_job(j);
  /* a param no rank holds (no offset for its value on either rank): named, before its uses are
     looked at (pass 118's SU16: skipping it went on with owner -1) */
  j = build_job(2, OPT_ADAMW, 0);
  for (int rk = 0; rk < 2; rk++)
    for (int mb = 0; mb < M; mb++) j->ranks[rk].offset[V_B * M + mb] = UINT64_MAX;
  ck_assert(mpl_run_init(&r, j, &o, &err) == MPL_ERR);
  ck_assert_msg(strstr(err.msg, "param b is held by no rank") != NULL, "%s", err.msg);
  free_job(j);
}
END_TEST


/* ---- sampling: a "model" whose logits say "the next byte is idx + 1" ---- */
enum { ST = 8, SV = 256 };
/* fixed_logits: every position's logits are 4 for 'w', 3 for 'x', 2 for 'y', 1 for 'z' and 0
   elsewhere, whatever the input (the top-k check) */
static bool fixed_logits;
/* first_logits: every position's logits single out the row's first token (the window's oldest),
   so the text repeats itself every seq tokens when the window is the last seq tokens */
static bool first_logits;
/* tied_logits: 'k', 'm' and 'p' share the largest logit (5), the rest 0 (ties to the lower id) */
static bool tied_logits;
static void k_next_logits(void **a, const int64_t *s, int64_t b, int64_t e) { /* (idx, logits), positions */
  const int32_t *idx = a[0];
  float *lg = a[1];
  for (int64_t p = b; p < e; p++)
    for (int v = 0; v < SV; v++)
      lg[p * SV + v] = tied_logits ? (v == 'k' || v == 'm' || v == 'p' ? 5.0f : 0.0f)
                     : fixed_logits ? (v >= 'w' && v <= 'z' ? (float)('z' + 1 - v) : 0.0f)
                     : first_logits ? (v == idx[0] ? 40.0f : 0.0f)
                                    : v == (idx[p] + 1) % SV ? 40.0f : 0.0f;
}
static void k_zero_loss(void **a, const int64_t *s, int64_t b, int64_t e) { *(float *)a[1] = 0.0f; }
static const MplKernelFn sample_kernels[] = {k_next_logits, k_zero_loss};

START_TEST(test_sample) {
  Job *j = calloc(1, sizeof *j);
  j->mesh.dp = j->mesh.tp = j->mesh.pp = 1;
  j->nstages = 1;
  j->train = (JobTrain){.synthetic_n = 4, .batch = 1, .seq = ST, .microbatches = 1, .optimizer = 1, .lr = 1e-3,
                        .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .steps = 1, .seed = 3};
  j->nvalues = 4; /* idx, targets, logits, loss */
  j->values = calloc(4, sizeof *j->values);
  for (int v = 0; v < 2; v++)
    j->values[v] = (JobValue){.dtype = JDT_I32, .kind = JV_INPUT, .rank = 2, .dims = {1, ST}, .numel = ST};
  j->values[2] = (JobValue){.dtype = JDT_F32, .kind = JV_ACT, .rank = 3, .dims = {1, ST, SV}, .numel = ST * SV};
  j->values[3] = (JobValue){.dtype = JDT_F32, .kind = JV_ACT, .rank = 0, .numel = 1};
  j->ninputs = 2;
  j->inputs = calloc(2, sizeof *j->inputs);
  for (int i = 0; i < 2; i++)
    j->inputs[i] = (JobInput){.name = strdup(i ? "targets" : "idx"), .value = i, .dtype = JDT_I32, .rank = 2,
                              .dims = {1, ST}, .hi = SV, .token_role = -1};
  j->stages = calloc(1, sizeof *j->stages);
  j->stages[0] = (JobStage){.rank = 0, .loss_value = 3, .logits_value = 2};
  set_prog(&j->stages[0].prog[JP_FWD], 2, (JobStep[]){kern(0, ST, 2, 0, 2, 0), kern(1, 1, 2, 2, 3, 0)});
  j->ranks = calloc(1, sizeof *j->ranks);
  j->ranks[0].offset = malloc(sizeof(uint64_t) * 4);
  uint64_t off[4] = {0, 64, 128, 128 + ST * SV * 4};
  memcpy(j->ranks[0].offset, off, sizeof off);
  j->ranks[0].arena_bytes = off[3] + 64;
  const JobIns ins[] = {FWD(0, 0)}; /* no params: no update phase */
  set_ins(&j->ranks[0], 1, ins);
  j->kernels.nkernels = 2;
  MplRunOpts o = quiet_opts();
  o.kernels = sample_kernels;
  o.nkernels = 2;
  o.steps = 1;
  MplRun *r;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, j, &o, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(mpl_run_train(r, &err) == MPL_OK, "%s", err.msg);
  char buf[256] = "";
  FILE *f = fmemopen(buf, sizeof buf - 1, "w");
  MplSampleOpts so = {.temperature = 1.0};
  ck_assert_msg(mpl_run_sample(r, "abc", 12, &so, f, &err) == MPL_OK, "%s", err.msg); /* slides past seq = 8 */
  fclose(f);
  ck_assert_str_eq(buf, "abcdefghijklmno\n");
  /* the window is the last seq = 8 tokens: a model that repeats the window's first token
     continues "abcdefgh" with itself (a window one token short gives a period of 7) */
  first_logits = true;
  memset(buf, 0, sizeof buf);
  f = fmemopen(buf, sizeof buf - 1, "w");
  so = (MplSampleOpts){.temperature = 0};
  ck_assert_msg(mpl_run_sample(r, "abcdefgh", 12, &so, f, &err) == MPL_OK, "%s", err.msg);
  fclose(f);
  ck_assert_str_eq(buf, "abcdefghabcdefghabcd\n");
  first_logits = false;
  /* --top-k k keeps exactly the k largest logits: at a temperature of 1e6 (near-uniform over
     the kept ones) 300 tokens of top-k 1, 2 and 3 are 'w' only, then both 'w' and 'x' and
     nothing else, then 'w', 'x' and 'y' (a token's chance of never being drawn: 2^-300) */
  fixed_logits = true;
  for (int k = 1; k <= 3; k++) {
    char big[512] = "";
    f = fmemopen(big, sizeof big - 1, "w");
    so = (MplSampleOpts){.temperature = 1e6, .top_k = k, .has_seed = true, .seed = 5};
    ck_assert_msg(mpl_run_sample(r, "a", 300, &so, f, &err) == MPL_OK, "%s", err.msg);
    fclose(f);
    int seen[SV] = {0};
    for (const char *c = big + 1; *c && *c != '\n'; c++) seen[(unsigned char)*c]++;
    for (int v = 0; v < SV; v++) {
      bool kept = v >= 'w' && v < 'w' + k;
      ck_assert_msg(kept ? seen[v] > 0 : seen[v] == 0, "top-k %d: byte %d drawn %d times (%s)", k, v, seen[v],
                    kept ? "one of the k largest logits, never drawn" : "not among the k largest logits");
    }
  }
  fixed_logits = false;
  /* ties go to the lower token id: greedy and top-k 1 pick 'k' of 'k', 'm', 'p'; top-k 2 keeps
     'k' and 'm', never 'p' (pass 107: ties to the higher id passed every suite) */
  tied_logits = true;
  for (int k = 0; k <= 2; k++) {
    char big[512] = "";
    f = fmemopen(big, sizeof big - 1, "w");
    so = k == 0 ? (MplSampleOpts){.temperature = 0} : (MplSampleOpts){.temperature = 1e6, .top_k = k, .has_seed = true, .seed = 5};
    ck_assert_msg(mpl_run_sample(r, "a", 300, &so, f, &err) == MPL_OK, "%s", err.msg);
    fclose(f);
    int seen[SV] = {0};
    for (const char *c = big + 1; *c && *c != '\n'; c++) seen[(unsigned char)*c]++;
    for (int v = 0; v < SV; v++) {
      bool kept = v == 'k' || (k == 2 && v == 'm');
      ck_assert_msg(kept ? seen[v] > 0 : seen[v] == 0, "%s%d, tied logits: byte %d drawn %d times", k ? "top-k " : "greedy",
                    k, v, seen[v]);
    }
  }
  tied_logits = false;
  /* an input that takes [0, 'c'): the prompt byte 'c' is refused, and so is a drawn 'c' (the
     model says 'b' + 1), the bound itself in both */
  j->inputs[0].hi = 'c';
  so = (MplSampleOpts){.temperature = 0};
  memset(buf, 0, sizeof buf);
  f = fmemopen(buf, sizeof buf - 1, "w");
  ck_assert_msg(mpl_run_sample(r, "abc", 4, &so, f, &err) == MPL_ERR, "prompt byte 'c' accepted: %s", buf);
  fclose(f);
  ck_assert_msg(strstr(err.msg, "byte 99 is outside the vocabulary of 99"), "%s", err.msg);
  memset(buf, 0, sizeof buf);
  f = fmemopen(buf, sizeof buf - 1, "w");
  ck_assert(mpl_run_sample(r, "ab", 4, &so, f, &err) == MPL_ERR);
  fclose(f);
  ck_assert_msg(strstr(err.msg, "drawn is 99"), "%s", err.msg);
  j->inputs[0].hi = SV;
  mpl_run_free(r);
  free(j->inputs[0].name);
  free(j->inputs[1].name);
  j->nxfers = 0;
  j->model_name = NULL;
  free_prog(&j->stages[0].prog[JP_FWD]);
  free(j->stages);
  free(j->values);
  free(j->inputs);
  free(j->ranks[0].offset);
  free(j->ranks[0].ins);
  free(j->ranks);
  free(j);
}
END_TEST

int main(void) {
  Suite *s = suite_create("exec");
  TCase *tc = tcase_create("exec");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_matches_reference);
  tcase_add_test(tc, test_pp1_equals_pp2);
  tcase_add_test(tc, test_failure_aborts);
  tcase_add_test(tc, test_recv_order_checked);
  tcase_add_test(tc, test_checkpoint_resume);
  tcase_add_test(tc, test_save_refuses_last_inf);
  tcase_add_test(tc, test_init_errors);
  tcase_add_test(tc, test_sample);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
