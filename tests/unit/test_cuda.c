/*
 * test_cuda.c — the CUDA backend, checked without a GPU (the GPU itself is tests/gpu/run.sh's):
 *  - the cuda device backend and communicator link (and are complete tables);
 *  - with no GPU or no driver, mpl_cuda_device_count, mpl_run_init and `mplrun --devices
 *    cuda` (the full build and the cuda-only one) fail at once with one clear line, exit 1;
 *  - NVRTC compiles every kernel of every example: mplc writes a job whose PTX has an
 *    .entry for each kernel name, and the job's CUDA source compiles for another arch too;
 *  - the executor's path for devices with their own memory (gradients, clipping and the
 *    update through host copies, losses read at the end of the step, a sync per step),
 *    run with a stand-in device (the cpu backend flagged device_memory), gives the cpu
 *    path's bits: tied params across stages, clipping, SGD and AdamW, recompute, ZeRO-1;
 *  - the executor's path for devices that run the optimizer themselves (gradients and
 *    optimizer state in device memory, the ops copy_device .. adamw), run with a stand-in
 *    whose ops are optim.c's host functions, gives the cpu path's params and optimizer
 *    state bit for bit, pipelines, dp, ZeRO-1 and tp (collectives with device copies,
 *    split params staged through the host) included;
 *  - the optimizer kernels (mpl_cuda_optim_src) compile with NVRTC without a warning and
 *    have every entry point;
 *  - cuBLAS and NVRTC are opened at run time, not linked (runtime/cublas_dl.c, cuda_dl.c):
 *    mplc and mplrun need neither, this process has mapped neither until its load, which then
 *    fills every function from the library (cuBLAS's status strings, NVRTC's error strings;
 *    without a GPU cublasCreate's own error); a library that is not there is named, with
 *    both places looked in.
 * Run from the repository root (tests/run.sh does); mplc and mplrun are found next to this
 * binary's folder. Built without CUDA, it checks the "built without CUDA" answers only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <glob.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compiler/kernel.h"
#include "runtime/exec.h"
#include "run_cmd.h"
#ifdef MPL_HAVE_CUDA
#include "runtime/cuda_rt.h"
#include "runtime/cuda_dev.h"
#endif

static char build_dir[PATH_MAX]; /* the folder holding mplc, mplrun and tests/ */
static char tmp_dir[PATH_MAX];

static void find_build(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  ck_assert(n > 0);
  exe[n] = 0;
  snprintf(build_dir, sizeof build_dir, "%s", dirname(dirname(exe)));
}

static void setup(void) {
  find_build();
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/mpl_test_cuda_XXXXXX");
  ck_assert(mkdtemp(tmp_dir) != NULL);
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
}


/* Compiles model into tmp_dir/NAME.job with mplc; returns the path (static buffer). */
static const char *compile_flags(const char *model, const char *name, const char *flags) {
  static char job[PATH_MAX + 80];
  char cmd[4 * PATH_MAX], out[8192];
  snprintf(job, sizeof job, "%s/%.64s.job", tmp_dir, name);
  snprintf(cmd, sizeof cmd, "'%s/mplc' '%s' %s -o '%s'", build_dir, model, flags, job);
  int rc = run_cmd(cmd, out, sizeof out);
  ck_assert_msg(rc == 0, "mplc %s failed: %s", model, out);
  return job;
}

static const char *compile(const char *model, const char *name) { return compile_flags(model, name, ""); }

static bool have_gpu(void) {
  int n;
  MplErr err = {{0}};
  return mpl_cuda_device_count(&n, &err) == MPL_OK;
}

START_TEST(test_backend_links) {
  ck_assert_str_eq(mpl_device_cuda_ops.name, "cuda");
  ck_assert(mpl_device_cuda_ops.device_memory);
  ck_assert(mpl_device_cuda_ops.init != NULL && mpl_device_cuda_ops.free != NULL);
#ifdef MPL_HAVE_CUDA
  const MplDeviceOps *o = &mpl_device_cuda_ops;
  ck_assert(o->arena_alloc && o->arena_free && o->gemm && o->accum_f32 && o->zero && o->copy_to_host &&
            o->copy_from_host && o->load_kernels && o->launch && o->sync && o->bind_thread);
#endif
}
END_TEST

#ifdef MPL_HAVE_CUDA
/* Is a file whose name holds `name` mapped into this process? */
static bool mapped(const char *name) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[1024];
  bool hit = false;
  while (f && !hit && fgets(line, sizeof line, f)) hit = strstr(line, name) != NULL;
  if (f) fclose(f);
  return hit;
}
#endif

START_TEST(test_cublas_opened_at_run_time) {
#ifdef MPL_HAVE_CUDA
  char cmd[2 * PATH_MAX], out[16384];
  for (int i = 0; i < 2; i++) {
    snprintf(cmd, sizeof cmd, "readelf -d '%s/%s'", build_dir, i ? "mplc" : "mplrun");
    ck_assert_int_eq(run_cmd(cmd, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "(NEEDED)") != NULL, "%s", out); /* readelf read it */
    ck_assert_msg(!strstr(out, "libcublas"), "%s links cuBLAS:\n%s", i ? "mplc" : "mplrun", out);
    ck_assert_msg(!strstr(out, "libnvrtc"), "%s links NVRTC:\n%s", i ? "mplc" : "mplrun", out);
  }
  ck_assert_msg(!mapped("libcublas"), "libcublas is mapped before mpl_cublas_load");
  MplErr err = {{0}};
  ck_assert_msg(mpl_cublas_load(&err) == MPL_OK, "%s", err.msg);
  ck_assert(mapped("libcublas"));
  ck_assert(mpl_cublas.create && mpl_cublas.destroy && mpl_cublas.set_stream && mpl_cublas.set_math_mode &&
            mpl_cublas.status_string && mpl_cublas.sgemm && mpl_cublas.sgemm_strided && mpl_cublas.gemm_ex &&
            mpl_cublas.gemm_strided_ex && mpl_cublas.saxpy);
  /* the library's texts (CUDA 13: "success", "the library was not initialized") */
  const char *ok = mpl_cublas_status(CUBLAS_STATUS_SUCCESS), *ni = mpl_cublas_status(CUBLAS_STATUS_NOT_INITIALIZED);
  ck_assert_msg(ok && ni && *ok && *ni && strcmp(ok, ni) != 0 && strcmp(ni, "cuBLAS not loaded") != 0, "%s / %s", ok, ni);
  ck_assert_int_eq(mpl_cublas_load(&err), MPL_OK); /* once: the second load is the first's answer */
  if (!have_gpu()) {
    cublasHandle_t h = NULL;
    cublasStatus_t st = mpl_cublas.create(&h); /* the library's own answer without a device */
    ck_assert_msg(st == CUBLAS_STATUS_NOT_INITIALIZED, "cublasCreate without a GPU: %d", (int)st);
  }
#endif
}
END_TEST

START_TEST(test_nvrtc_opened_at_run_time) {
#ifdef MPL_HAVE_CUDA
  ck_assert_msg(!mapped("libnvrtc"), "libnvrtc is mapped before mpl_nvrtc_load");
  char why[1024] = "";
  ck_assert_msg(mpl_nvrtc_load(why, sizeof why) == 0, "%s", why);
  ck_assert(mapped("libnvrtc"));
  ck_assert(mpl_nvrtc.create && mpl_nvrtc.compile && mpl_nvrtc.destroy && mpl_nvrtc.log_size && mpl_nvrtc.log &&
            mpl_nvrtc.ptx_size && mpl_nvrtc.ptx && mpl_nvrtc.error_string);
  ck_assert_str_eq(mpl_nvrtc.error_string(NVRTC_SUCCESS), "NVRTC_SUCCESS"); /* the library's own text */
  ck_assert_str_eq(mpl_nvrtc.error_string(NVRTC_ERROR_COMPILATION), "NVRTC_ERROR_COMPILATION");
  /* a library that is not there: both places named, nothing opened */
  char miss[1024] = "";
  ck_assert_ptr_null(mpl_dlopen_cuda_lib("libmpl-no-such-lib.so.7", (const void *)cudaGetErrorString, miss, sizeof miss));
  ck_assert_msg(strstr(miss, "cannot open libmpl-no-such-lib.so.7") && strstr(miss, "; nor in /"), "%s", miss);
  ck_assert_ptr_null(mpl_dlopen_cuda_lib("libmpl-no-such-lib.so.7", NULL, miss, sizeof miss));
  ck_assert_msg(strstr(miss, "cannot open libmpl-no-such-lib.so.7") && !strstr(miss, "nor in"), "%s", miss);
#endif
}
END_TEST

START_TEST(test_no_device_fails_cleanly) {
  if (have_gpu()) {
    printf("note: a GPU is present; the no-device answers are not checked here\n");
    return;
  }
  int n = 7;
  MplErr err = {{0}};
  ck_assert_int_eq(mpl_cuda_device_count(&n, &err), MPL_ERR);
  ck_assert_int_eq(n, 0);
  ck_assert_msg(strstr(err.msg, "CUDA") || strstr(err.msg, "cuda"), "%s", err.msg);
  /* the library: mpl_run_init on cuda fails with the same kind of message */
  const char *path = compile("tests/e2e/small_mlp.mpl", "small_mlp");
  char jerr[512] = "";
  Job *job = job_read(path, jerr, sizeof jerr);
  ck_assert_msg(job != NULL, "%s", jerr);
  MplRunOpts o;
  mpl_run_opts_default(&o);
  o.device_kind = "cuda";
  o.quiet = true;
  MplRun *r = NULL;
  MplErr e2 = {{0}};
  ck_assert_int_eq(mpl_run_init(&r, job, &o, &e2), MPL_ERR);
  ck_assert(r == NULL);
  ck_assert_msg(strstr(e2.msg, "CUDA") || strstr(e2.msg, "cuda"), "%s", e2.msg);
  job_free(job);
}
END_TEST

/* Both mplruns: exit 1, one "mplrun: error: --devices cuda..." line, within seconds. */
START_TEST(test_mplrun_devices_cuda_fails_at_once) {
  if (have_gpu()) {
    printf("note: a GPU is present; mplrun --devices cuda is tests/gpu/run.sh's\n");
    return;
  }
  const char *job = compile("tests/e2e/small_mlp.mpl", "mlp");
  const char *const runs[] = {"mplrun", "cuda-only/mplrun"};
  const char *const devs[] = {"cuda", "cuda:0,0", "cuda:0,1"};
  for (int i = 0; i < 2; i++) {
    char bin[PATH_MAX + 32];
    snprintf(bin, sizeof bin, "%s/%s", build_dir, runs[i]);
    if (access(bin, X_OK) != 0) {
      ck_assert_msg(i == 1, "%s is missing", bin);
#ifdef MPL_HAVE_CUDA
      ck_abort_msg("%s is missing: make test builds it (make cuda-only)", bin);
#endif
      continue;
    }
    for (int d = 0; d < 3; d++) {
      char cmd[3 * PATH_MAX], out[4096];
      snprintf(cmd, sizeof cmd, "timeout 20 '%s' '%s' --devices %s --steps 1", bin, job, devs[d]);
      time_t t0 = time(NULL);
      int rc = run_cmd(cmd, out, sizeof out);
      ck_assert_msg(rc == 1, "%s --devices %s: exit %d: %s", runs[i], devs[d], rc, out);
      ck_assert_msg(strncmp(out, "mplrun: error: --devices cuda", 29) == 0, "%s: %s", runs[i], out);
      ck_assert_msg(strchr(out, '\n') == out + strlen(out) - 1, "more than one line: %s", out);
      ck_assert(time(NULL) - t0 < 10);
    }
  }
}
END_TEST

/* The job's PTX has an .entry per kernel name. */
static void check_ptx(const Job *job, const char *model) {
  const JobKernels *k = &job->kernels;
  ck_assert_msg(k->nkernels > 0, "%s: no kernels", model);
  ck_assert_msg(k->ptx && k->ptx_len > 0, "%s: the job has no PTX", model);
  char *ptx = strndup(k->ptx, k->ptx_len);
  ck_assert(strstr(ptx, ".target sm_90") != NULL);
  for (int i = 0; i < k->nkernels; i++) {
    char entry[256];
    snprintf(entry, sizeof entry, ".entry %s(", k->names[i]);
    ck_assert_msg(strstr(ptx, entry) != NULL, "%s: kernel %s is not in the PTX", model, k->names[i]);
  }
  free(ptx);
}

START_TEST(test_nvrtc_compiles_every_example) {
#ifndef MPL_HAVE_CUDA
  printf("note: built without CUDA; NVRTC not exercised\n");
  return;
#else
  const char *const pats[] = {"examples/*.mpl", "tests/bench/*.mpl", "tests/gpu/models/*.mpl"};
  int models = 0;
  for (int p = 0; p < 3; p++) {
    glob_t g;
    if (glob(pats[p], 0, NULL, &g) != 0) continue;
    for (size_t i = 0; i < g.gl_pathc; i++) {
      char name[64];
      snprintf(name, sizeof name, "m%d_%zu", p, i);
      const char *path = compile_flags(g.gl_pathv[i], name, "--gpu-arch sm_90");
      char jerr[512] = "";
      Job *job = job_read(path, jerr, sizeof jerr);
      ck_assert_msg(job != NULL, "%s: %s", g.gl_pathv[i], jerr);
      check_ptx(job, g.gl_pathv[i]);
      if (models == 0) { /* and for another architecture, from the job's source */
        char *ptx = NULL, err[8192];
        size_t len = 0;
        ck_assert_msg(cg_nvrtc_compile(job->kernels.cuda_src, "sm_80", &ptx, &len, err, sizeof err) == 0, "%s", err);
        ck_assert(strstr(ptx, ".target sm_80") != NULL);
        free(ptx);
        /* without --gpu-arch: the same kernels and source, no PTX */
        Job *plain = job_read(compile(g.gl_pathv[i], "plain"), jerr, sizeof jerr);
        ck_assert_msg(plain != NULL, "%s", jerr);
        ck_assert_int_eq(plain->kernels.nkernels, job->kernels.nkernels);
        ck_assert(plain->kernels.cuda_src_len == job->kernels.cuda_src_len &&
                  !memcmp(plain->kernels.cuda_src, job->kernels.cuda_src, job->kernels.cuda_src_len));
        ck_assert_msg(plain->kernels.ptx_len == 0, "PTX without --gpu-arch");
        job_free(plain);
      }
      job_free(job);
      models++;
    }
    globfree(&g);
  }
  ck_assert_int_ge(models, 3);
  printf("NVRTC compiled the kernels of %d models\n", models);
#endif
}
END_TEST

/* An NVRTC error names the kernel it is in (and carries NVRTC's log). */
START_TEST(test_nvrtc_error_names_the_kernel) {
#ifdef MPL_HAVE_CUDA
  const char *src = "extern \"C\" __global__ void k0_good(float *a) { a[0] = 1.0f; }\n"
                    "extern \"C\" __global__ void k1_bad(float *a) {\n"
                    "  a[0] = no_such_thing;\n"
                    "}\n";
  char *ptx = NULL, err[8192];
  size_t len = 0;
  ck_assert_int_ne(cg_nvrtc_compile(src, "sm_90", &ptx, &len, err, sizeof err), 0);
  ck_assert_msg(strstr(err, "no_such_thing") != NULL, "%s", err);
  ck_assert_msg(strstr(err, "(in kernel k1_bad)") != NULL, "%s", err);
#endif
}
END_TEST

static int fake_sync(MplDevice *d, MplErr *err) { return MPL_OK; }

/* The optimizer ops of a stand-in device whose memory is host memory: optim.c's functions. */
static int fake_copy_device(MplDevice *d, void *dst, const void *src, size_t bytes, MplErr *err) {
  memmove(dst, src, bytes);
  return MPL_OK;
}
static int fake_copy_2d(MplDevice *d, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                        size_t height, MplErr *err) {
  for (size_t i = 0; i < height; i++) memmove((char *)dst + i * dpitch, (const char *)src + i * spitch, width);
  return MPL_OK;
}
static int fake_sumsq(MplDevice *d, const float *g, int64_t n, double *out, MplErr *err) {
  *out = mpl_sumsq_f64(g, n);
  return MPL_OK;
}
static int fake_scale(MplDevice *d, float *g, int64_t n, float coef, MplErr *err) {
  mpl_scale_f32(g, n, coef);
  return MPL_OK;
}
static int fake_sgd(MplDevice *d, float *p, const float *g, float *buf, int64_t n, double lr, double momentum,
                    bool first_step, MplErr *err) {
  mpl_sgd_update(p, g, buf, n, lr, momentum, first_step);
  return MPL_OK;
}
static int fake_adamw(MplDevice *d, float *p, const float *g, float *m, float *v, int64_t n, double lr, double beta1,
                      double beta2, double eps, double weight_decay, int64_t t, MplErr *err) {
  mpl_adamw_update(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, t);
  return MPL_OK;
}

/* Trains `steps` steps of job with ops (NULL: cpu) and returns every param, concatenated,
 * followed by every optimizer slot of every param. */
static float *train_params(const Job *job, const MplDeviceOps *ops, int steps, size_t *n) {
  MplRunOpts o;
  mpl_run_opts_default(&o);
  o.quiet = true;
  o.steps = steps;
  o.device_ops = ops;
  MplRun *r = NULL;
  MplErr err = {{0}};
  ck_assert_msg(mpl_run_init(&r, job, &o, &err) == MPL_OK, "%s", err.msg);
  ck_assert_msg(mpl_run_train(r, &err) == MPL_OK, "%s", err.msg);
  const char *const *slot_names;
  int nslots = mpl_run_optim_slots(r, &slot_names);
  size_t total = 0;
  for (int p = 0; p < job->nparams; p++) total += (size_t)mpl_run_param(r, p)->numel * (size_t)(1 + nslots);
  float *all = malloc(total * sizeof(float) + 4), *at = all;
  for (int p = 0; p < job->nparams; p++) {
    ck_assert_msg(mpl_run_get_param(r, p, at, &err) == MPL_OK, "%s", err.msg);
    at += mpl_run_param(r, p)->numel;
  }
  for (int p = 0; p < job->nparams; p++)
    for (int k = 0; k < nslots; k++) {
      ck_assert_msg(mpl_run_get_optim(r, p, k, at, &err) == MPL_OK, "%s", err.msg);
      at += mpl_run_param(r, p)->numel;
    }
  mpl_run_free(r);
  *n = total;
  return all;
}

/* Compiles model with flags, trains it `steps` steps on the cpu device and on `fake`, and
 * requires the same params and optimizer state, bit for bit. */
static void check_device_matches_cpu(const char *model, const char *flags, const MplDeviceOps *fake, int steps,
                                     const char *tag, size_t i) {
  char cmd[4 * PATH_MAX], out[8192], job_path[PATH_MAX + 80];
  snprintf(job_path, sizeof job_path, "%s/%s%zu.job", tmp_dir, tag, i);
  snprintf(cmd, sizeof cmd, "'%s/mplc' '%s' %s -o '%s'", build_dir, model, flags, job_path);
  ck_assert_msg(run_cmd(cmd, out, sizeof out) == 0, "%s", out);
  char jerr[512] = "";
  Job *job = job_read(job_path, jerr, sizeof jerr);
  ck_assert_msg(job != NULL, "%s", jerr);
  size_t na, nb;
  float *a = train_params(job, NULL, steps, &na), *b = train_params(job, fake, steps, &nb);
  ck_assert_uint_eq(na, nb);
  ck_assert_msg(memcmp(a, b, na * sizeof(float)) == 0, "%s %s: the %s path changed the params or state", model,
                flags, fake->name);
  free(a);
  free(b);
  job_free(job);
}

/* Writes src with `extra` inserted after its line `after` into tmp_dir/name; returns the path. */
static const char *model_with(const char *src, const char *after, const char *extra, const char *name) {
  static char path[PATH_MAX + 80];
  FILE *f = fopen(src, "r");
  ck_assert_msg(f != NULL, "%s", src);
  char text[1 << 16];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char *at = strstr(text, after);
  ck_assert_msg(at != NULL, "%s: no '%s'", src, after);
  at += strlen(after);
  snprintf(path, sizeof path, "%s/%.64s.mpl", tmp_dir, name);
  FILE *o = fopen(path, "w");
  ck_assert(o != NULL);
  fwrite(text, 1, (size_t)(at - text), o);
  fputs(extra, o);
  fputs(at, o);
  fclose(o);
  return path;
}


/* The device-optimizer path (state in "device" memory, sums, clipping and updates by the
 * device's ops) gives the cpu path's params and optimizer state, bit for bit. */
START_TEST(test_device_optimizer_path_matches_cpu) {
  MplDeviceOps fake = mpl_device_cpu_ops;
  fake.name = "fake-gpu";
  fake.device_memory = true;
  fake.sync = fake_sync;
  fake.copy_device = fake_copy_device;
  fake.copy_2d = fake_copy_2d;
  fake.sumsq_f64 = fake_sumsq;
  fake.scale_f32 = fake_scale;
  fake.sgd = fake_sgd;
  fake.adamw = fake_adamw;
  char zero_model[PATH_MAX + 80], zero_adamw[PATH_MAX + 80];
  snprintf(zero_model, sizeof zero_model, "%s",
           model_with("tests/gpu/models/gpt_sgd.mpl", "  steps = 3\n", "  zero = 1\n", "gpt_zero"));
  snprintf(zero_adamw, sizeof zero_adamw, "%s", model_with("tests/e2e/small_gpt.mpl", "  steps = 3\n", "  zero = 1\n", "gpt_zero_adamw"));
  const struct { const char *model, *flags; } cases[] = {
      {"tests/gpu/models/gpt_sgd.mpl", "--mesh pp=2 --schedule 1f1b"},
      {"tests/gpu/models/gpt_sgd.mpl", "--mesh pp=4 --schedule zb"},
      {"tests/gpu/models/gpt_sgd.mpl", "--mesh pp=1 --schedule gpipe"},
      {"tests/gpu/models/gpt_sgd.mpl", "--mesh dp=2"},
      {"tests/gpu/models/gpt_sgd.mpl", "--mesh dp=2,pp=2"},
      {"tests/gpu/models/gpt_sgd.mpl", "--mesh tp=2"},
      {"tests/e2e/parallel_gpt.mpl", "--mesh dp=2,pp=2,tp=2"},
      {"tests/e2e/parallel_gpt.mpl", "--mesh tp=4"},
      {"tests/gpu/models/tp_gather.mpl", ""},
      {"tests/gpu/models/tp_gather.mpl", "--mesh tp=2,pp=1,dp=2"},
      {zero_model, "--mesh dp=2"},
      {zero_adamw, "--mesh dp=2,tp=2"}, /* ZeRO-1 chunks of tp parts, AdamW */
      {zero_adamw, "--mesh dp=2,pp=2"}, /* ZeRO-1 chunks over a pipeline, AdamW */
      {"tests/e2e/small_mlp.mpl", ""},
      {"tests/e2e/small_gpt.mpl", "--mesh pp=2"},
      {"tests/e2e/recompute.mpl", ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_device_matches_cpu(cases[i].model, cases[i].flags, &fake, 3, "do", i);
  /* without the multi-tensor ops: update.c runs each NORM_ADD, CLIP and UPDATE alone */
  fake.sumsq_f64_list = NULL, fake.scale_f32_list = NULL, fake.adamw_list = NULL, fake.sgd_list = NULL;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i += 4)
    check_device_matches_cpu(cases[i].model, cases[i].flags, &fake, 3, "ds", i);
}
END_TEST

/* The optimizer kernels compile with NVRTC, with init's options, without a word in the log. */
START_TEST(test_nvrtc_optimizer_kernels) {
#ifndef MPL_HAVE_CUDA
  printf("note: built without CUDA; the optimizer kernels are not compiled\n");
  return;
#else
  const char *const archs[] = {"compute_90", "compute_80"};
  for (int a = 0; a < 2; a++) {
    char *ptx = NULL, log[4096];
    MplErr err = {{0}};
    ck_assert_msg(mpl_cuda_optim_compile(archs[a], &ptx, log, sizeof log, &err) == MPL_OK, "%s", err.msg);
    ck_assert_msg(log[0] == 0, "NVRTC said, for %s: %s", archs[a], log);
    const char *const entries[] = {"mpl_sgd",        "mpl_adamw",      "mpl_scale",      "mpl_sumsq",
                                   "mpl_sumsq_final", "mpl_adamw_list", "mpl_scale_list", "mpl_sumsq_list",
                                   "mpl_sumsq_final_list", "mpl_sgd_list"};
    for (int e = 0; e < 10; e++) {
      char entry[64];
      snprintf(entry, sizeof entry, ".entry %s(", entries[e]);
      ck_assert_msg(strstr(ptx, entry) != NULL, "%s: no %s in the PTX", archs[a], entries[e]);
    }
    /* --fmad=false: no fused multiply-add anywhere */
    ck_assert_msg(strstr(ptx, "fma.rn.f32") == NULL && strstr(ptx, "fma.rn.f64") == NULL, "%s: an FMA in the PTX", archs[a]);
    mpl_free(ptx);
  }
#endif
}
END_TEST

static Suite *cuda_suite(void) {
  Suite *s = suite_create("cuda");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_backend_links);
  tcase_add_test(tc, test_cublas_opened_at_run_time);
  tcase_add_test(tc, test_nvrtc_opened_at_run_time);
  tcase_add_test(tc, test_no_device_fails_cleanly);
  tcase_add_test(tc, test_mplrun_devices_cuda_fails_at_once);
  tcase_add_test(tc, test_nvrtc_compiles_every_example);
  tcase_add_test(tc, test_device_optimizer_path_matches_cpu);
  tcase_add_test(tc, test_nvrtc_optimizer_kernels);
  tcase_add_test(tc, test_nvrtc_error_names_the_kernel);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(cuda_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
