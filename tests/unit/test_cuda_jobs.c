/*
 * test_cuda_jobs.c — whole jobs trained on the cuda device without a GPU: mplc compiles a
 * model; the job's own CUDA source (what NVRTC compiles for a GPU; the job gets a stand-in
 * PTX naming its entries, which the mock driver loads) is built for the host
 * with cuda_gen_host.h into a shared object, whose kernels the mock driver
 * (cuda_mock.c) runs for the job's launches; the runtime's CUDA programs (optimizer,
 * fused attention, fused cross-entropy, embedding gradient) run as their host copies
 * (cuda_mock_progs.c, cuda_mock_sdpa.c). So the real device_cuda.c, the executor's path
 * for devices with their own memory and every generated kernel run as on a GPU, and:
 *
 *  - the first step's loss and every param's gradient agree with the cpu device's (the
 *    LLVM kernels, oneDNN) within a tolerance a precision (f32 1e-4, bf16 2e-2 of the
 *    param's largest element, or of a thousandth of the largest gradient where that is
 *    larger; the two devices differ in libm against the LLVM's math, products
 *    summed in double by the mock, and bf16 roundings that can fall the other way);
 *  - the loss after a few AdamW steps agrees too (1e-3 relative, bf16 2e-2);
 *  - a token model samples the same 8 tokens from its initial params (temperature 1: a
 *    draw flips only if a uniform falls within rounding of a bin's edge);
 *  - no warp of a generated kernel diverges at a shuffle or __syncwarp, no kernel reads or
 *    writes outside the arena (the mock's checks), every launch has a host copy;
 *  - all of it with the mock's streams deferred (MPL_MOCK_DEFER, default 1 here; 0: the eager
 *    mock): work runs when the host waits for it, other streams' now and then early, so a
 *    missing wait between the compute and comm streams, or between ranks, changes numbers.
 *
 * The models: the repository's tests/e2e programs, covering the language's ops (v1 and v2),
 * dropout, recomputation, f32 and bf16, fused and lowered attention and cross-entropy, on
 * one rank and on several (pp with each schedule, tp, dp, ZeRO-1: the ranks are threads
 * of this process on the mock's one device, so comm_cuda_world.c's device messages and
 * collectives run too; the mock runs one kernel at a time); then random programs with the
 * meshes and placements they draw (tests/tools/randprog.py;
 * MPL_CUDA_JOBS_SEEDS picks the seeds). Run from the repository root (tests/run.sh does); mplc is
 * found next to this binary's folder, the C compiler as $CC (default cc).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/device.h"
#include "runtime/exec.h"
#include "runtime/job.h"
#include "runtime/mpl.h"

#ifdef MPL_HAVE_CUDA

#include "cuda_mock.h"
#include "run_cmd.h"

static char build_dir[PATH_MAX]; /* the folder holding mplc and tests/ */
static char root_dir[PATH_MAX];  /* the repository (the current folder) */
static char tmp_dir[PATH_MAX];

/* One model: its file, mplc's flags, whether it takes bf16's tolerances (bf16, tf32), a runtime
 * program's kernel it must launch (NULL: none in particular), and a sed script that edits
 * the file first (NULL: none). */
typedef struct Case {
  const char *model, *flags;
  bool bf16;
  const char *launched, *edit;
  bool exact; /* the step-1 loss bit for bit (no product in it: the generated kernels alone) */
} Case;
#define GPT "--mesh pp=1 -D d=64 -D layers=2 --no-fused-sdpa"
#define LLAMA "-D stages=1 -D d=64 -D heads=4 -D kv_heads=2 -D hidden=96 -D layers=2 -D batch=4 -D ctx=16"
#define MOE "--mesh tp=1 -D d=32 -D heads=2 -D hidden=64 -D ctx=16"
static const Case cases[] = {
    {"tests/e2e/small_gpt.mpl", GPT, false, "mpl_emb_grad", NULL, false},
    {"tests/e2e/dropout.mpl", "--mesh pp=1", false, NULL, NULL, false},
    {"tests/e2e/remat_chain.mpl", "", false, NULL, NULL, false},
    {"tests/e2e/row_chains.mpl", "--mesh pp=1", false, NULL, NULL, false},
    {"tests/e2e/fused_ce.mpl", "--no-fused-sdpa", false, "mpl_ce_rows", NULL, false},
    {"tests/e2e/fused_ce.mpl", "--no-fused-sdpa --no-fused-ce", false, "mpl_adamw_list", NULL, false},
    {"tests/e2e/ops_v2_elementwise.mpl", "", false, NULL, NULL, false},
    {"tests/e2e/ops_v2_gather.mpl", "", false, NULL, NULL, false},
    {"tests/e2e/ops_v2_reductions.mpl", "", false, NULL, NULL, false},
    {"tests/e2e/ops_v2_conv.mpl", "", false, NULL, NULL, false},
    {"examples/llama.mpl", LLAMA, false, "mpl_sdpa_bwd_dk_x3", NULL, false}, /* an f32 step: 3xtf32 */
    /* Llama's head size, 128: the 3xtf32 kernels reading q (k) from shared memory, dout (v) from global */
    {"examples/llama.mpl", "-D stages=1 -D d=256 -D heads=2 -D kv_heads=1 -D hidden=128 -D layers=1 -D batch=4 -D ctx=24",
     false, "mpl_sdpa_bwd_q_x3", NULL, false},
    {"examples/moe.mpl", MOE, false, NULL, NULL, false},
    {"tests/unit/jobs/vit.mpl", "", false, "mpl_sdpa_fwd_x3", NULL, false},
    {"tests/e2e/bf16_gpt.mpl", GPT, true, NULL, NULL, false},
    {"tests/e2e/half_bf16.mpl", "--mesh pp=1 --no-fused-sdpa", true, NULL, NULL, false},
    {"examples/llama.mpl", LLAMA " --precision bf16", true, "mpl_sdpa_bwd_kv_tc", NULL, false},
    /* a tf32 step: the attention on tensor cores with tf32 operands (the bf16 tolerances) */
    {"examples/llama.mpl", LLAMA " --precision tf32", true, "mpl_sdpa_bwd_dk_tc", NULL, false},
    /* several ranks, threads of one process on the one device (comm_cuda_world.c's
       messages and collectives through device copies) */
    {"tests/e2e/small_gpt.mpl", "--mesh pp=2 -D d=64 -D layers=2 --no-fused-sdpa", false, NULL, NULL, false},
    {"tests/e2e/small_gpt.mpl", "--mesh pp=2 --schedule zb -D d=64 -D layers=2", false, "mpl_sdpa_fwd_x3", NULL, false},
    {"tests/e2e/small_gpt.mpl", "--mesh pp=2 --schedule 'interleaved(2)' -D d=64 -D layers=4", false, NULL, NULL, false},
    {"tests/e2e/small_gpt.mpl", "--mesh pp=2 --schedule zbv -D d=64 -D layers=4", false, NULL, NULL, false},
    {"tests/e2e/parallel_gpt.mpl", "--mesh pp=2,tp=2,dp=2 --no-fused-sdpa", false, NULL, NULL, false},
    {"examples/llama.mpl", "-D stages=2 -D d=64 -D heads=4 -D kv_heads=2 -D hidden=96 -D layers=2 -D batch=4 -D ctx=16 --mesh pp=2,tp=2", false, NULL, NULL, false},
    {"examples/moe.mpl", "--mesh tp=2 -D d=32 -D heads=2 -D hidden=64 -D ctx=16", false, NULL, NULL, false},
    {"tests/e2e/bf16_gpt.mpl", "--mesh pp=2 -D d=64 -D layers=2", true, NULL, NULL, false},
    {"tests/e2e/dropout.mpl", "--mesh pp=2", false, NULL, NULL, false},
    {"tests/e2e/pipeline_edges.mpl", "", false, NULL, NULL, false}, /* every micro-batch's loss read at the step's end */
    {"tests/e2e/long_reductions.mpl", "-D rows=16 -D cumn=300", false, NULL, "s/^  return whole + row + col/  return row + whole * 0.0 + col * 0.0/", true}, /* lane loops in chunks (kernel.h): the row sum decides the loss's bits; cumsum in blocks with a ragged last one */
    {"tests/e2e/column_grad.mpl", "", false, NULL, NULL, false}, /* a warp kernel updating w[k * 32 + o] */
    {"tests/e2e/parallel_gpt.mpl", "--mesh pp=2,dp=2 --no-fused-sdpa", false, NULL, "s/^  steps = 3/  zero = 1/", false},
};
enum { NFIXED = sizeof cases / sizeof cases[0], STEPS = 3, MAX_RANDOM = 4096 };

/* Random programs (tests/tools/randprog.py SEED), after the fixed cases, with the mesh
 * and placement they draw (several ranks are threads on the one device):
 * MPL_CUDA_JOBS_SEEDS ("1-200", "7,9") picks the seeds drawn (default below). */
static Case random_cases[MAX_RANDOM];
static int nrandom;
static const char *const default_seeds = "1,7,40";

/* Draws seed's program; bf16 when it says precision = bf16. (From main: no ck_assert here.) */
static void add_random(int seed) {
  if (nrandom == MAX_RANDOM) return;
  char path[PATH_MAX + 32], cmd[3 * PATH_MAX], line[4096];
  snprintf(path, sizeof path, "%s/rand%d.mpl", tmp_dir, seed);
  const char *py = getenv("PYTHON");
  snprintf(cmd, sizeof cmd, "'%s' tests/tools/randprog.py %d '%s' > /dev/null", py && *py ? py : "python3", seed, path);
  FILE *f = system(cmd) == 0 ? fopen(path, "r") : NULL;
  if (!f) return;
  bool bf16 = false;
  while (fgets(line, sizeof line, f)) bf16 |= strstr(line, "precision = bf16") != NULL;
  fclose(f);
  random_cases[nrandom++] = (Case){strdup(path), "--no-fused-sdpa", bf16, NULL, NULL, false};
}

static void add_random_seeds(const char *spec) {
  for (const char *p = spec; *p;) {
    char *end;
    long a = strtol(p, &end, 10), b = a;
    if (end == p) break;
    if (*end == '-') b = strtol(end + 1, &end, 10);
    for (long s = a; s <= b; s++) add_random((int)s);
    p = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') break;
  }
}

#define NCASES (NFIXED + nrandom)
static const Case *case_at(int i) { return i < NFIXED ? &cases[i] : &random_cases[i - NFIXED]; }

#include "cuda_job_host.h"

/* ---- training on the two devices ------------------------------------------------------------ */

typedef struct Trained {
  double loss1, lossk; /* the first step's loss; the last of STEPS */
  float *grads;        /* the first step's gradients, every param's, concatenated */
  size_t n;
  bool diverged;       /* the cpu device's training stopped at a non-finite loss or norm */
} Trained;

/* A quiet run's options: `steps` steps on ops (NULL: the cpu device). */
static MplRunOpts run_opts(const MplDeviceOps *ops, int64_t steps) {
  MplRunOpts o;
  mpl_run_opts_default(&o);
  o.quiet = true;
  o.steps = steps;
  o.device_ops = ops;
  return o;
}

/* A run of `steps` steps; NULL when the cpu device's training stops at a non-finite value
 * (a random program may diverge: its first step is still test_refstep's to check). */
static MplRun *start(const Job *job, const MplDeviceOps *ops, int64_t steps) {
  MplRunOpts o = run_opts(ops, steps);
  MplRun *r = NULL;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, job, &o, &err) == MPL_OK, "%s: %s", ops ? ops->name : "cpu", err.msg);
  if (mpl_run_train(r, &err) != MPL_OK && !ops && (strstr(err.msg, "is nan") || strstr(err.msg, "is inf"))) {
    mpl_run_free(r);
    return NULL;
  }
  ck_assert_msg(err.msg[0] == 0, "%s: %s%s%s", ops ? ops->name : "cpu", err.msg, ops && gen_failed ? "; " : "",
                ops && gen_failed ? gen_failed() : "");
  return r;
}

static Trained train(const Job *job, const MplDeviceOps *ops) {
  Trained t = {0};
  MplErr err = {{0}};
  MplRun *r = start(job, ops, 1);
  if (!r) return (Trained){.diverged = true};
  t.loss1 = mpl_run_last_loss(r);
  for (int p = 0; p < job->nparams; p++) t.n += (size_t)mpl_run_param(r, p)->numel;
  t.grads = malloc(sizeof(float) * (t.n + 1));
  float *at = t.grads;
  for (int p = 0; p < job->nparams; p++) {
    if (job->params[p].nuses == 0) /* no op's gradient reaches it (a topk's indices alone): none kept */
      memset(at, 0, sizeof(float) * (size_t)mpl_run_param(r, p)->numel);
    else ck_assert_msg(mpl_run_get_grad(r, p, at, &err) == MPL_OK, "%s", err.msg);
    at += mpl_run_param(r, p)->numel;
  }
  mpl_run_free(r);
  r = start(job, ops, STEPS);
  if (!r) {
    free(t.grads);
    return (Trained){.diverged = true};
  }
  t.lossk = mpl_run_last_loss(r);
  mpl_run_free(r);
  if (ops && gen_failed) {
    const char *why = gen_failed();
    ck_assert_msg(!*why, "a generated kernel: %s", why);
  }
  return t;
}

/* A token model's text sampled from its initial params (--sample 8 at temperature 1, seed
 * 5, prompt bytes 1 and 2: below any vocabulary of 3 or more), or NULL for a model that is
 * not one (sample.c's refusal). The ranks run the sampling pass through the device's own
 * messages and collectives, as on a GPU. */
static char *sample_text(const Job *job, const MplDeviceOps *ops) {
  MplRun *r = start(job, ops, 0);
  ck_assert(r != NULL);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ck_assert(f != NULL);
  MplSampleOpts so = {.temperature = 1.0, .has_seed = true, .seed = 5};
  MplErr err = {{0}};
  int st = mpl_run_sample(r, "\x01\x02", 8, &so, f, &err);
  fclose(f);
  mpl_run_free(r);
  if (st != MPL_OK && (strstr(err.msg, "needs a token model") || strstr(err.msg, "not [B, T, vocab]") ||
                       strstr(err.msg, "outside the vocabulary"))) {
    free(buf);
    return NULL;
  }
  ck_assert_msg(st == MPL_OK, "%s: --sample: %s", ops ? ops->name : "cpu", err.msg);
  return buf;
}

/* Compiles c into tmp_dir (tag) and loads its kernels for the mock. */
static Job *compile_case(const Case *c, const char *tag) {
  char job_path[PATH_MAX + 80], cmd[6 * PATH_MAX], out[8192], jerr[512] = "", edited[PATH_MAX + 80];
  snprintf(job_path, sizeof job_path, "%s/%s.job", tmp_dir, tag);
  const char *model = c->model;
  if (c->edit) {
    snprintf(edited, sizeof edited, "%s/%s.mpl", tmp_dir, tag);
    snprintf(cmd, sizeof cmd, "sed -e '%s' '%s' > '%s'", c->edit, c->model, edited);
    ck_assert_msg(run_cmd(cmd, out, sizeof out) == 0, "%s", out);
    model = edited;
  }
  snprintf(cmd, sizeof cmd, "'%s/mplc' -I '%s/stdlib' '%s' %s -o '%s'", build_dir, root_dir, model, c->flags, job_path);
  ck_assert_msg(run_cmd(cmd, out, sizeof out) == 0, "%s", out);
  Job *job = job_read(job_path, jerr, sizeof jerr);
  ck_assert_msg(job != NULL, "%s", jerr);
  load_host_kernels(job, tag, tmp_dir, root_dir);
  return job;
}

/* Compiles case i, trains it on both devices and compares. */
START_TEST(test_job_on_mock_gpu) {
  const Case *c = case_at(_i);
  char tag[64];
  snprintf(tag, sizeof tag, "case%d", _i);
  Job *job = compile_case(c, tag);
  Trained cpu = train(job, NULL);
  if (cpu.diverged) { /* a random program whose training diverges on the cpu (seeds 936, 1186) */
    ck_assert_msg(_i >= NFIXED, "%s %s: the cpu device's training diverged", c->model, c->flags);
    printf("%-36s %-16s diverges on the cpu within %d steps: not compared\n", c->model, c->flags, STEPS);
    job_free(job);
    return;
  }
  Trained gpu = train(job, &mpl_device_cuda_ops);
  ck_assert_uint_eq(cpu.n, gpu.n);
  double tol_g = c->bf16 ? 2e-2 : 1e-4, tol_l = c->bf16 ? 2e-2 : 1e-3;
  double l1 = fabs(cpu.loss1 - gpu.loss1) / fmax(1e-3, fabs(cpu.loss1));
  double lk = fabs(cpu.lossk - gpu.lossk) / fmax(1e-3, fabs(cpu.lossk));
  ck_assert_msg(isfinite(cpu.loss1) && l1 <= 1e-5 * (c->bf16 ? 100 : 1), "%s %s: step 1 loss cpu %.9g, cuda %.9g",
                c->model, c->flags, cpu.loss1, gpu.loss1);
  ck_assert_msg(lk <= tol_l, "%s %s: step %d loss cpu %.9g, cuda %.9g", c->model, c->flags, STEPS, cpu.lossk,
                gpu.lossk);
  ck_assert_msg(!c->exact || cpu.loss1 == gpu.loss1, "%s %s: step 1 loss cpu %a, cuda %a: not the same bits", c->model,
                c->flags, cpu.loss1, gpu.loss1);
  const float *a = cpu.grads, *b = gpu.grads;
  /* each param against its largest element, or a thousandth of the largest gradient of all
     where that is larger: a gradient that is zero in exact arithmetic (a key's bias under a
     softmax) holds rounding noise alone (1e-10), which the two devices round differently */
  double worst = 0, all = 0;
  for (size_t i = 0; i < cpu.n; i++) all = fmax(all, fabs(a[i]));
  for (int p = 0; p < job->nparams; p++) {
    int64_t n = job->params[p].numel;
    double m = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
      m = fmax(m, fabs(a[i]));
      double d = fabs((double)a[i] - b[i]);
      e = d > e || isnan(d) ? d : e;
    }
    double rel = e / fmax(fmax(m, 1e-3 * all), 1e-12);
    worst = fmax(worst, rel);
    ck_assert_msg(rel <= tol_g, "%s %s: the gradient of %s differs by %g of its largest element %g (tolerance %g)",
                  c->model, c->flags, job->params[p].name, rel, m, tol_g);
    a += n, b += n;
  }
  if (c->launched)
    ck_assert_msg(cuda_mock_launches(c->launched) > 0, "%s %s: %s never ran", c->model, c->flags, c->launched);
  /* a token model samples the same text on both devices */
  char *ts_cpu = sample_text(job, NULL), *ts_gpu = ts_cpu ? sample_text(job, &mpl_device_cuda_ops) : NULL;
  ck_assert_msg(!ts_cpu || !strcmp(ts_cpu, ts_gpu), "%s %s: --sample 8: cpu '%s', cuda '%s'", c->model, c->flags,
                ts_cpu, ts_gpu);
  printf("%-36s %-16s loss %.7f / %.7f, step %d %.7f / %.7f, gradients within %.2g%s\n", c->model, c->flags, cpu.loss1,
         gpu.loss1, STEPS, cpu.lossk, gpu.lossk, worst, ts_cpu ? ", the same sampled text" : "");
  free(ts_cpu), free(ts_gpu);
  free(cpu.grads), free(gpu.grads);
  job_free(job);
}
END_TEST

/* ---- MPL_CUDA_GRAPHS ------------------------------------------------------------------------ */

/* Jobs trained with and without graphs: token data copied in each step, the
 * validation passes (eval_every), clipping's norm read by the host, the fused attention and
 * cross-entropy, dropout's step-dependent masks, SGD and AdamW, bf16, run-time checks of
 * computed indices (the host reads each check's count); then text sampled from the trained
 * token model. */
static const Case graph_cases[] = {
    {"tests/e2e/tiny_lm.mpl", "--mesh pp=1", false, "mpl_ce_rows",
     "s/ @stage([i1])//; s|^  steps = 6|  steps = 6\\n  val = tokens(\"examples/data/tiny.bin\")\\n  eval_every = 2\\n  eval_batches = 2|", false},
    {"tests/e2e/dropout.mpl", "--mesh pp=1", false, NULL, NULL, false},
    {"tests/e2e/small_gpt.mpl", GPT, false, "mpl_emb_grad", NULL, false},
    {"examples/llama.mpl", LLAMA " --precision bf16", true, "mpl_sdpa_bwd_kv_tc", NULL, false},
    {"tests/e2e/ops_v2_gather.mpl", "", false, NULL, NULL, false},
    /* several ranks (threads on the mock's one device): the messages and collectives between graphs */
    {"tests/e2e/small_gpt.mpl", "--mesh pp=2 -D d=64 -D layers=2 --no-fused-sdpa", false, NULL, NULL, false},
    {"tests/e2e/parallel_gpt.mpl", "--mesh pp=2,tp=2,dp=2 --no-fused-sdpa", false, NULL, NULL, false},
    {"examples/moe.mpl", "--mesh tp=2 -D d=32 -D heads=2 -D hidden=64 -D ctx=16", false, NULL, NULL, false},
    {"tests/e2e/parallel_gpt.mpl", "--mesh pp=2,dp=2 --no-fused-sdpa", false, NULL, "s/^  steps = 3/  zero = 1/", false},
};
enum { NGRAPH = sizeof graph_cases / sizeof graph_cases[0], GRAPH_STEPS = 4 };

/* GRAPH_STEPS steps on the mock GPU; every param after them, concatenated, and the losses. */
typedef struct GraphRun {
  float *params;
  size_t n;
  double loss, val;
  char *text;           /* a token model's 8 tokens sampled after training (seed 5), else NULL */
  int live;             /* the mock's objects left after the run */
  MockGraphStats stats; /* the mock's graph counts during the run */
  char diverged[sizeof(MplErr)]; /* a random program's training stopped at a non-finite value: why */
} GraphRun;

static GraphRun graph_run(const Job *job, const char *graphs) {
  if (graphs) setenv("MPL_CUDA_GRAPHS", graphs, 1);
  else unsetenv("MPL_CUDA_GRAPHS");
  MockGraphStats before = cuda_mock_graph_stats();
  MplRunOpts o = run_opts(&mpl_device_cuda_ops, GRAPH_STEPS);
  MplRun *r = NULL;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, job, &o, &err) == MPL_OK, "%s", err.msg);
  GraphRun g = {0};
  if (mpl_run_train(r, &err) != MPL_OK) {
    unsetenv("MPL_CUDA_GRAPHS");
    ck_assert_msg(strstr(err.msg, "is nan") || strstr(err.msg, "is inf"), "%s", err.msg);
    snprintf(g.diverged, sizeof g.diverged, "%s", err.msg);
    mpl_run_free(r);
    return g;
  }
  unsetenv("MPL_CUDA_GRAPHS");
  g.loss = mpl_run_last_loss(r), g.val = mpl_run_val_loss(r);
  for (int p = 0; p < job->nparams; p++) g.n += (size_t)mpl_run_param(r, p)->numel;
  g.params = malloc(sizeof(float) * (g.n + 1));
  float *at = g.params;
  for (int p = 0; p < job->nparams; p++) {
    ck_assert_msg(mpl_run_get_param(r, p, at, &err) == MPL_OK, "%s", err.msg);
    at += mpl_run_param(r, p)->numel;
  }
  size_t len = 0;
  FILE *f = open_memstream(&g.text, &len);
  ck_assert(f != NULL);
  MplSampleOpts so = {.temperature = 1.0, .has_seed = true, .seed = 5};
  int st = mpl_run_sample(r, "\x01\x02", 8, &so, f, &err);
  fclose(f);
  if (st != MPL_OK) {
    ck_assert_msg(strstr(err.msg, "needs a token model") || strstr(err.msg, "not [B, T, vocab]"), "%s", err.msg);
    free(g.text);
    g.text = NULL;
  }
  mpl_run_free(r);
  MockGraphStats after = cuda_mock_graph_stats();
  g.stats = (MockGraphStats){after.captures - before.captures, after.instantiated - before.instantiated,
                             after.updated - before.updated,   after.refused - before.refused,
                             after.launches - before.launches, after.nodes - before.nodes,
                             after.eager - before.eager};
  g.live = cuda_mock_live(); /* graphs, captures, the workspace, messages' buffers: all freed */
  return g;
}

/* The same bits with graphs as without: every param after GRAPH_STEPS steps, the last loss
 * and the validation loss (and, with several ranks, the messages and collectives between
 * each rank's graphs); the graphs were captured from the second step on, the later
 * steps' updated into the first's (the step numbers, AdamW's corrections), and (on the
 * small GPT) one refused update, as the driver refuses a changed graph, is instantiated
 * anew, the same bits still. */
START_TEST(test_graphs_same_bits) {
  const Case *c = _i < NGRAPH ? &graph_cases[_i] : &random_cases[_i - NGRAPH];
  char tag[64];
  snprintf(tag, sizeof tag, "graph%d", _i);
  Job *job = compile_case(c, tag);
  bool single = job->mesh.pp * job->mesh.tp * job->mesh.dp == 1;
  GraphRun eager = graph_run(job, NULL), graph = graph_run(job, "1");
  if (eager.diverged[0]) { /* a random program (seeds 936, 1186): the same stop with graphs */
    ck_assert_msg(_i >= NGRAPH && !strcmp(eager.diverged, graph.diverged), "%s: '%s' without graphs, '%s' with",
                  c->model, eager.diverged, graph.diverged);
    printf("%-36s diverges within %d steps, with graphs as without: %s\n", c->model, GRAPH_STEPS, eager.diverged);
    job_free(job);
    return;
  }
  ck_assert_msg(!graph.diverged[0], "%s: %s with graphs only", c->model, graph.diverged);
  ck_assert_int_eq(eager.stats.captures, 0);
  ck_assert_uint_eq(eager.n, graph.n);
  ck_assert_msg(memcmp(eager.params, graph.params, sizeof(float) * eager.n) == 0,
                "%s %s: the params after %d steps differ with graphs", c->model, c->flags, GRAPH_STEPS);
  ck_assert_msg(eager.loss == graph.loss, "%s: loss %a without graphs, %a with", c->model, eager.loss, graph.loss);
  ck_assert_msg(isnan(eager.val) ? isnan(graph.val) : eager.val == graph.val, "%s: validation loss %a, %a", c->model,
                eager.val, graph.val);
  ck_assert_msg(_i != 0 || isfinite(graph.val), "%s: no validation ran", c->model);
  ck_assert_msg(graph.live == 0 && eager.live == 0, "%s: %d CUDA objects left with graphs, %d without",
                c->model, graph.live, eager.live);
  ck_assert_msg(!eager.text == !graph.text && (!eager.text || !strcmp(eager.text, graph.text)),
                "%s: sampled '%s' without graphs, '%s' with", c->model, eager.text ? eager.text : "(none)",
                graph.text ? graph.text : "(none)");
  const MockGraphStats *s = &graph.stats;
  ck_assert_msg(s->launches >= GRAPH_STEPS - 1 && s->launches == s->captures && s->refused == 0 &&
                    s->instantiated + s->updated == s->launches && 2 * s->updated >= s->launches &&
                    s->nodes >= 2 * s->launches,
                "%s: %ld captures, %ld graphs instantiated, %ld updated, %ld refused, %ld launches of %ld records",
                c->model, s->captures, s->instantiated, s->updated, s->refused, s->launches, s->nodes);
  /* the same operations ran, all but the first step's (and a few at the start) in graphs; with
     several ranks, the messages' copies not either */
  ck_assert_msg(s->nodes + s->eager == eager.stats.eager && (!single ? 2 * s->nodes >= eager.stats.eager : s->eager <= eager.stats.eager / GRAPH_STEPS + 8),
                "%s: %ld operations without graphs; with them %ld in graphs, %ld not", c->model, eager.stats.eager,
                s->nodes, s->eager);
  if (c->launched)
    ck_assert_msg(cuda_mock_launches(c->launched) > 0, "%s %s: %s never ran", c->model, c->flags, c->launched);
  /* a refused update: a new graph instantiated for it (on one job: the device's logic) */
  GraphRun refused = {0};
  if (_i == 2) {
    cuda_mock_refuse_update(1);
    refused = graph_run(job, "1");
    cuda_mock_refuse_update(-1);
    ck_assert_int_eq(refused.stats.refused, 1);
    ck_assert_int_eq(refused.stats.instantiated, graph.stats.instantiated + 1);
    ck_assert_msg(memcmp(eager.params, refused.params, sizeof(float) * eager.n) == 0,
                  "%s: the params differ after a refused graph update", c->model);
  }
  printf("%-36s %-16s MPL_CUDA_GRAPHS=1: the same bits after %d steps; %ld graph launches ran %ld records (%ld graphs "
         "instantiated, %ld updated)\n", c->model, c->flags, GRAPH_STEPS, s->launches, s->nodes, s->instantiated,
         s->updated);
  free(eager.params), free(graph.params), free(refused.params);
  free(eager.text), free(graph.text), free(refused.text);
  job_free(job);
}
END_TEST

/* A run that fails inside a capture (an injected failure at step 3's fourth instruction, its
 * first three captured, not run): the error is the failure's, and the device frees the open
 * capture and every graph (the mock counts none left). */
START_TEST(test_graphs_failure) {
  Job *job = compile_case(&graph_cases[2], "graph_fail");
  MplRunOpts o = run_opts(&mpl_device_cuda_ops, GRAPH_STEPS);
  o.fail_rank = 0, o.fail_step = 3, o.fail_ins = 3;
  setenv("MPL_CUDA_GRAPHS", "1", 1);
  MockGraphStats before = cuda_mock_graph_stats();
  MplRun *r = NULL;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, job, &o, &err) == MPL_OK, "%s", err.msg);
  ck_assert_int_eq(mpl_run_train(r, &err), MPL_ERR);
  unsetenv("MPL_CUDA_GRAPHS");
  ck_assert_msg(strstr(err.msg, "injected failure at instruction 3") != NULL, "%s", err.msg);
  MockGraphStats after = cuda_mock_graph_stats();
  ck_assert_msg(after.captures - before.captures == after.launches - before.launches + 1,
                "%ld captures, %ld graph launches: no capture was open at the failure",
                after.captures - before.captures, after.launches - before.launches);
  mpl_run_free(r);
  ck_assert_int_eq(cuda_mock_live(), 0);
  job_free(job);
}
END_TEST

/* Where graphs do not apply: a run with --trace (the warning says so; nothing captured, the
 * same params), and a value other than 0 or 1 (an error naming it). */
START_TEST(test_graphs_refused) {
  Job *job = compile_case(&graph_cases[2], "graph_trace");
  char trace[PATH_MAX + 32];
  snprintf(trace, sizeof trace, "%s/graph_trace.json", tmp_dir);
  MplRunOpts o = run_opts(&mpl_device_cuda_ops, GRAPH_STEPS);
  o.trace_path = trace;
  setenv("MPL_CUDA_GRAPHS", "1", 1);
  MockGraphStats before = cuda_mock_graph_stats();
  MplRun *r = NULL;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, job, &o, &err) == MPL_OK && mpl_run_train(r, &err) == MPL_OK, "%s", err.msg);
  unsetenv("MPL_CUDA_GRAPHS");
  ck_assert_int_eq(cuda_mock_graph_stats().captures, before.captures);
  mpl_run_free(r);
  setenv("MPL_CUDA_GRAPHS", "yes", 1);
  o.trace_path = NULL;
  r = NULL;
  ck_assert_int_eq(mpl_run_init(&r, job, &o, &err), MPL_ERR);
  unsetenv("MPL_CUDA_GRAPHS");
  ck_assert_msg(strstr(err.msg, "MPL_CUDA_GRAPHS must be 0 or 1, not 'yes'") != NULL, "%s", err.msg);
  mpl_run_free(r);
  job_free(job);
}
END_TEST

int main(int argc, char **argv) {
  (void)argc;
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  exe[len > 0 ? len : 0] = 0;
  snprintf(build_dir, sizeof build_dir, "%s", dirname(dirname(len > 0 ? exe : argv[0])));
  if (!getcwd(root_dir, sizeof root_dir)) return 1;
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/mpl_test_cuda_jobs_XXXXXX");
  if (!mkdtemp(tmp_dir)) return 1;
  char so_cache[PATH_MAX + 8]; /* a model's kernels built once for its cases (jobs, graphs) */
  snprintf(so_cache, sizeof so_cache, "%s/so", tmp_dir);
  setenv("MPL_MOCK_SO_CACHE", so_cache, 1);
  setenv("MPL_MOCK_DEFER", "1", 0); /* streams run when waited for (cuda_mock.c): a missing wait shows */
  if (register_runtime_programs() != 0) return 1;
  Suite *s = suite_create("cuda_jobs");
  TCase *tc = tcase_create("jobs");
  tcase_set_timeout(tc, 300);
  const char *seeds = getenv("MPL_CUDA_JOBS_SEEDS");
  add_random_seeds(seeds ? seeds : default_seeds);
  printf("%d fixed models and %d random programs\n", NFIXED, nrandom);
  const char *only = getenv("MPL_TEST_CASE"); /* one case by its index, when looking into it */
  int first = only ? atoi(only) : 0, last = only ? first + 1 : NCASES;
  tcase_add_loop_test(tc, test_job_on_mock_gpu, first, last);
  suite_add_tcase(s, tc);
  TCase *tg = tcase_create("graphs");
  tcase_set_timeout(tg, 300);
  if (!only) {
    tcase_add_loop_test(tg, test_graphs_same_bits, 0, NGRAPH + nrandom); /* then the random programs */
    tcase_add_test(tg, test_graphs_refused);
    tcase_add_test(tg, test_graphs_failure);
  }
  suite_add_tcase(s, tg);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
  return failed ? 1 : 0;
}

#else

START_TEST(test_built_without_cuda) { printf("note: built without CUDA; no job runs on the mock GPU\n"); }
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_jobs");
  TCase *tc = tcase_create("jobs");
  tcase_add_test(tc, test_built_without_cuda);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

#endif
