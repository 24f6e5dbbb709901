/*
 * mplrun.c — the command line of the runtime: reads a job, trains it on the chosen
 * devices, and reports. The only place of the runtime that exits.
 *
 *   mplrun JOB [--devices cpu|cpu:N|cuda|cuda:0,1] [--threads N] [--steps N] [--data FILE]
 *              [--val FILE] [--init F] [--save F] [--checkpoint DIR] [--checkpoint-every N] [--resume DIR]
 *              [--trace FILE.json] [--metrics FILE.jsonl] [--comm-stats FILE.jsonl] [--profile FILE.json]
 *              [--inspect]
 *              [--sample N --prompt TEXT [--temperature T] [--top-k K] [--seed S]] [--tf32] [--mpi] [-q]
 *
 * --comm-stats FILE writes, after training, one JSON line per world rank with the messages
 * and collectives of the last step, counted where the executor issues them:
 *   {"rank": w, "dp": d, "pp": p, "tp": t, "step": N, "calls": {"pp_send": n, ..., "total": n},
 *    "bytes": {"pp_send": b, ..., "total": b}}
 * with every kind of job.h's MPL_COMM_KINDS; bytes are payload (the buffer a rank contributes
 * or receives), the figures mplc --emit=plan predicts per rank.
 *
 * Under mpirun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in the environment, or --mpi)
 * each process runs one rank of the world (comm_mpi.c): there must be dp * tp * pp of
 * them; world rank 0 prints and writes the files. With --devices cuda each process runs
 * its rank on one GPU: cuda:LIST names a GPU per world rank, plain cuda takes the
 * process's rank on its host mod the GPU count; NCCL when every rank has its own GPU,
 * else through host memory and MPI (MPL_NCCL=1 / 0 forces NCCL on / off: comm_nccl.c).
 *
 * Invariants: every bad flag, value or file is one line "mplrun: error: ..." and exit 1;
 * flags may be written "--flag VALUE" or "--flag=VALUE". Under MPI an error that every
 * process sees alike (a wrong process count, a bad flag) is printed once by rank 0 and
 * every process exits 1; an error of one rank during the run prints that rank's message
 * and MPI_Abort ends the whole job, so no process waits forever for it.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"

typedef struct Cli {
  const char *job_path;
  bool launched;        /* started by mpirun (before MPI_Init: a singleton's init sets its variables) */
  const char *devices;
  int threads;          /* 0: default */
  int64_t steps;        /* -1: the job's */
  int64_t sample_n;     /* -1: no sampling */
  const char *prompt;
  MplSampleOpts sample;   /* --temperature, --top-k, --seed */
  bool sample_opt;        /* one of them was given */
  const char *comm_stats; /* --comm-stats FILE */
  bool inspect;
  bool mpi;             /* --mpi, or started by mpirun */
  int device_ids[MPL_MAX_WORLD]; /* --devices cuda:LIST */
  MplRunOpts run;
} Cli;

static void usage(FILE *f) {
  fputs("usage: mplrun JOB [--devices cpu|cpu:N|cuda|cuda:0,1] [--threads N] [--steps N] [--data FILE]\n"
        "                  [--val FILE] [--init FILE.safetensors] [--save FILE.safetensors] [--checkpoint DIR]\n"
        "                  [--checkpoint-every N] [--resume DIR] [--trace FILE.json] [--metrics FILE.jsonl]\n"
        "                  [--comm-stats FILE.jsonl] [--profile FILE.json] [--inspect] [--tf32] [--mpi]\n"
        "                  [-q|--quiet] [--sample N --prompt TEXT [--temperature T] [--top-k K] [--seed S]]\n"
        "       mplrun -h|--help|--version\n"
        "  --temperature T    0: greedy; default 1      --top-k K   only the K likeliest (0: all)\n"
        "  --seed S           the sampling seed (default: the job's train seed)\n"
        "  --val FILE         validation data (a token file) replacing the train block's val: the val\n"
        "                     loss after every eval_every-th step and after the last\n"
        "  --comm-stats FILE  one JSON line per rank: calls and payload bytes of the last step's\n"
        "                     messages and collectives, by kind (as mplc --emit=plan predicts them)\n"
        "  --tf32             cuda: the f32 products may use TF32 tensor cores too (the job's precision,\n"
        "                     mplc --precision f32|tf32|bf16, decides the rest; no effect on a cpu)\n"
        "  --profile FILE     each op's measured time per micro-batch (forward, backward), each rank's\n"
        "                     device and GEMM rate, over the steps after the first: for mplc --profile\n",
        f);
}

static bool fail_silent; /* under MPI: a check every process makes alike, said by rank 0 alone */
static int fail(const char *fmt, const char *a, const char *b) {
  if (fail_silent) return 1;
  fprintf(stderr, "mplrun: error: ");
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  return 1;
}

/* A non-negative integer flag value. */
static bool parse_count(const char *s, int64_t max, int64_t *out) {
  char *end;
  errno = 0;
  if (*s < '0' || *s > '9') return false; /* digits alone: strtoll also takes " 4" and "+3" (pass 69) */
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v > max) return false;
  *out = v;
  return true;
}

static const char *const value_flags[] = {"--devices", "--threads", "--steps", "--data", "--val", "--init", "--save",
                                          "--checkpoint", "--checkpoint-every", "--resume", "--trace",
                                          "--metrics", "--profile", "--sample", "--prompt", "--comm-stats",
                                          "--temperature", "--top-k", "--seed", NULL};

/* The index of a flag that takes a value in value_flags, or -1. */
static int value_flag(const char *flag) {
  for (int i = 0; value_flags[i]; i++)
    if (strcmp(flag, value_flags[i]) == 0) return i;
  return -1;
}

static const char *const path_flags[] = {"--data", "--val", "--init", "--save", "--checkpoint", "--resume", "--trace",
                                         "--metrics", "--profile", "--comm-stats", NULL};

/* Applies one "--flag value"; returns 0 or 1 (after the message). */
static int apply_flag(Cli *c, const char *f, const char *v) {
  int64_t n;
  for (int i = 0; path_flags[i]; i++) /* --resume= once read /state.json */
    if (!strcmp(f, path_flags[i]) && !*v) return fail("%s '': the path is empty%s", f, "");
  if (!strcmp(f, "--devices")) c->devices = v;
  else if (!strcmp(f, "--threads")) {
    if (!parse_count(v, INT64_MAX / 2, &n) || n < 1) return fail("--threads needs a positive integer, not '%s'%s", v, "");
    if (n > 4096) return fail("--threads %s: at most 4096 threads a rank%s", v, "");
    c->threads = (int)n;
  } else if (!strcmp(f, "--steps")) {
    if (!parse_count(v, INT64_MAX / 2, &n)) return fail("--steps needs a non-negative integer, not '%s'%s", v, "");
    c->steps = n;
  } else if (!strcmp(f, "--checkpoint-every")) {
    if (!parse_count(v, INT64_MAX / 2, &n) || n < 1)
      return fail("--checkpoint-every needs a positive integer, not '%s'%s", v, "");
    c->run.ckpt_every = n;
  } else if (!strcmp(f, "--sample")) {
    if (!parse_count(v, INT64_MAX / 2, &n)) return fail("--sample needs a non-negative token count, not '%s'%s", v, "");
    if (n > 1 << 24) return fail("--sample %s: at most 16777216 (2^24) tokens%s", v, "");
    c->sample_n = n;
  } else if (!strcmp(f, "--data")) c->run.data_path = v;
  else if (!strcmp(f, "--val")) c->run.val_path = v;
  else if (!strcmp(f, "--init")) c->run.init_path = v;
  else if (!strcmp(f, "--save")) c->run.save_path = v;
  else if (!strcmp(f, "--checkpoint")) c->run.ckpt_dir = v;
  else if (!strcmp(f, "--resume")) c->run.resume_dir = v;
  else if (!strcmp(f, "--trace")) c->run.trace_path = v;
  else if (!strcmp(f, "--metrics")) c->run.metrics_path = v;
  else if (!strcmp(f, "--profile")) c->run.profile_path = v;
  else if (!strcmp(f, "--prompt")) c->prompt = v;
  else if (!strcmp(f, "--temperature")) {
    char *end;
    errno = 0;
    double t = strtod(v, &end);
    if (end == v || *end || !(t >= 0) || !isfinite(t) || (errno == ERANGE && t == 0)) /* 1e-400: not greedy */
      return fail("--temperature needs 0 (greedy) or a positive number, not '%s'%s", v, "");
    c->sample.temperature = t, c->sample_opt = true;
  } else if (!strcmp(f, "--top-k")) {
    if (!parse_count(v, INT64_MAX / 2, &n)) return fail("--top-k needs a non-negative integer, not '%s'%s", v, "");
    c->sample.top_k = n, c->sample_opt = true;
  } else if (!strcmp(f, "--seed")) {
    if (!parse_count(v, INT64_MAX, &n)) return fail("--seed needs a non-negative integer, not '%s'%s", v, "");
    c->sample.seed = (uint64_t)n, c->sample.has_seed = true, c->sample_opt = true;
  }
  else if (!strcmp(f, "--comm-stats")) c->comm_stats = v;
  return 0;
}

/* --version: what this build can run on (the devices and communicators it was built with). */
static void version(void) {
  printf("mplrun %s (devices: %s; ranks: threads%s%s)\n", MPL_VERSION,
#ifdef MPL_CUDA_ONLY
         "cuda (built for CUDA only)",
#elif defined(MPL_HAVE_CUDA)
         "cpu, cuda",
#else
         "cpu (built without CUDA)",
#endif
#ifdef MPL_HAVE_MPI
         ", MPI processes",
#else
         "",
#endif
#ifdef MPL_HAVE_NCCL
         ", NCCL"
#else
         ""
#endif
  );
}

static int parse_args(Cli *c, int argc, char **argv) {
  bool seen[sizeof value_flags / sizeof value_flags[0]] = {false}; /* each flag with a value once */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      exit(mpl_stdout_check("mplrun")); /* --help > /dev/full: 1 */
    }
    if (!strcmp(a, "--version")) {
      version();
      exit(mpl_stdout_check("mplrun"));
    }
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) c->run.quiet = true;
    else if (!strcmp(a, "--tf32")) c->run.tf32 = true;
    else if (!strcmp(a, "--inspect")) c->inspect = true;
    else if (!strcmp(a, "--mpi")) c->mpi = true;
    else if (a[0] == '-' && a[1]) {
      char flag[64];
      const char *eq = strchr(a, '='), *val;
      size_t fl = eq ? (size_t)(eq - a) : strlen(a);
      if (fl >= sizeof flag) return fail("unknown flag '%s'%s", a, "");
      memcpy(flag, a, fl);
      flag[fl] = 0;
      int fi = value_flag(flag);
      if (fi < 0) return fail("unknown flag '%s' (see mplrun --help)%s", a, "");
      if (seen[fi]) return fail("%s is given twice: give it once%s", flag, "");
      seen[fi] = true;
      if (eq) val = eq + 1;
      else if (i + 1 < argc) val = argv[++i];
      else return fail("%s needs a value%s", flag, "");
      if (apply_flag(c, flag, val)) return 1;
    } else if (c->job_path) {
      return fail("one job at a time ('%s' and '%s')", c->job_path, a);
    } else {
      c->job_path = a;
    }
  }
  if (!c->job_path) {
    usage(stderr);
    return fail("no job given%s%s", "", "");
  }
  if ((c->sample_n >= 0) != (c->prompt != NULL)) return fail("--sample N and --prompt TEXT go together%s%s", "", "");
  if (c->run.ckpt_every > 0 && !c->run.ckpt_dir)
    return fail("--checkpoint-every N goes with --checkpoint DIR (where the checkpoints go)%s%s", "", "");
  if (c->run.init_path && c->run.resume_dir)
    return fail("--init FILE and --resume DIR both set the params: give one (--resume restores the optimizer too)%s%s", "", "");
  if (c->sample_opt && c->sample_n < 0) return fail("--temperature, --top-k and --seed go with --sample N --prompt TEXT%s%s", "", "");
  /* known before the run: refused then, not after training with the other outputs lost */
  if (c->run.profile_path && (c->steps == 0 || (c->steps < 0 && c->sample_n >= 0)))
    return fail("--profile %s measures training steps, and this run trains none (give --steps 1 or more)%s",
                c->run.profile_path, "");
  return 0;
}

/* --devices cuda[:LIST]: fails at once (no GPU, no driver, a device that does not exist);
 * LIST names one device per rank (pp * dp * tp of them); a device may repeat (ranks share it). */
static int check_cuda_devices(Cli *c, const Job *job) {
  const char *d = c->devices;
  MplErr err = {{0}};
  int count, nworld = mpl_mesh_size(job->mesh);
  /* Several ranks on GPUs: modules loaded eagerly, before the first CUDA call. Loaded
     lazily (CUDA 12's default), a kernel's first launch may wait for the context's work,
     an NCCL send among it, which waits for its peer, which may wait the same way for this
     rank (CUDA's lazy-loading hazards; pass 55). The user's own setting is kept. */
  const char *nccl = getenv("MPL_NCCL");
  if (nworld > 1 && !(nccl && !strcmp(nccl, "0"))) setenv("CUDA_MODULE_LOADING", "EAGER", 0);
  if (mpl_cuda_device_count(&count, &err) != MPL_OK) return fail("--devices %s: %s", d, err.msg);
  c->run.device_kind = "cuda";
  if (d[4] == 0) return 0;
  int n = 0;
  for (const char *p = d + 5;; p++) {
    char *end;
    long v = *p >= '0' && *p <= '9' ? strtol(p, &end, 10) : (end = (char *)p, 0); /* digits: not " 1", "+1" */
    if (end == p || v < 0 || n >= MPL_MAX_WORLD || (*end != ',' && *end != 0))
      return fail("--devices '%s': expected cuda or cuda:0,1,... (device numbers)%s", d, "");
    if (v >= count) {
      char buf[96];
      snprintf(buf, sizeof buf, "device %ld does not exist (this machine has %d)", v, count);
      return fail("--devices %s: %s", d, buf);
    }
    c->device_ids[n++] = (int)v;
    p = end;
    if (*end == 0) break;
  }
  if (n != nworld) {
    char buf[160];
    snprintf(buf, sizeof buf, "%d devices, but the job has %d ranks (one device per rank; repeat one to share it)", n,
             nworld);
    return fail("--devices %s names %s", d, buf);
  }
  c->run.device_ids = c->device_ids;
  c->run.ndevice_ids = n;
  return 0;
}

/* --devices: cpu, cpu:N (N must be the job's ranks, dp * tp * pp), cuda[:LIST]. */
static int check_devices(Cli *c, const Job *job) {
  const char *d = c->devices;
  if (!d || !strcmp(d, "cpu")) return 0;
  if (!strncmp(d, "cuda", 4) && (d[4] == 0 || d[4] == ':')) return check_cuda_devices(c, job);
  int64_t n;
  if (strncmp(d, "cpu:", 4) || !parse_count(d + 4, 1 << 20, &n) || n < 1)
    return fail("--devices '%s': expected cpu, cpu:N, cuda or cuda:0,1%s", d, "");
  int nworld = mpl_mesh_size(job->mesh);
  if (n != nworld) {
    char buf[160];
    snprintf(buf, sizeof buf, "%lld devices, but the job has %d ranks (dp %d x tp %d x pp %d: one CPU device per rank)",
             (long long)n, nworld, job->mesh.dp, job->mesh.tp, job->mesh.pp);
    return fail("--devices %s asks for %s", d, buf);
  }
  return 0;
}

static int default_threads(int ranks) {
  long t = mpl_cpus_usable() / (ranks > 0 ? ranks : 1);
  return t < 1 ? 1 : (int)t;
}

static uint64_t file_checksum(const char *path) {
  uint8_t *data;
  size_t len;
  if (mpl_file_read_all(path, &data, &len, NULL) != MPL_OK) return 0;
  uint64_t h = mpl_fnv1a64(data, len);
  mpl_free(data);
  return h;
}

/* A failed run: the message; under MPI also the end of every process (MPI_Abort). */
static int run_failed(Cli *c, const MplErr *err) {
  if (!c->run.comm) return fail("%s%s", err->msg, "");
  c->run.comm->ops->abort(c->run.comm, err->msg);
  return 1;
}

static int check_mpi(Cli *c, const Job *job);

/* Under MPI: how many processes report `bad` (an all-reduce over all of them, so every
 * process learns it and they stop together); the process count when that fails. */
static int mpi_failures(MplComm *m, bool bad) {
  int *all = mpl_malloc(sizeof(int) * (size_t)m->size);
  float n = bad;
  for (int r = 0; all && r < m->size; r++) all[r] = r;
  if (!all || m->ops->allreduce_sum_f32(m, all, m->size, &n, 1) != MPL_OK) n = (float)m->size;
  mpl_free(all);
  return (int)n;
}

/* Under MPI: how many processes hold another value than process 0 (its value sent to all as an
 * all-reduce in which the others add 0, each compared with its own), agreed by all. The top
 * 52 bits of v are compared: exact in a double. */
static int mpi_unlike_lead(MplComm *m, uint64_t v) {
  double mine = (double)(v >> 12), lead = m->rank == 0 ? mine : 0;
  int *all = mpl_malloc(sizeof(int) * (size_t)m->size);
  for (int r = 0; all && r < m->size; r++) all[r] = r;
  bool failed = !all || m->ops->allreduce_sum_f64(m, all, m->size, &lead, 1) != MPL_OK;
  mpl_free(all);
  return mpi_failures(m, failed || lead != mine);
}

/* Under MPI: do all processes run the same job with the same settings? Ranks given other
 * --steps (or one without --init, or --save, --trace, --profile, --comm-stats or -q on some
 * processes only) would wait for each other forever. A hash of the job's
 * bytes (c->run.job_checksum) and of the settings that must agree, compared with process 0's
 * (mpi_unlike_lead). */
static bool mpi_settings_differ(Cli *c) {
  MplComm *m = c->run.comm;
  uint64_t h = c->run.job_checksum;
  const char *strs[] = {c->run.init_path, c->run.resume_dir, c->run.ckpt_dir, c->run.data_path, c->run.val_path,
                        c->devices, c->prompt, getenv("MPL_MPI_PIECE") /* comm_mpi.c: the pieces must line up */};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    h = (h ^ (strs[i] ? 1 + i : 0)) * 1099511628211ull;
    for (const char *p = strs[i] ? strs[i] : ""; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
  }
  /* and whether the outputs every process helps to write are asked for (their gathers are
     collective: one process alone would wait for the others forever) */
  uint64_t tbits;
  memcpy(&tbits, &c->sample.temperature, sizeof tbits);
  int64_t nums[] = {c->steps, c->run.ckpt_every, c->run.tf32, c->sample_n, !!c->run.save_path, !!c->run.trace_path,
                    !!c->run.profile_path, !!c->comm_stats, c->run.quiet, (int64_t)tbits, c->sample.top_k,
                    (int64_t)c->sample.seed, c->sample.has_seed,
                    !!c->run.metrics_path /* (pass 73: given to one process alone, it was dropped) */};
  for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) h = (h ^ (uint64_t)nums[i]) * 1099511628211ull;
  return mpi_unlike_lead(m, h) > 0;
}

/* A file's size and a digest of its bytes: all of them up to 1 GiB (pass 73: 64 blocks of
 * 4 KiB spread over it missed a byte changed between two of them, and dp replicas started
 * from different --init params), else 64 blocks of 4 MiB spread over it (both ends among
 * them), not reading a token file of many gigabytes whole. Whether two processes read the
 * same bytes behind one path. 0 when it cannot be read (its reader then says why). */
enum { DIGEST_WHOLE = 1 << 30 };
static uint64_t file_bytes_digest(const char *path) {
  MplErr e;
  FILE *f = path ? mpl_fopen_regular(path, &e) : NULL;
  if (!f) return 0;
  struct stat st;
  uint64_t h = MPL_FNV_OFFSET;
  if (fstat(fileno(f), &st) == 0) {
    uint64_t size = (uint64_t)st.st_size;
    h = mpl_fnv1a64_words(h, &size, sizeof size);
    enum { BLK = 1 << 22 };
    unsigned char *blk = mpl_malloc(BLK);
    bool whole = size <= DIGEST_WHOLE;
    for (uint64_t i = 0; blk && size > 0 && (whole ? i * BLK < size : i < 64); i++) {
      uint64_t last = size > BLK ? size - BLK : 0, off = whole ? i * BLK : i == 63 ? last : last / 63 * i;
      if (fseeko(f, (off_t)off, SEEK_SET) != 0) break;
      h = mpl_fnv1a64_words(h, blk, fread(blk, 1, BLK, f));
    }
    mpl_free(blk);
  }
  fclose(f);
  return h ? h : 1;
}

/* Under MPI: do the files behind --init, --data and --val (or the train block's data and
 * val) hold the same bytes on every process? One path may name other files on other hosts
 * or working folders (pass 57: two dp replicas started from different params, and drifted
 * apart, with no word). Where a process cannot read one, its reader says so later. */
static bool mpi_files_differ(Cli *c, const Job *job) {
  MplComm *m = c->run.comm;
  const JobTrain *t = &job->train;
  const char *paths[] = {c->run.init_path, c->run.data_path ? c->run.data_path : t->data_kind == DATA_TOKENS ? t->data_path : NULL,
                         c->run.val_path ? c->run.val_path : t->val_path && t->val_path[0] ? t->val_path : NULL};
  const char *flags[] = {"--init", "--data (or the train block's data)", "--val (or the train block's val)"};
  bool differ = false;
  for (int i = 0; i < 3 && !differ; i++) {
    if (!paths[i]) continue;
    uint64_t d = file_bytes_digest(paths[i]);
    if (mpi_failures(m, d == 0) > 0) continue; /* unreadable somewhere: the open reports it */
    int nbad = mpi_unlike_lead(m, d);
    if (nbad > 0) {
      differ = true;
      if (m->rank == 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %d of the %d processes read other bytes than process 0 behind '%s'", flags[i], nbad,
                 m->size, paths[i]);
        fail("%s: every process must read the same file%s", msg, "");
      }
    }
  }
  return differ;
}

/* Under MPI with --devices cuda: does every process see a GPU? Agreed, and said once by
 * rank 0 (its own reason, or how many processes have none). */
static int check_mpi_gpus(Cli *c) {
  MplComm *m = c->run.comm;
  MplErr e = {{0}};
  int count, nbad = mpi_failures(m, mpl_cuda_device_count(&count, &e) != MPL_OK);
  if (nbad == 0) return 0;
  if (m->rank == 0) {
    char buf[sizeof e.msg + 80];
    snprintf(buf, sizeof buf, "%d of the %d processes have no usable GPU%s%s", nbad, m->size, e.msg[0] ? "; here: " : "",
             e.msg);
    fail("--devices %s under mpirun: %s", c->devices, buf);
  }
  return 1;
}

/* --comm-stats: every rank's counts (gathered to world rank 0 under MPI), written by the lead. */
static int write_comm_stats(const MplRun *r, const char *path, MplErr *err) {
  const Job *job = mpl_run_job(r);
  int nworld = mpl_mesh_size(job->mesh);
  MplCommCount *cnt = mpl_calloc((size_t)nworld * MPL_COMM__COUNT, sizeof *cnt);
  if (!cnt) return mpl_errf(err, "out of memory");
  int st = mpl_run_comm_counts(r, cnt, err);
  char *text = NULL; /* written whole (mpl_afile): a failed write leaves an earlier file as it was */
  size_t len = 0;
  FILE *f = st == MPL_OK && mpl_run_is_lead(r) ? open_memstream(&text, &len) : NULL;
  if (st == MPL_OK && mpl_run_is_lead(r) && !f) st = mpl_errf(err, "%s: out of memory", path);
  for (int w = 0; f && w < nworld; w++) {
    const MplCommCount *c = cnt + (size_t)w * MPL_COMM__COUNT;
    int dpi, tpi, pr;
    mpl_mesh_coords(job->mesh, w, &dpi, &tpi, &pr);
    fprintf(f, "{\"rank\": %d, \"dp\": %d, \"pp\": %d, \"tp\": %d, \"step\": %lld", w, dpi, pr, tpi,
            (long long)mpl_run_step(r));
    for (int what = 0; what < 2; what++) {
      uint64_t total = 0;
      fprintf(f, ", \"%s\": {", what ? "bytes" : "calls");
      for (int k = 0; k < MPL_COMM__COUNT; k++) {
        uint64_t v = what ? c[k].bytes : c[k].calls;
        fprintf(f, "\"%s\": %llu, ", mpl_comm_kind_name(k), (unsigned long long)v);
        total += v;
      }
      fprintf(f, "\"total\": %llu}", (unsigned long long)total);
    }
    fprintf(f, "}\n");
  }
  if (f) {
    bool bad = ferror(f) != 0;
    fclose(f);
    MplAtomicFile af;
    if (bad) st = mpl_errf(err, "%s: out of memory", path);
    else if ((st = mpl_afile_open(&af, path, err)) == MPL_OK) {
      if ((st = mpl_afile_write(&af, text, len, err)) != MPL_OK) mpl_afile_abort(&af);
      else st = mpl_afile_commit(&af, err);
    }
    free(text); /* open_memstream's buffer is the C library's */
  }
  mpl_free(cnt);
  return st;
}

static int run(Cli *c, Job *job) {
  c->run.job_checksum = file_checksum(c->job_path); /* (check_mpi compares it too) */
  if (c->run.comm && check_mpi(c, job)) return 1;
  /* the settings agree (check_mpi): a cpu device string is judged alike everywhere, so rank
     0 says it for all (each process said it, pass 57); cuda:LIST depends on each host's GPUs */
  fail_silent = c->run.comm && c->run.comm->rank != 0 && !(c->devices && !strncmp(c->devices, "cuda", 4));
  int bad = check_devices(c, job); /* under MPI agreed: a process alone must not go on */
  fail_silent = false;
  if (c->run.comm ? mpi_failures(c->run.comm, bad) > 0 : bad) return 1;
  c->run.threads = c->threads > 0 ? c->threads : default_threads(mpl_mesh_size(job->mesh));
  /* --sample alone samples from the given params: no training unless --steps says so */
  c->run.steps = c->steps >= 0 ? c->steps : (c->sample_n >= 0 ? 0 : -1);
  if (c->sample_n >= 0) c->run.out = stderr; /* stdout carries the sampled text alone */
  MplErr err = {{0}};
  /* (written by world rank 0 after training: its folder checked before, as --save's) */
  bool lead = !c->run.comm || c->run.comm->rank == 0;
  if (lead && c->comm_stats && mpl_out_file_check(c->comm_stats, "--comm-stats", &err) != MPL_OK) {
    fail("%s%s", err.msg, "");
    bad = 1;
  }
  if (lead && !bad && mpl_paths_check(&c->run, job, c->job_path, c->comm_stats, &err) != MPL_OK) {
    fail("%s%s", err.msg, "");
    bad = 1;
  }
  if (c->run.comm ? mpi_failures(c->run.comm, bad) > 0 : bad) return 1;
  MplRun *r;
  if (mpl_run_init(&r, job, &c->run, &err) != MPL_OK) return run_failed(c, &err);
  /* a prompt or a model sampling cannot use is refused before training, not after it */
  int st = c->sample_n >= 0 ? mpl_sample_check(r, c->prompt, &c->sample, &err) : MPL_OK;
  if (st == MPL_OK) st = mpl_run_train(r, &err);
  if (st == MPL_OK && c->comm_stats) st = write_comm_stats(r, c->comm_stats, &err);
  if (st == MPL_OK && !c->run.quiet && mpl_run_steps_trained(r) > 0) mpl_run_report(r, c->run.out ? c->run.out : stdout);
  if (st == MPL_OK && c->sample_n >= 0) st = mpl_run_sample(r, c->prompt, c->sample_n, &c->sample, stdout, &err);
  int sig = mpl_run_stopped(r);
  if (st != MPL_OK && c->run.comm && sig) { /* every process stopped after one step: no abort (pass 73: rank 0's
                                               --save was cut short), rank 0 says so */
    if (c->run.comm->rank == 0) fail("%s%s", err.msg, "");
    mpl_run_free(r);
    return 128 + sig;
  }
  if (st != MPL_OK && c->run.comm) { /* MPI_Abort first: a free could wait for GPU work that depends on ranks that
                                        stopped; the lock file goes first (pass 73: DIR.lock was left) */
    mpl_run_unlock(r);
    return run_failed(c, &err);
  }
  mpl_run_free(r);
  return st == MPL_OK ? 0 : run_failed(c, &err);
}

/* Under MPI, checks every process agrees on before the run (so rank 0 alone says it and
 * every process exits): the process count, the settings, a GPU everywhere for --devices cuda. */
static int check_mpi(Cli *c, const Job *job) {
  MplComm *m = c->run.comm;
  int nworld = mpl_mesh_size(job->mesh);
  char buf[256] = "";
  if (m->size != nworld && !c->launched) /* (pass 73: "mpirun started 1 processes") */
    snprintf(buf, sizeof buf, "--mpi outside mpirun is one process, but the job has %d ranks (dp %d x tp %d x pp %d): "
             "run it under mpirun -np %d, or without --mpi (its ranks as threads)", nworld, job->mesh.dp, job->mesh.tp,
             job->mesh.pp, nworld);
  else if (m->size != nworld)
    snprintf(buf, sizeof buf, "mpirun started %d process%s, but the job has %d ranks (dp %d x tp %d x pp %d): use mpirun -np %d",
             m->size, m->size == 1 ? "" : "es", nworld, job->mesh.dp, job->mesh.tp, job->mesh.pp, nworld);
  /* agreed first: a process whose job has another rank count than the others' must not
     leave them waiting in the settings' all-reduce, nor stop without a word when it is not
     rank 0 (pass 57: jobs of pp = 2 and pp = 4 side by side hung) */
  int nbad = mpi_failures(m, buf[0] != 0);
  if (nbad > 0 && nbad < m->size) {
    if (m->rank == 0) {
      char msg[160];
      snprintf(msg, sizeof msg, "%d of the %d processes read a job of another rank count", nbad, m->size);
      fail("the processes were started with different jobs (%s): check the mpirun command line%s", msg, "");
    }
    return 1;
  }
  if (!buf[0] && mpi_settings_differ(c)) {
    if (m->rank == 0)
      fail("the processes were started with different jobs or settings (the job file's bytes, --steps, --init, "
           "--resume, --checkpoint, --checkpoint-every, --data, --val, --devices, --tf32, --sample and its options, "
           "MPL_MPI_PIECE must be the same on every process; --save, --trace, --profile, --comm-stats, --metrics and "
           "-q given to all or none): check the mpirun command line%s%s", "", "");
    return 1;
  }
  if (!buf[0] && mpi_files_differ(c, job)) return 1;
  if (!buf[0]) return c->devices && !strncmp(c->devices, "cuda", 4) ? check_mpi_gpus(c) : 0;
  if (m->rank == 0) fail("%s%s", buf, "");
  return 1;
}

/* SIGINT, SIGTERM, SIGHUP (the terminal went away) and SIGPIPE (so did stdout's reader), and
 * under mpirun SIGUSR1 instead of SIGTERM: the first asks training to stop after the step in progress
 * (mpl_run_train writes the checkpoint and --save, then says where it stopped; under mpirun
 * every process stops after the same step); a second one ends the process at once. A
 * signal the shell had set to be ignored (a run started in the background) stays ignored. */
static atomic_int stop_signal; /* written on the signal thread, read by the ranks' (pass 84) */
static int stop_quiet; /* under mpirun, a process other than world rank 0 */
static void on_stop_signal(int sig) {
  /* SIGPIPE: the reader of stdout went away (mplrun ... | head): stop the same way; the
     progress lines after it are lost, and later writes fail without a signal */
  if (sig == SIGPIPE) signal(SIGPIPE, SIG_IGN);
  if (stop_signal) {
    if (sig == SIGPIPE) return;
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  stop_signal = sig;
  if (stop_quiet) return; /* another process of mpirun's says it */
  static const char msg[] = "mplrun: stopping after this step (send it again to stop at once)\n",
                    pipe_msg[] = "mplrun: the standard output was closed: stopping after this step\n";
  ssize_t w = sig == SIGPIPE ? write(2, pipe_msg, sizeof pipe_msg - 1) : write(2, msg, sizeof msg - 1);
  (void)w;
}
/* A progress line or a sampled token found stdout's reader gone (EPIPE): as SIGPIPE, unless the
 * shell had set SIGPIPE to be ignored (then the run goes on, its lines lost, as before). */
static bool pipe_caught;
static void stdout_closed(void) {
  if (pipe_caught) on_stop_signal(SIGPIPE);
}
static void *stop_signal_thread(void *arg) {
  (void)arg;
  for (;;) pause(); /* the handler runs here (or on a thread MPI started before) */
  return NULL;
}
static void catch_stop_signals(Cli *c) {
  /* under mpirun, SIGUSR1 too: Open MPI forwards it to every process (kill -USR1 MPIRUN_PID),
     where SIGTERM to mpirun is followed by SIGKILL a second later (pass 73: nothing saved);
     and not SIGTERM, which mpirun sends the processes of a job it aborts (pass 84: caught,
     each said it would stop after the step and waited for the SIGKILL, a second more) */
  int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGUSR1}, n = c->run.comm ? 5 : 4;
  stop_quiet = c->run.comm && c->run.comm->rank != 0;
  for (int i = 0; i < n; i++) {
    if (c->run.comm && sigs[i] == SIGTERM) continue;
    struct sigaction old, sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN && sigaction(sigs[i], &sa, NULL) == 0 &&
        sigs[i] == SIGPIPE)
      pipe_caught = true;
  }
  c->run.stop = &stop_signal;
  c->run.out_closed = stdout_closed;
  /* The handler must not run on a thread that computes: oneDNN 2.6's JIT sgemm (Debian's
     libdnnl2; K > 84) points rsp at a workspace it malloc'ed, and the kernel writes a signal
     frame below rsp, over the heap: "corrupted size vs. prev_size" at the sgemm's free, 1 run
     in about 60 of a SIGUSR1 under mpirun, and in threads runs too under many signals (pass
     79; oneDNN's issue 4845, mended upstream after 2.6). So one thread of its own takes the
     signals: this one blocks them before it starts any other, and every thread started
     after (the ranks', OpenMP's, oneDNN's) inherits the mask. SIGPIPE too (a `kill -PIPE`
     from outside landed on any thread, a computing one too): a write whose reader went
     away then fails with EPIPE instead, on the thread that writes, and the run is told so
     (stdout_closed, through MplRunOpts.out_closed). */
  sigset_t set;
  sigemptyset(&set);
  for (int i = 0; i < 5; i++) sigaddset(&set, sigs[i]);
  pthread_t t;
  if (pthread_create(&t, NULL, stop_signal_thread, NULL) == 0) {
    pthread_detach(t);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
  }
}

int main(int argc, char **argv) {
  mpl_std_fds_open();
  Cli c = {.steps = -1, .sample_n = -1, .sample = {.temperature = 1.0}};
  mpl_run_opts_default(&c.run);
  if (parse_args(&c, argc, argv)) return 1;
  char err[512] = "";
  Job *job = job_read(c.job_path, err, sizeof err);
  if (!job) return fail("%s%s", err[0] ? err : "cannot read the job", "");
  int rc;
  if (c.inspect) {
    /* under mpirun every process reads the job: world rank 0 alone prints it */
    const char *wr = getenv("OMPI_COMM_WORLD_RANK") ? getenv("OMPI_COMM_WORLD_RANK") : getenv("PMI_RANK");
    if (!wr || atoi(wr) == 0) job_inspect(job, stdout);
    rc = 0;
  } else {
    MplErr e = {{0}};
    c.launched = mpl_mpi_launched();
    if ((c.mpi || c.launched) && mpl_comm_mpi_init(&c.run.comm, &argc, &argv, &e) != MPL_OK) {
      rc = fail("--mpi: %s%s", e.msg, "");
    } else {
      catch_stop_signals(&c);
      rc = run(&c, job);
      if (c.run.comm) mpl_comm_mpi_finalize(c.run.comm);
      if (stop_signal && rc) rc = 128 + stop_signal; /* as a shell reports a process a signal ended */
    }
  }
  job_free(job);
  if (stop_signal != SIGPIPE && mpl_stdout_check("mplrun") && rc == 0) rc = 1; /* --inspect > /dev/full */
  return rc;
}
