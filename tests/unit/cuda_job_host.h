/*
 * cuda_job_host.h — a job's generated CUDA kernels built for the host and registered with the
 * mock driver (cuda_mock.c), for the programs that run whole jobs on the mock GPU
 * (test_cuda_jobs.c, cuda_mock_run.c). Include after check.h, the runtime's headers,
 * cuda_mock.h and run_cmd.h.
 */
#ifndef MPL_TEST_CUDA_JOB_HOST_H
#define MPL_TEST_CUDA_JOB_HOST_H

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the job's kernels on the host ------------------------------------------------------- */

/* The C file of a job's CUDA source: cuda_gen_host.h, the source less `extern "C" `, and per
 * kernel a launcher that decodes cuLaunchKernel's params with the kernel's parameter types;
 * then the table the mock driver takes. Returns the number of kernels. */
static int write_host_source(const char *src, const char *path) {
  FILE *f = fopen(path, "w");
  ck_assert_msg(f != NULL, "%s", path);
  fprintf(f, "#include \"tests/unit/cuda_gen_host.h\"\n#include \"tests/unit/cuda_mock.h\"\n");
  static const char ext[] = "extern \"C\" ";
  for (const char *at = src, *hit; *at; at = hit + sizeof ext - 1) {
    hit = strstr(at, ext);
    if (!hit) {
      fputs(at, f);
      break;
    }
    fwrite(at, 1, (size_t)(hit - at), f);
  }
  /* the launchers: every `__global__ void NAME(params) {` */
  char table[1 << 16] = "";
  size_t tl = 0;
  int n = 0;
  static const char glob[] = "__global__ void ";
  for (const char *at = strstr(src, glob); at; at = strstr(at + 1, glob)) {
    const char *name = at + sizeof glob - 1, *open = strchr(name, '('), *close = strchr(name, ')');
    ck_assert(open && close && close > open);
    const char *next = strstr(close, glob);
    const char *end = next ? next : close + strlen(close);
    bool warp = false;
    for (const char *w = close; w < end && !warp; w++) warp = !strncmp(w, "__shfl", 6) || !strncmp(w, "__syncwarp", 10);
    int nl = (int)(open - name);
    char sizes[4096] = ""; /* the parameters' sizes, for a captured launch's copy */
    size_t sl = 0;
    fprintf(f, "\nstatic void body_%.*s(void **p) {\n  %.*s(", nl, name, nl, name);
    int i = 0;
    for (const char *q = open + 1; q < close; i++) {
      const char *comma = memchr(q, ',', (size_t)(close - q));
      const char *pe = comma ? comma : close;
      const char *id = pe; /* the parameter's name: the last word */
      while (id > q && (id[-1] == '_' || (id[-1] >= 'a' && id[-1] <= 'z') || (id[-1] >= '0' && id[-1] <= '9') ||
                        (id[-1] >= 'A' && id[-1] <= 'Z')))
        id--;
      char type[256];
      snprintf(type, sizeof type, "%.*s", (int)(id - q), q);
      char *r = strstr(type, "__restrict__");
      if (r) memmove(r, r + 12, strlen(r + 12) + 1);
      fprintf(f, "%s*(%s*)p[%d]", i ? ", " : "", type, i);
      sl += (size_t)snprintf(sizes + sl, sizeof sizes - sl, "sizeof(%s), ", type);
      ck_assert(sl < sizeof sizes);
      q = comma ? comma + 1 : close;
      while (*q == ' ') q++;
    }
    fprintf(f, ");\n}\nstatic void run_%.*s(void **p, unsigned grid, unsigned threads) {\n"
               "  gen_launch(\"%.*s\", body_%.*s, p, grid, threads, %s);\n}\n",
            nl, name, nl, name, nl, name, warp ? "true" : "false");
    fprintf(f, "static const unsigned short psize_%.*s[] = {%s0};\n", nl, name, sizes);
    tl += (size_t)snprintf(table + tl, sizeof table - tl, "  {\"%.*s\", 0, run_%.*s, psize_%.*s},\n", nl, name, nl,
                           name, nl, name);
    ck_assert(tl < sizeof table);
    n++;
  }
  fprintf(f, "\nconst MockKernel gen_table[] = {\n%s};\nconst int gen_n = %d;\n", table, n);
  fclose(f);
  return n;
}

typedef const char *(*GenFailedFn)(void);
typedef int (*HostNvrtcFn)(const char *arch, char **ptx, char *log, size_t logn, MplErr *err);
static GenFailedFn gen_failed;

/* Builds the job's kernels for the host (tag.c and tag.so in folder dir; root: the
 * repository, for the headers) and registers them for its PTX. */
static void load_host_kernels(Job *job, const char *tag, const char *dir, const char *root) {
  ck_assert_msg(job->kernels.cuda_src && !job->kernels.ptx_len, "%s: the job has no CUDA source, or PTX", tag);
  /* The mock driver keeps a module's text and finds its entries in it; the kernels run as
     host code. So the job is given a stand-in PTX that names its entries: NVRTC's own
     compile of every kernel is test_cuda's and random_programs.sh's, and took most of
     this test's time here. */
  size_t len = 64;
  for (int k = 0; k < job->kernels.nkernels; k++) len += strlen(job->kernels.names[k]) + 16;
  char *ptx = mpl_malloc(len), *at = ptx;
  at += sprintf(at, ".version 8.0\n.target sm_90\n");
  for (int k = 0; k < job->kernels.nkernels; k++) at += sprintf(at, ".entry %s(\n", job->kernels.names[k]);
  mpl_free(job->kernels.ptx); /* (an empty one read from the job) */
  job->kernels.ptx = ptx, job->kernels.ptx_len = (size_t)(at - ptx);
  /* The build is kept under the source's hash in the folder MPL_MOCK_SO_CACHE names (the
     processes of one mpirun, or a test's cases with one model, build it once: the first
     to take the folder's lock builds, the others wait and open it); else in dir, as tag. */
  const char *cache = getenv("MPL_MOCK_SO_CACHE");
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (const unsigned char *c = (const unsigned char *)job->kernels.cuda_src; *c; c++) h = (h ^ *c) * 1099511628211ull;
  char c_path[PATH_MAX + 128], so_path[PATH_MAX + 128], built[PATH_MAX + 160], cmd[4 * PATH_MAX], out[16384];
  int lock = -1;
  if (cache && *cache) {
    ck_assert_msg(mkdir(cache, 0777) == 0 || errno == EEXIST, "%s: %s", cache, strerror(errno));
    snprintf(so_path, sizeof so_path, "%s/%016llx.so", cache, (unsigned long long)h);
    snprintf(c_path, sizeof c_path, "%s/%016llx.%d.c", cache, (unsigned long long)h, (int)getpid());
    snprintf(built, sizeof built, "%s.%d", so_path, (int)getpid());
    snprintf(cmd, sizeof cmd, "%s/.lock", cache);
    lock = open(cmd, O_CREAT | O_RDWR, 0666);
    ck_assert_msg(lock >= 0 && flock(lock, LOCK_EX) == 0, "%s: %s", cmd, strerror(errno));
  } else {
    snprintf(c_path, sizeof c_path, "%s/%s.c", dir, tag);
    snprintf(so_path, sizeof so_path, "%s/%s.so", dir, tag);
    snprintf(built, sizeof built, "%s", so_path);
  }
  int built_rc = 0, nwritten = job->kernels.nkernels;
  if (lock < 0 || access(so_path, R_OK) != 0) {
    nwritten = write_host_source(job->kernels.cuda_src, c_path);
    const char *cc = getenv("CC");
    snprintf(cmd, sizeof cmd, "%s -std=gnu11 -O1 -U_FORTIFY_SOURCE -fPIC -shared -fno-fast-math -ffp-contract=off -w -I'%s' -o '%s' '%s' -lm",
             cc && *cc ? cc : "cc", root, built, c_path);
    built_rc = run_cmd(cmd, out, sizeof out);
    if (lock >= 0) {
      unlink(c_path);
      if (built_rc == 0 && rename(built, so_path) != 0) built_rc = -1, snprintf(out, sizeof out, "%s: %s", so_path, strerror(errno));
    }
  }
  if (lock >= 0) close(lock); /* (lets go of the lock before any check can fail: the other processes wait on it) */
  ck_assert_int_eq(nwritten, job->kernels.nkernels);
  ck_assert_msg(built_rc == 0, "%s: the host build of the job's CUDA source failed:\n%s", tag, out);
  void *so = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(so != NULL, "%s", dlerror());
  const MockKernel *table = dlsym(so, "gen_table");
  const int *nk = dlsym(so, "gen_n");
  gen_failed = (GenFailedFn)dlsym(so, "gen_failed");
  ck_assert(table && nk && gen_failed);
  cuda_mock_add_kernels(table, *nk, job->kernels.ptx);
}

/* The runtime's own CUDA programs (optimizer, cross-entropy, embedding gradient, the fused
 * attention's builds) registered with the mock: their host copies, under the PTX NVRTC
 * makes for them, compiled once here (the device then finds it in the process's cache,
 * cudev_compile; NVRTC took most of a run's time). From main: 0, or 1 with a message. */
static int register_runtime_programs(void) {
  cuda_mock_add_kernels(cuda_mock_optim, cuda_mock_noptim, NULL);
  cuda_mock_add_kernels(cuda_mock_ce, cuda_mock_nce, NULL);
  cuda_mock_add_kernels(cuda_mock_emb, cuda_mock_nemb, NULL);
  HostNvrtcFn progs[] = {mpl_cuda_optim_compile, mpl_cuda_ce_compile, mpl_cuda_emb_compile};
  for (int i = 0; i < 3; i++) {
    MplErr err = {{0}};
    char *ptx = NULL, log[1024];
    if (progs[i]("compute_90", &ptx, log, sizeof log, &err) != MPL_OK) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    mpl_free(ptx);
  }
  for (int i = 0; i < cuda_mock_nsdpa; i++) { /* under the PTX the device compiles for them */
    const MockSdpaBuild *b = &cuda_mock_sdpa[i];
    MplErr err = {{0}};
    char *ptx = NULL, log[1024];
    if (mpl_cuda_sdpa_compile("compute_90", b->hs, b->hv, b->in16, &ptx, log, sizeof log, &err) != MPL_OK) {
      fprintf(stderr, "the fused attention's build %d/%d: %s\n", b->hs, b->hv, err.msg);
      return 1;
    }
    cuda_mock_add_kernels(b->k, b->n, ptx);
    mpl_free(ptx);
  }
  return 0;
}

#endif
