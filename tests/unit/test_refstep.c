/*
 * test_refstep.c — one full training step of real programs, run by the runtime on
 * the generated kernels and GEMMs, against the float64 reference evaluator.
 *
 * For each program: compile it in-process (front end, autodiff, partition, fusion,
 * schedule, plan, kernels), write and read back the job, run one step with mplrun's
 * executor, and compare the step's loss and every param's summed gradient with
 * ref_eval run on the same params and the same synthetic data, micro-batch by
 * micro-batch. Tolerance: float32 against float64, relative to each tensor's largest
 * gradient (wider under precision = bf16: see TOL_BF16_GRAD). The precision is the
 * program's train key: the passes run in compiler/main.c's order, precision.c's too.
 * MPL_REFSTEP_VERBOSE=1 prints the loss and each gradient's error; MPL_REFSTEP_FD=1 also
 * checks the reference's gradients against finite differences of its forward (fd_check).
 * And two checks of the gradients the library hands out: under ZeRO-1 (test_zero1_grads),
 * and clipped by a coefficient just under 1 (test_clip_near_one).
 */
#include "compiler/autodiff.h"
#include "compiler/jobgen.h"
#include "runtime/exec.h"
#include "runtime/mpl.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* precision = bf16: both sides round the same products' operands and results, but a
 * product's f32 result and the reference's float64 one (exact, or nearly, for bf16
 * operands) fall on either side of a bf16 rounding boundary with a probability of about
 * K * 2^-16 (a tie in exact arithmetic is one in f32 only by chance): such an element
 * differs by 2^-8 of itself, and the step carries it on. Measured: the MLP's gradients
 * equal the reference's; the 4-layer GPT's are within 0.005 of each tensor's largest
 * (0.003 rms), and its loss within 4e-6. Without the rounding in the reference, the
 * MLP is off by 0.14 and the GPT by up to 0.016 (0.008 rms). */
#define TOL_BF16_GRAD 1e-2
/* The loss under bf16: one logit on the other side of a boundary moves it by up to 2^-8
 * of that logit over the positions; random programs of 8 positions (tests/tools/randprog.py)
 * measured 2.6e-4 of the loss */
#define TOL_BF16_LOSS 2e-3

typedef struct Compiled {
  Arena arena;
  Graph *g; /* the partitioned graph: its op ids are the job's value ids */
  Job *job;
} Compiled;

/* mplc --no-fused-ce (ce_fuse.c off): the unfused cross-entropy's cases, and MPL_REFSTEP_NO_FUSED_CE=1 for FILE */
static bool no_fused_ce;

static void compile(Compiled *c, const char *path, const char *mesh_pp, const char *schedule) {
  arena_init(&c->arena);
  Arena *a = &c->arena;
  Diag d;
  diag_init(&d, a, stderr);
  Node *prog = parse_file(&d, a, path);
  ck_assert_msg(prog && d.nerrors == 0, "%s does not parse", path);
  CompileOptions opt = {.stdlib_dir = "stdlib", .schedule = schedule}; /* CPU only: no PTX */
  if (mesh_pp) {
    opt.mesh_set = true;
    opt.mesh = (Mesh){0, atoi(mesh_pp), 0};
  }
  Graph *g = sema_program(&d, a, prog, &opt);
  ck_assert_msg(g != NULL, "%s does not check", path);
  /* the passes of compiler/main.c, in its order */
  if (!no_fused_ce) g = ce_fuse(g);
  ck_assert_int_eq(bal_stages(&d, g, 0), 0);
  ck_assert_int_eq(ad_backward(g, &d), 0);
  g = prec_apply(prec_lower_half(g));
  g = remat_apply(g);
  part_join_backward(g);
  Partition *p = part_build(&d, g);
  ck_assert_ptr_nonnull(p);
  prec_narrow(p);
  Fused *fu = fuse_partition(&d, a, p);
  ck_assert_ptr_nonnull(fu);
  Costs *cost = cost_partition(a, p);
  Schedule *sched = sched_partition(&d, a, p, cost);
  ck_assert_ptr_nonnull(sched);
  Op **params;
  int nparams = graph_params(p->g, &params, a);
  UpdatePhase *upd = upd_build(a, p, params, nparams);
  PlanIn pin = plan_input(a, p, fu, sched, upd);
  PlanRank *plan = plan_build(a, &pin);
  SchedTiming timing;
  sched_simulate(sched, cost->F, cost->B, cost->W, 0, NULL, NULL, &timing);
  KernelCode code;
  ck_assert_int_eq(cg_kernels(&d, a, fu->ks, opt.gpu_arch, &code), 0);
  char job_path[128];
  snprintf(job_path, sizeof job_path, "/tmp/mpl_refstep_%d.job", (int)getpid());
  JobParts job = {.source = path, .part = p, .fused = fu, .sched = sched, .upd = upd, .plan = plan,
                  .timing = &timing, .flops = cost->flops, .code = &code};
  ck_assert_int_eq(jobgen_write(&d, &job, job_path), 0);
  char err[700];
  c->job = job_read(job_path, err, sizeof err);
  ck_assert_msg(c->job != NULL, "%s", err);
  unlink(job_path);
  c->g = p->g;
}

static double max_abs(const double *x, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++)
    if (!(fabs(x[i]) <= m)) m = isnan(x[i]) ? INFINITY : fabs(x[i]); /* fmax would skip a NaN */
  return m;
}

/* Gradients as computed, not scaled: the clipping instructions of the update phase
 * (NORM_ADD, NORM_ALLREDUCE, CLIP) taken out of every rank's stream. */
static void drop_clipping(Job *job) {
  job->train.grad_clip = 0;
  for (int r = 0; r < job->mesh.pp; r++) {
    JobRank *jr = &job->ranks[r];
    int n = 0;
    for (int i = 0; i < jr->nins; i++) {
      int k = jr->ins[i].kind;
      if (k != JI_NORM_ADD && k != JI_NORM_ALLREDUCE && k != JI_CLIP) jr->ins[n++] = jr->ins[i];
    }
    jr->nins = n;
  }
}

/* The loss of micro-batch vals' inputs by the forward ops alone (ids 0 .. nfwd), float64. */
static double fwd_loss(const Graph *g, double **vals, int nfwd, const RefCtx *ctx) {
  Graph fg = *g;
  fg.nops = nfwd;
  ref_eval(&fg, vals, ctx);
  double l = vals[g->loss][0];
  ref_free(&fg, vals);
  return l;
}

/*
 * The reference's gradients are autodiff's backward graph evaluated in float64, so they
 * share its rules (pass 54): MPL_REFSTEP_FD=1 (random_programs.sh) checks them against
 * central differences of the forward's loss, also in float64, for up to 12 elements of
 * each param in micro-batch 0 (g0: its gradients, already scaled by 1/m as the backward's
 * seed is). A difference of more than 1e-5 of the param's largest gradient (or of 1e-2
 * of the largest of all, as check_step measures) is tried again with steps 10 times
 * smaller and larger, and fails only when none agrees: a step across a kink (relu at 0,
 * a tie of max, a floor) makes one step wrong, not all three. Programs with bf16 or f16
 * roundings are skipped (a rounding is flat between its steps). Returns the number of
 * params with a disagreeing element.
 */
static int fd_check(const char *path, const Graph *g, const Job *job, double **vals, double **g0, const RefCtx *ctx) {
  int nfwd = 0;
  while (nfwd < g->nops && g->ops[nfwd]->phase == PH_FWD) nfwd++;
  if (g->loss >= nfwd) return 0; /* the loss is not in the forward prefix: nothing to difference */
  double m = (double)job->train.microbatches, floor_all = 0;
  for (int p = 0; p < job->nparams; p++) floor_all = fmax(floor_all, 1e-2 * max_abs(g0[p], job->params[p].numel));
  int nbad = 0;
  for (int p = 0; p < job->nparams; p++) {
    const JobParam *jp = &job->params[p];
    double scale = fmax(max_abs(g0[p], jp->numel), floor_all) + 1e-300, worst = 0;
    int64_t stride = jp->numel > 12 ? jp->numel / 12 : 1;
    for (int64_t k = 0; k < jp->numel; k += stride) {
      double x = vals[jp->value][k], best = INFINITY;
      for (int t = 0; t < 3 && !(best <= 1e-5); t++) {
        double h = (t == 0 ? 1e-6 : t == 1 ? 1e-7 : 1e-5) * fmax(1.0, fabs(x));
        vals[jp->value][k] = x + h;
        double fp = fwd_loss(g, vals, nfwd, ctx);
        vals[jp->value][k] = x - h;
        double fm = fwd_loss(g, vals, nfwd, ctx);
        vals[jp->value][k] = x;
        double err = fabs((fp - fm) / (2 * h) / m - g0[p][k]) / scale;
        if (!(err >= best)) best = isnan(err) ? INFINITY : err;
      }
      if (!(best <= worst)) worst = best;
    }
    if (getenv("MPL_REFSTEP_VERBOSE")) fprintf(stderr, "  %s: finite differences %.3g\n", jp->name, worst);
    if (!(worst <= 1e-5))
      fprintf(stderr, "%s: the reference's gradient of %s differs from finite differences by %.3g of its largest "
              "value (autodiff's rule?)\n", path, jp->name, worst), nbad++;
  }
  return nbad;
}

/* Runs one step and compares loss and gradients with the reference. */
static void check_step(const char *path, const char *mesh_pp, const char *schedule) {
  Compiled c;
  compile(&c, path, mesh_pp, schedule);
  Job *job = c.job;
  const Graph *g = c.g;
  /* the reference evaluates the whole program on one device: a split program's loss on a
     rank is its part (tp collectives are identities there), and token data is not read */
  ck_assert_msg(job->mesh.tp == 1 && job->mesh.dp == 1, "%s: test_refstep checks programs at tp = dp = 1 (this one is "
                "tp %d, dp %d: compare meshes with mplrun --save instead)", path, job->mesh.tp, job->mesh.dp);
  ck_assert_msg(job->train.data_kind != DATA_TOKENS, "%s: test_refstep reads synthetic data only", path);
  drop_clipping(job);
  MplRunOpts o;
  mpl_run_opts_default(&o);
  o.steps = 1;
  o.quiet = true;
  o.threads = 1;
  MplRun *run = NULL;
  MplErr e = {{0}};
  ck_assert_msg(mpl_run_init(&run, job, &o, &e) == MPL_OK, "%s", e.msg);
  /* the reference's leaves: the initial params, and the same synthetic data */
  double **vals = calloc((size_t)g->nops, sizeof(double *));
  for (int p = 0; p < job->nparams; p++) {
    const JobParam *jp = &job->params[p];
    float *f = malloc(sizeof(float) * (size_t)jp->numel);
    ck_assert_int_eq(mpl_run_get_param(run, p, f, &e), MPL_OK);
    vals[jp->value] = malloc(sizeof(double) * (size_t)jp->numel);
    for (int64_t i = 0; i < jp->numel; i++) vals[jp->value][i] = f[i];
    free(f);
  }
  ck_assert_msg(mpl_run_train(run, &e) == MPL_OK, "%s", e.msg);
  double loss_mpl = mpl_run_last_loss(run);

  int64_t m = job->train.microbatches, B = job->train.batch / m;
  MplSynthInput *si = calloc((size_t)job->ninputs + 1, sizeof *si);
  for (int i = 0; i < job->ninputs; i++) {
    const JobInput *in = &job->inputs[i];
    si[i].row_elems = job->values[in->value].numel / B;
    si[i].kind = in->dtype == JDT_F32 ? MPL_SYNTH_F32 : in->dtype == JDT_BOOL ? MPL_SYNTH_BOOL : MPL_SYNTH_I32;
    si[i].hi = in->hi > 0 ? (int32_t)in->hi : 2; /* as the runtime's synthetic data */
  }
  MplSynth syn;
  int64_t nsyn = job->train.synthetic_n > 0 ? job->train.synthetic_n : 1024; /* as the runtime's default */
  ck_assert_int_eq(mpl_synth_init(&syn, nsyn, si, job->ninputs, job->train.seed, &e), MPL_OK);
  double loss_ref = 0;
  bool fd = getenv("MPL_REFSTEP_FD") && atoi(getenv("MPL_REFSTEP_FD"));
  for (int i = 0; fd && i < g->nops; i++) fd = g->ops[i]->kind != OP_ROUND_BF16 && g->ops[i]->kind != OP_ROUND_F16;
  int fd_bad = 0;
  double **grad = calloc((size_t)job->nparams, sizeof(double *));
  for (int p = 0; p < job->nparams; p++) grad[p] = calloc((size_t)job->params[p].numel, sizeof(double));
  for (int64_t mb = 0; mb < m; mb++) {
    for (int i = 0; i < job->ninputs; i++) {
      const JobInput *in = &job->inputs[i];
      int64_t n = job->values[in->value].numel;
      void *buf = malloc(sizeof(float) * (size_t)n);
      mpl_synth_rows(&syn, i, 0, B * m, mb * B, B, buf);
      free(vals[in->value]);
      vals[in->value] = malloc(sizeof(double) * (size_t)n);
      for (int64_t k = 0; k < n; k++)
        vals[in->value][k] = in->dtype == JDT_F32 ? ((float *)buf)[k]
                           : in->dtype == JDT_BOOL ? ((uint8_t *)buf)[k] : ((int32_t *)buf)[k];
      free(buf);
    }
    RefCtx ctx = {job->train.seed, 0, mb};
    ref_eval(g, vals, &ctx);
    loss_ref += vals[g->loss][0] / (double)m;
    double **g0 = fd && mb == 0 ? calloc((size_t)job->nparams, sizeof(double *)) : NULL;
    for (int p = 0; p < job->nparams; p++) {
      const JobParam *jp = &job->params[p];
      if (g0) g0[p] = calloc((size_t)jp->numel + 1, sizeof(double));
      for (int u = 0; u < jp->nuses; u++)
        for (int64_t k = 0; k < jp->numel; k++) {
          grad[p][k] += vals[jp->use_value[u]][k];
          if (g0) g0[p][k] += vals[jp->use_value[u]][k];
        }
    }
    if (g0) {
      fd_bad = fd_check(path, g, job, vals, g0, &ctx);
      for (int p = 0; p < job->nparams; p++) free(g0[p]);
      free(g0);
    }
    ref_free(g, vals);
  }
  /* bf16 or f16 roundings: precision = bf16's, or the program's own half types */
  bool bf16 = job->train.precision == PREC_BF16;
  for (int i = 0; i < g->nops; i++) bf16 |= g->ops[i]->kind == OP_ROUND_BF16 || g->ops[i]->kind == OP_ROUND_F16;
  double tol_grad = bf16 ? TOL_BF16_GRAD : 2e-4;
  /* MPL_REFSTEP_TOL_BF16: a tighter one for a program whose reference rounds as its kernels do
     with no boundary to fall across (the fused attention and cross-entropy's small programs:
     their gradients equal the reference's, where a rounding left out moves them by 3e-3) */
  if (bf16 && getenv("MPL_REFSTEP_TOL_BF16")) tol_grad = atof(getenv("MPL_REFSTEP_TOL_BF16"));
  ck_assert_msg(tol_grad > 0, "MPL_REFSTEP_TOL_BF16 must be a positive number");
  if (getenv("MPL_REFSTEP_VERBOSE")) fprintf(stderr, "%s: loss %.7g, reference %.7g\n", path, loss_mpl, loss_ref);
  ck_assert_msg(fabs(loss_mpl - loss_ref) <= (bf16 ? TOL_BF16_LOSS : 1e-4) * fmax(1, fabs(loss_ref)), "%s: loss %.7g, reference %.7g", path,
                loss_mpl, loss_ref);
  /* A tensor's error is measured against its largest gradient, or against 1e-2 of the
   * largest gradient of any param where that is larger: a gradient that is zero in exact
   * arithmetic (the queries' when every key is the same), or small by cancellation, is
   * float32 rounding noise of the step's larger values, not of its own (random programs
   * found q and k gradients of 5e-6 beside others of 0.5, off by 2e-9; of 1e-12 beside
   * 11, off by 5e-7; of 0.008 beside 5.5, off by 7e-6). A wrong gradient still shows: one
   * 1e-4 of the largest and wrong by all of itself is 1e-2 of the divisor, over the
   * tolerance 50 times. */
  double floor_all = 0;
  for (int p = 0; p < job->nparams; p++)
    if (job->params[p].nuses) floor_all = fmax(floor_all, 1e-2 * max_abs(grad[p], job->params[p].numel));
  int nbad = 0;
  for (int p = 0; p < job->nparams; p++) {
    const JobParam *jp = &job->params[p];
    if (jp->nuses == 0) continue;
    float *f = malloc(sizeof(float) * (size_t)jp->numel);
    ck_assert_int_eq(mpl_run_get_grad(run, p, f, &e), MPL_OK);
    double scale = fmax(max_abs(grad[p], jp->numel), floor_all) + 1e-12, worst = 0, d2 = 0, r2 = 0;
    for (int64_t k = 0; k < jp->numel; k++) {
      double r = fabs(f[k] - grad[p][k]) / scale;
      if (!(r <= worst)) worst = isnan(r) ? INFINITY : r; /* a NaN gradient fails, fmax would skip it */
      d2 += (f[k] - grad[p][k]) * (f[k] - grad[p][k]), r2 += grad[p][k] * grad[p][k];
    }
    if (getenv("MPL_REFSTEP_VERBOSE")) fprintf(stderr, "  %s %.3g rms %.3g (largest %.3g)\n", jp->name, worst, sqrt(d2 / (r2 + 1e-30)), scale);
    if (worst >= tol_grad)
      fprintf(stderr, "%s (pp=%s %s): gradient of %s off by %.3g of its largest value\n", path,
              mesh_pp ? mesh_pp : "-", schedule ? schedule : "-", jp->name, worst), nbad++;
    free(f);
  }
  ck_assert_msg(nbad == 0, "%s: %d gradients differ from the reference", path, nbad);
  ck_assert_msg(fd_bad == 0, "%s: %d of the reference's gradients differ from finite differences", path, fd_bad);
  for (int p = 0; p < job->nparams; p++) free(grad[p]), free(vals[job->params[p].value]);
  for (int i = 0; i < job->ninputs; i++) free(vals[job->inputs[i].value]);
  free(grad), free(vals), free(si);
  mpl_synth_free(&syn);
  mpl_run_free(run);
  job_free(job);
  arena_free(&c.arena);
}

START_TEST(test_mlp_two_stages) { check_step("tests/e2e/small_mlp.mpl", NULL, NULL); }
END_TEST

START_TEST(test_gpt_one_stage) { check_step("tests/e2e/small_gpt.mpl", NULL, NULL); }
END_TEST

START_TEST(test_gpt_pipelines) {
  check_step("tests/e2e/small_gpt.mpl", "2", "gpipe");
  check_step("tests/e2e/small_gpt.mpl", "4", "zb");
  check_step("tests/e2e/small_gpt.mpl", "2", "interleaved(2)");
}
END_TEST

/* precision = bf16: the reference rounds where the kernels do (ROUND_BF16 in float64); a
 * program's own bf16 and f16 tensors (ROUND_BF16, ROUND_F16 after each op), two stages */
START_TEST(test_bf16) {
  check_step("tests/e2e/bf16_mlp.mpl", NULL, NULL);
  check_step("tests/e2e/bf16_gpt.mpl", NULL, NULL);
  check_step("tests/e2e/bf16_gpt.mpl", "2", "1f1b");
  check_step("tests/e2e/half_bf16.mpl", NULL, NULL);
  check_step("tests/e2e/half_f16.mpl", NULL, NULL);
}
END_TEST

START_TEST(test_examples) {
  check_step("examples/mlp.mpl", NULL, NULL);
  check_step("examples/layers_on_devices.mpl", NULL, NULL);
  check_step("tests/e2e/recompute.mpl", NULL, NULL);
  check_step("tests/e2e/row_chains.mpl", NULL, NULL);
  check_step("tests/e2e/row_chains_t.mpl", NULL, NULL);
  check_step("tests/e2e/row_chains_slice.mpl", NULL, NULL);
  check_step("tests/e2e/row_chains_bcast.mpl", NULL, NULL);
  check_step("tests/e2e/pipeline_edges.mpl", NULL, NULL); /* pp = 2: a loss that is an alias, against float64 */
  check_step("tests/e2e/long_reductions.mpl", NULL, NULL); /* lane loops in chunks: 0.036 off in one order a lane */
  check_step("tests/e2e/weight_grad_cross.mpl", "2", "zb"); /* weight-like gradients crossing stages */
  check_step("tests/e2e/weight_grad_cross.mpl", "2", "zbv");
  check_step("tests/e2e/long_k_grad.mpl", NULL, NULL); /* a product over 2^20 rows: K in chunks summed pairwise */
  check_step("tests/e2e/long_chain.mpl", NULL, NULL); /* 600 fused multiplies: groups of at most 128 ops */
}
END_TEST

/* the fused cross-entropy (ce_fuse.c, the GPTs above have it) over a vocabulary of 2500
 * classes (one block of rows), untied (f32) and tied (bf16) heads; and --no-fused-ce's products and
 * cross_entropy on the GPT */
START_TEST(test_fused_ce) {
  check_step("tests/e2e/fused_ce.mpl", NULL, NULL);
  check_step("tests/e2e/fused_ce_bf16.mpl", NULL, NULL);
  no_fused_ce = true;
  check_step("tests/e2e/small_gpt.mpl", NULL, NULL);
  check_step("tests/e2e/bf16_gpt.mpl", NULL, NULL);
  check_step("tests/e2e/fused_ce.mpl", NULL, NULL);
  no_fused_ce = false;
}
END_TEST


/* mpl_run_get_grad under ZeRO-1 at dp = 2 (each replica keeps a chunk of every gradient)
 * gives every param's whole gradient: bitwise that of the same run without ZeRO (the dp
 * all-reduce and ZeRO's reduce-scatter add the two replicas' halves alike; clipping is off,
 * its norm is summed by chunks). d = 33 makes uneven chunks (biases of 33 and 99). The jobs
 * come from mplc, next to this binary's folder. (Pass 89: a chunk read from its start, not
 * its replica's offset, passed every suite.) */
START_TEST(test_zero1_grads) {
  char exe[4096] = "", cmd[3 * 4096], job[2][128];
  ck_assert(readlink("/proc/self/exe", exe, sizeof exe - 1) > 0);
  *strrchr(exe, '/') = 0; /* build/tests */
  *strrchr(exe, '/') = 0; /* build */
  float *grads[2][64] = {{0}};
  int64_t numel[64];
  int np = 0;
  bool uneven = false;
  for (int z = 0; z < 2; z++) {
    snprintf(job[z], sizeof job[z], "/tmp/mpl_refstep_zero%d_%d.job", z, (int)getpid());
    snprintf(cmd, sizeof cmd,
             "sed -e '/^  grad_clip = 1.0/d' -e 's/^  steps = 3/  zero = %d/' tests/e2e/parallel_gpt.mpl "
             "> %s.mpl && '%s/mplc' -I stdlib %s.mpl -D d=33 -D heads=3 --mesh dp=2 -o %s && rm %s.mpl",
             z, job[z], exe, job[z], job[z], job[z]);
    ck_assert_msg(system(cmd) == 0, "%s", cmd);
    char err[700];
    Job *j = job_read(job[z], err, sizeof err);
    ck_assert_msg(j != NULL, "%s", err);
    unlink(job[z]);
    ck_assert_int_eq(j->train.zero, z);
    MplRunOpts o;
    mpl_run_opts_default(&o);
    o.steps = 1, o.quiet = true, o.threads = 1;
    MplRun *run = NULL;
    MplErr e = {{0}};
    ck_assert_msg(mpl_run_init(&run, j, &o, &e) == MPL_OK, "%s", e.msg);
    ck_assert_msg(mpl_run_train(run, &e) == MPL_OK, "%s", e.msg);
    np = j->nparams;
    ck_assert_int_le(np, 64);
    for (int p = 0; p < np; p++) {
      numel[p] = j->params[p].numel;
      uneven |= numel[p] % 2 != 0;
      grads[z][p] = malloc(sizeof(float) * (size_t)numel[p]);
      ck_assert_int_eq(mpl_run_get_grad(run, p, grads[z][p], &e), MPL_OK);
    }
    mpl_run_free(run);
    job_free(j);
  }
  ck_assert_msg(uneven, "no param of an odd size: the chunks are even");
  for (int p = 0; p < np; p++) {
    ck_assert_msg(memcmp(grads[0][p], grads[1][p], sizeof(float) * (size_t)numel[p]) == 0,
                  "param %d (%lld elements): ZeRO-1's gradient differs from the run without it", p, (long long)numel[p]);
    free(grads[0][p]), free(grads[1][p]);
  }
}
END_TEST


/* Clipping with a coefficient just under 1: one step of small_gpt with clipping out of
 * reach (grad_clip 1e30) gives g and its norm (in double here); with grad_clip = 0.9995 of
 * that norm the gradients are g * grad_clip / (norm + 1e-6), as torch's clip_grad_norm_
 * (pass 89: clipping skipped for coefficients of 0.999 or more passed every suite). */
START_TEST(test_clip_near_one) {
  Compiled c;
  compile(&c, "tests/e2e/small_gpt.mpl", NULL, NULL);
  ck_assert_msg(c.job->train.grad_clip > 0, "small_gpt.mpl no longer clips");
  int np = c.job->nparams;
  float *g[2][64];
  double norm = 0, clip = 0;
  ck_assert_int_le(np, 64);
  for (int run_i = 0; run_i < 2; run_i++) {
    c.job->train.grad_clip = run_i == 0 ? 1e30 : clip; /* read by the update phase at run time */
    MplRunOpts o;
    mpl_run_opts_default(&o);
    o.steps = 1, o.quiet = true, o.threads = 1;
    MplRun *run = NULL;
    MplErr e = {{0}};
    ck_assert_msg(mpl_run_init(&run, c.job, &o, &e) == MPL_OK, "%s", e.msg);
    ck_assert_msg(mpl_run_train(run, &e) == MPL_OK, "%s", e.msg);
    for (int p = 0; p < np; p++) {
      int64_t n = c.job->params[p].numel;
      g[run_i][p] = calloc((size_t)n + 1, sizeof(float));
      if (c.job->params[p].nuses) ck_assert_int_eq(mpl_run_get_grad(run, p, g[run_i][p], &e), MPL_OK);
      for (int64_t k = 0; run_i == 0 && k < n; k++) norm += (double)g[0][p][k] * g[0][p][k];
    }
    mpl_run_free(run);
    if (run_i == 0) norm = sqrt(norm), clip = 0.9995 * norm;
  }
  double coef = clip / (norm + 1e-6), worst = 0;
  for (int p = 0; p < np; p++) {
    for (int64_t k = 0; k < c.job->params[p].numel; k++) {
      double want = g[0][p][k] * coef, d = fabs(g[1][p][k] - want) / (norm * 1e-3 + fabs(want));
      if (!(d <= worst)) worst = d;
    }
    free(g[0][p]), free(g[1][p]);
  }
  ck_assert_msg(worst < 1e-5, "gradients clipped by %.6f (norm %.6g): off by %.3g of each element", coef, norm, worst);
  job_free(c.job);
  arena_free(&c.arena);
}
END_TEST

static char **one_args; /* test_refstep FILE [PP [SCHEDULE]]: check one program */
static int one_argc;

START_TEST(test_one) {
  check_step(one_args[1], one_argc > 2 ? one_args[2] : NULL, one_argc > 3 ? one_args[3] : NULL);
}
END_TEST

int main(int argc, char **argv) {
  one_args = argv, one_argc = argc;
  no_fused_ce = getenv("MPL_REFSTEP_NO_FUSED_CE") && atoi(getenv("MPL_REFSTEP_NO_FUSED_CE"));
  Suite *s = suite_create("refstep");
  TCase *tc = tcase_create("refstep");
  tcase_set_timeout(tc, 300);
  if (argc > 1) {
    tcase_add_test(tc, test_one);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
  }
  tcase_add_test(tc, test_mlp_two_stages);
  tcase_add_test(tc, test_gpt_one_stage);
  tcase_add_test(tc, test_gpt_pipelines);
  tcase_add_test(tc, test_examples);
  tcase_add_test(tc, test_bf16);
  tcase_add_test(tc, test_fused_ce);
  tcase_add_test(tc, test_zero1_grads);
  tcase_add_test(tc, test_clip_near_one);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
