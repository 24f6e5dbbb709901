/*
 * cuda_mock_run.c — one training run of a job on the mock GPU (cuda_mock.c: the CUDA runtime,
 * driver and cuBLAS on host memory; the job's kernels built for the host, cuda_job_host.h),
 * as `mplrun JOB --devices cuda --steps N --save FILE` would run it on a GPU:
 *
 *   cuda_mock_run JOB STEPS SAVE
 *
 * Alone, every rank of the job is a thread of this process on the mock's one device
 * (comm_cuda_world.c, as test_cuda_jobs.c runs them). Under mpirun, one rank a process
 * (comm_cuda_mpi.c: device buffers staged through the host over MPI), which no other test
 * runs without a GPU. tests/e2e/cuda_mpi.sh compares the two runs' --save files byte for
 * byte, with MPL_CUDA_GRAPHS=1 and without (the run reads it, as mplrun's does). The mock's
 * streams are deferred (MPL_MOCK_DEFER, default 1 here).
 *
 * A Check suite of one test, not forked (the MPI world is this process's): a failed check
 * fails the run, with its message, exit 1. Run from the repository root (the host build of
 * the kernels includes the repository's headers).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/comm.h"
#include "runtime/device.h"
#include "runtime/exec.h"
#include "runtime/job.h"
#include "runtime/mpl.h"

#ifdef MPL_HAVE_CUDA

#include "cuda_mock.h"
#include "run_cmd.h"

#include "cuda_job_host.h"

static const char *job_path, *save_path;
static int64_t steps;
static MplComm *comm;
static char root_dir[PATH_MAX], tmp_dir[PATH_MAX];

START_TEST(test_run) {
  char jerr[512] = "";
  Job *job = job_read(job_path, jerr, sizeof jerr);
  ck_assert_msg(job != NULL, "%s: %s", job_path, jerr);
  load_host_kernels(job, "job", tmp_dir, root_dir);
  MplRunOpts o;
  mpl_run_opts_default(&o);
  o.quiet = true;
  o.threads = 1;
  o.steps = steps;
  o.save_path = save_path;
  o.device_ops = &mpl_device_cuda_ops;
  o.comm = comm;
  MplRun *r = NULL;
  MplErr err = {{0}};
  int st = mpl_run_init(&r, job, &o, &err);
  if (st == MPL_OK) st = mpl_run_train(r, &err);
  ck_assert_msg(st == MPL_OK, "%s: %s%s%s", job_path, err.msg, gen_failed ? "; " : "", gen_failed ? gen_failed() : "");
  mpl_run_free(r);
  job_free(job);
}
END_TEST

int main(int argc, char **argv) {
  char *end = NULL;
  if (argc != 4 || (steps = strtoll(argv[2], &end, 10)) < 1 || *end) {
    fprintf(stderr, "usage: cuda_mock_run JOB STEPS SAVE (STEPS >= 1)\n");
    return 2;
  }
  job_path = argv[1], save_path = argv[3];
  MplErr err = {{0}};
  if (mpl_mpi_launched() && mpl_comm_mpi_init(&comm, &argc, &argv, &err) != MPL_OK) {
    fprintf(stderr, "cuda_mock_run: %s\n", err.msg);
    return 1;
  }
  setenv("MPL_MOCK_DEFER", "1", 0); /* streams run when waited for (cuda_mock.c) */
  if (!getcwd(root_dir, sizeof root_dir)) return 1;
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/mpl_cuda_mock_run_XXXXXX");
  if (!mkdtemp(tmp_dir)) return 1;
  int failed = register_runtime_programs();
  if (!failed) {
    Suite *s = suite_create("cuda_mock_run");
    TCase *tc = tcase_create("run");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, test_run);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_SILENT);
    failed = srunner_ntests_failed(sr);
    if (failed) {
      TestResult **tr = srunner_failures(sr);
      fprintf(stderr, "cuda_mock_run: %s\n", tr_msg(tr[0]));
      free(tr);
    }
    srunner_free(sr);
  }
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
  if (comm) mpl_comm_mpi_finalize(comm);
  return failed ? 1 : 0;
}

#else

int main(void) {
  fprintf(stderr, "cuda_mock_run: built without CUDA\n");
  return 2;
}

#endif
