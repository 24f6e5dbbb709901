/*
 * main.c — the mplc driver. The whole pipeline reads top to bottom in main(), as
 * QBE's main.c does: options, then every pass of mplc in order, each a visible call
 * with the --emit= that prints its result beside it (an --emit stops right after its
 * pass): parse, front end, tensor parallelism, op identities (and a profile's measured
 * costs), stage balancing, autodiff, precision, partition,
 * fusion, schedule and update phase, memory plan, simulation, code generation, the
 * job. Each pass lives in its own file; this file only wires them together and turns
 * results into exit codes. docs/ARCHITECTURE.md draws the same pipeline.
 *
 * Invariants:
 *  - A user's mistake (bad flag, unreadable file, diagnostics) exits non-zero
 *    with "mplc: error: ..." or file:line:col diagnostics; never a crash.
 *  - --emit output goes to stdout, diagnostics to stderr.
 *  - No global mutable state: options live in main's frame.
 */
#include "mplc.h"
#include "autodiff.h"
#include "jobgen.h"
#include "../runtime/mpl.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef MPL_HAVE_CUDA
#define MPLC_CUDA_NOTE "CUDA: PTX with --gpu-arch, through NVRTC"
#else
#define MPLC_CUDA_NOTE "built without CUDA"
#endif

/* ORDER: none. Every --emit=NAME the driver knows. */
#define EMITS(X) X(NONE, "") X(AST, "ast") X(GRAPH, "graph") X(GRAD, "grad") X(PARTITION, "partition") \
  X(SCHEDULE, "schedule") X(PLAN, "plan") X(KERNELS, "kernels") X(CUDA, "cuda") X(LLVM, "llvm") X(DOT, "dot")

typedef enum Emit {
#define X(e, s) EMIT_##e,
  EMITS(X)
#undef X
} Emit;

static const char *const emit_names[] = {
#define X(e, s) s,
    EMITS(X)
#undef X
};

typedef struct Options {
  const char *input, *output;
  Emit emit;
  CompileOptions co;
} Options;

static void usage(FILE *out) {
  fprintf(out,
          "usage: mplc FILE.mpl [-o JOB] [--emit=ast|graph|grad|partition|schedule|plan|kernels|cuda|llvm|dot]\n"
          "            [--mesh pp=4,tp=2,dp=1] [--schedule NAME] [--microbatches N] [-D NAME=V]... [-I DIR]...\n"
          "            [--mem-limit BYTES[K|M|G]] [--device-speed S0,S1,...] [--profile FILE.json]\n"
          "            [--gpu-arch sm_NN] [--allow-gather] [--precision f32|tf32|bf16]\n"
          "            [--no-fused-sdpa] [--no-fused-ce] [--no-remat] [--no-bf16-storage] [-h|--help] [--version]\n");
}

static _Noreturn void fail(int code, const char *fmt, const char *arg) {
  fprintf(stderr, "mplc: error: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  exit(code);
}

/* Do paths a and b name one existing regular file (the same device and inode: a link,
 * another spelling of the path)? Devices are not files mplc reads whole: /dev/stdin and
 * /dev/stdout on a terminal are one inode (pass 70). */
static bool same_file(const char *a, const char *b) {
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && S_ISREG(sa.st_mode) && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

/* "pp=4,tp=2,dp=1": axes not given stay as the program says (0 here). */
static void parse_mesh(const char *s, Mesh *m) {
  *m = (Mesh){0, 0, 0};
  const char *p = s;
  if (!*p) fail(2, "--mesh '%s': expected AXIS=N,... with axes dp, pp, tp", s);
  while (*p) {
    int *axis = !strncmp(p, "dp=", 3) ? &m->dp : !strncmp(p, "pp=", 3) ? &m->pp : !strncmp(p, "tp=", 3) ? &m->tp : NULL;
    if (!axis) fail(2, "--mesh %s: expected AXIS=N,... with axes dp, pp, tp", s);
    if (*axis) fail(2, "--mesh %s: an axis is given twice", s);
    char *end;
    errno = 0;
    long v = p[3] >= '0' && p[3] <= '9' ? strtol(p + 3, &end, 10) : (end = (char *)p + 3, 0); /* not " 2", "+2" */
    if (end == p + 3 || errno || v < 1 || v > 65536 || (*end && *end != ',')) fail(2, "--mesh %s: each axis needs a count from 1 to 65536", s);
    if (*end == ',' && !end[1]) fail(2, "--mesh %s: expected AXIS=N after the last ','", s);
    *axis = (int)v;
    p = *end ? end + 1 : end;
  }
}

static double parse_bytes(const char *s) {
  char *end;
  errno = 0;
  /* decimal only: strtod would also read 0x10, inf and nan */
  double v = (*s >= '0' && *s <= '9') || *s == '.' ? strtod(s, &end) : (end = (char *)s, 0);
  if (strpbrk(s, "xXpP")) end = (char *)s;
  double mul = 1;
  if (*end == 'K' || *end == 'k') mul = 1024, end++;
  else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
  else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
  if (*end == 'B' || *end == 'b') end++;
  if (end == s || *end || errno || !(v > 0)) fail(2, "--mem-limit %s: expected a byte count such as 512M or 16G", s);
  if (v * mul >= 18446744073709551616.0) fail(2, "--mem-limit %s: more than 2^64 bytes", s);
  if (v * mul < 1) fail(2, "--mem-limit %s: less than one byte", s); /* 0.5 was taken as 0 (pass 69) */
  return v * mul;
}

/* "1,0.5": one relative speed per pipeline rank, each from 1e-6 to 1e6 (the count is
 * checked against pp once the program has said it: check_device_speed). */
static void parse_speeds(Arena *a, const char *s, CompileOptions *co) {
  int n = 1;
  for (const char *p = s; *p; p++) n += *p == ',';
  double *v = arena_alloc(a, sizeof(double) * (size_t)n);
  const char *p = s;
  for (int i = 0; i < n; i++) {
    char *end;
    errno = 0;
    v[i] = (*p >= '0' && *p <= '9') || *p == '.' ? strtod(p, &end) : (end = (char *)p, 0); /* not " 1", "+1", 0x1 */
    if (end == p || strpbrk(p, "xXpP") || errno || (*end && *end != ',') || !(v[i] >= 1e-6) || v[i] > 1e6)
      fail(2, "--device-speed %s: expected one speed per pipeline rank, each from 1e-6 to 1e6, such as 1,0.5", s);
    p = end + (*end == ',');
  }
  co->device_speed = v;
  co->ndevice_speed = n;
}

/* --device-speed gives one speed per pipeline rank of the mesh in effect. */
static void check_device_speed(const CompileOptions *co, Graph *g) {
  if (!co->device_speed) return;
  if (co->ndevice_speed != g->mesh.pp) {
    fprintf(stderr, "mplc: error: --device-speed gives %d speed%s, but the mesh has %d pipeline rank%s (pp = %d): "
            "give one speed per pipeline rank\n", co->ndevice_speed, co->ndevice_speed == 1 ? "" : "s", g->mesh.pp,
            g->mesh.pp == 1 ? "" : "s", g->mesh.pp);
    exit(2);
  }
  g->rank_speed = co->device_speed;
}

static int64_t parse_count(const char *flag, const char *s, int64_t max) {
  char *end;
  errno = 0;
  long long v = *s >= '0' && *s <= '9' ? strtoll(s, &end, 10) : (end = (char *)s, 0); /* digits: not " 2", "+2" */
  if (end == s || *end || errno || v < 1) fail(2, "%s needs a positive integer", flag);
  char why[160];
  snprintf(why, sizeof why, "%s %.64s: at most %lld", flag, s, (long long)max);
  if (v > max) fail(2, "%s", why);
  return v;
}

/* The value of "--flag VALUE" or "--flag=VALUE" (also "-DX" / "-IX"); NULL if arg is not flag. */
static const char *flag_value(int argc, char **argv, int *i, const char *flag) {
  const char *arg = argv[*i];
  size_t n = strlen(flag);
  if (strncmp(arg, flag, n)) return NULL;
  if (arg[n] == '=' && flag[1] == '-') return arg + n + 1;
  if (arg[n] == '=') { /* -o=x.job: a file named "=x.job" is not what was meant (pass 80) */
    char msg[4200];
    if (!arg[n + 1]) snprintf(msg, sizeof msg, "%s: a short option takes its value after a space, without '='", arg);
    else
      snprintf(msg, sizeof msg, "%s: a short option takes its value as '%s %s' or '%s%s', without '='", arg, flag,
               arg + n + 1, flag, arg + n + 1);
    fail(2, "%s", msg);
  }
  if (arg[n] && flag[1] != '-') return arg + n; /* -oJOB, -DNAME=V, -IDIR */
  if (arg[n]) return NULL;
  if (*i + 1 >= argc) fail(2, "%s needs a value", flag);
  return argv[++*i];
}

static Define *parse_define(Arena *a, const char *s) {
  const char *eq = strchr(s, '=');
  if (!eq || eq == s) fail(2, "-D %s: expected NAME=VALUE", s);
  Define *df = arena_alloc(a, sizeof *df);
  df->name = arena_strndup(a, s, (size_t)(eq - s));
  df->value = eq + 1;
  return df;
}

static const char *parse_precision(const char *s) {
  for (int p = PREC_F32; p <= PREC_BF16; p++)
    if (!strcmp(s, mpl_prec_name(p))) return s;
  fail(2, "--precision %s: expected f32, tf32 or bf16", s);
}

/* "sm_NN" or "compute_NN" (NN: two or three digits, e.g. sm_80, sm_90, sm_100). */
static const char *parse_gpu_arch(const char *s) {
  const char *d = !strncmp(s, "sm_", 3) ? s + 3 : !strncmp(s, "compute_", 8) ? s + 8 : NULL;
  size_t n = d ? strspn(d, "0123456789") : 0;
  if (!d || n < 2 || n > 3 || (d[n] && !(d[n] == 'a' && !d[n + 1])))
    fail(2, "--gpu-arch %s: expected sm_NN or compute_NN (e.g. sm_80, sm_90)", s);
  return s;
}

static Emit parse_emit(const char *s) {
  for (int e = EMIT_AST; e <= EMIT_DOT; e++)
    if (!strcmp(s, emit_names[e])) return (Emit)e;
  fail(2, "--emit=%s: expected ast, graph, grad, partition, schedule, plan, kernels, cuda, llvm or dot", s);
}

/* An option that takes one value may be given once (-D and -I take one each time). */
static void once(const char *flag, bool *seen) {
  if (*seen) fail(2, "%s is given twice: give it once", flag);
  *seen = true;
}

static void parse_options(Arena *a, int argc, char **argv, Options *o) {
  enum { EMIT = 1 }; /* single[EMIT] */
  static const char *const single[] = {"-o", "--emit", "--mesh", "--schedule", "--microbatches", "--mem-limit",
                                       "--device-speed", "--profile", "--gpu-arch", "--precision", NULL};
  bool seen[sizeof single / sizeof single[0]] = {false};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *v;
    for (int f = 0; single[f]; f++) {
      size_t n = strlen(single[f]);
      if (!strncmp(arg, single[f], n) && (arg[n] == 0 || arg[n] == '=')) once(single[f], &seen[f]);
    }
    if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) { usage(stdout); exit(mpl_stdout_check("mplc")); }
    if (!strcmp(arg, "--version")) {
      printf("mplc %s (MPL language contract v2; %s)\n", MPL_VERSION, MPLC_CUDA_NOTE);
      exit(mpl_stdout_check("mplc"));
    }
    if ((v = flag_value(argc, argv, &i, "-o"))) o->output = v;
    else if ((v = flag_value(argc, argv, &i, "--emit"))) o->emit = parse_emit(v);
    else if ((v = flag_value(argc, argv, &i, "--mesh"))) { parse_mesh(v, &o->co.mesh); o->co.mesh_set = true; }
    else if ((v = flag_value(argc, argv, &i, "--schedule"))) o->co.schedule = v;
    else if ((v = flag_value(argc, argv, &i, "--microbatches"))) o->co.microbatches = parse_count("--microbatches", v, MPL_MAX_MICROBATCHES);
    else if ((v = flag_value(argc, argv, &i, "--mem-limit"))) o->co.mem_limit = parse_bytes(v);
    else if ((v = flag_value(argc, argv, &i, "--device-speed"))) parse_speeds(a, v, &o->co);
    else if ((v = flag_value(argc, argv, &i, "--profile"))) o->co.profile = v;
    else if ((v = flag_value(argc, argv, &i, "--gpu-arch"))) o->co.gpu_arch = parse_gpu_arch(v);
    else if ((v = flag_value(argc, argv, &i, "--precision"))) o->co.precision = parse_precision(v);
    else if (!strcmp(arg, "--allow-gather")) o->co.allow_gather = true;
    else if (!strcmp(arg, "--no-fused-sdpa")) o->co.no_fused_sdpa = true;
    else if (!strcmp(arg, "--no-fused-ce")) o->co.no_fused_ce = true;
    else if (!strcmp(arg, "--no-remat")) o->co.no_remat = true;
    else if (!strcmp(arg, "--no-bf16-storage")) o->co.no_bf16_storage = true;
    else if ((v = flag_value(argc, argv, &i, "-D"))) {
      Define *df = parse_define(a, v);
      for (int j = 0; j < o->co.defines.n; j++) /* as every other repeated option: stop here */
        if (!strcmp(((const Define *)o->co.defines.items[j])->name, df->name)) fail(2, "-D %s is given twice: give it once", df->name);
      vec_push(a, &o->co.defines, df);
    }
    else if ((v = flag_value(argc, argv, &i, "-I"))) vec_push(a, &o->co.include_dirs, (void *)v);
    else if (arg[0] == '-' && arg[1]) fail(2, "unknown option '%s' (see mplc --help)", arg);
    else if (o->input) fail(2, "more than one input file ('%s')", arg);
    else o->input = arg;
  }
  if (!o->input) fail(2, "no input file (usage: mplc FILE.mpl [options]; see mplc --help)", "");
  if (o->output && seen[EMIT]) fail(2, "-o %s with --emit: --emit prints one stage of the compiler and stops, so no job "
                                    "would be written; run mplc once for each", o->output);
  /* the job never replaces a file mplc reads (mplc m.mpl -o m.mpl wrote the job over the
     program: pass 69); the modules it imports are checked before the write */
  if (o->output && same_file(o->output, o->input))
    fail(2, "-o %s is the program being compiled: writing the job there would destroy it", o->output);
  if (o->output && o->co.profile && same_file(o->output, o->co.profile))
    fail(2, "-o %s is the --profile file being read: writing the job there would destroy it", o->output);
}

/* The stdlib: $MPL_STDLIB, else next to the binary, ../stdlib or ./stdlib from it. */
static const char *find_stdlib(Arena *a) {
  const char *env = getenv("MPL_STDLIB");
  if (env && *env) return env;
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "stdlib";
  exe[n] = 0;
  char *slash = strrchr(exe, '/');
  if (slash) *slash = 0;
  static const char *const rel[] = {"", "/../stdlib", "/stdlib"};
  for (int i = 0; i < 3; i++) {
    const char *dir = arena_printf(a, "%s%s", exe, rel[i]);
    if (access(arena_printf(a, "%s/nn.mpl", dir), R_OK) == 0) return dir;
  }
  return arena_printf(a, "%s/../stdlib", exe);
}

/* The header of --emit=graph: mesh, stages, the train settings in effect and the
 * value range of each i32 input, as comment lines (stable, for goldens). */
static void dump_config(FILE *out, const Graph *g) {
  const TrainConfig *t = &g->train;
  fprintf(out, "# model %s: mesh dp=%d pp=%d tp=%d, %d stage%s%s\n", g->model_name, g->mesh.dp, g->mesh.pp, g->mesh.tp,
          g->nstages, g->nstages == 1 ? "" : "s", g->auto_stages ? " (placed by the balancer)" : "");
  /* paths quoted as literals (pass 52: a quote or a newline in one broke the header line) */
  if (t->data_kind == DATA_TOKENS) fputs("# train: data=tokens(", out), ast_dump_string(out, t->data_path), fputc(')', out);
  else fprintf(out, "# train: data=synthetic(%lld)", (long long)t->synthetic_n);
  bool val = t->val_path && t->val_path[0];
  if (val || t->eval_every > 0 || t->eval_batches != 8) { /* validation, when the program mentions it */
    if (val) fputs(" val=tokens(", out), ast_dump_string(out, t->val_path), fputc(')', out);
    else fprintf(out, " val=none");
    if (t->eval_every > 0) fprintf(out, " eval_every=%lld", (long long)t->eval_every);
    else fprintf(out, " eval_every=last");
    fprintf(out, " eval_batches=%lld", (long long)t->eval_batches);
  }
  fprintf(out, " batch=%lld seq=%lld microbatches=%lld schedule=%s", (long long)t->batch, (long long)t->seq,
          (long long)t->microbatches, sched_name(t->schedule));
  if (t->schedule == SCHED_INTERLEAVED) fprintf(out, "(%d)", t->virtual_stages);
  if (t->optimizer == OPT_SGD) fprintf(out, "\n#   optimizer=sgd(lr=%g, momentum=%g)", t->lr, t->momentum);
  else fprintf(out, "\n#   optimizer=adamw(lr=%g, beta1=%g, beta2=%g, eps=%g, weight_decay=%g)", t->lr, t->beta1, t->beta2, t->eps, t->weight_decay);
  if (t->lr_schedule == LR_COSINE) fprintf(out, " lr_schedule=cosine(%lld, %g)", (long long)t->warmup, t->min_lr);
  else fprintf(out, " lr_schedule=constant");
  if (t->grad_clip > 0) fprintf(out, " grad_clip=%g", t->grad_clip);
  else fprintf(out, " grad_clip=none");
  fprintf(out, " zero=%d steps=%lld seed=%llu", t->zero, (long long)t->steps, (unsigned long long)t->seed);
  if (t->precision != PREC_F32) fprintf(out, " precision=%s", mpl_prec_name(t->precision)); /* f32 dumps unchanged */
  fputc('\n', out);
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->kind == OP_INPUT && op->dtype == DT_I32) {
      if (op->value > 0) fprintf(out, "# input %s: values in [0, %g)\n", op->name, op->value);
      else if (op->draw_hi > 0)
        fprintf(out, "# input %s: slices of it read in [0, %lld) (synthetic data draws there; tokens are checked as read)\n",
                op->name, (long long)op->draw_hi);
      else fprintf(out, "# input %s: no op bounds its values (synthetic data: 0 or 1)\n", op->name);
    }
  }
}

/* --emit=schedule: the schedule, then each rank's update phase. */
static void dump_schedule(FILE *out, const Schedule *s, const UpdatePhase *u) {
  sched_dump(out, s);
  for (int r = 0; r < u->pp; r++) {
    fprintf(out, "\nrank %d update phase (optimizer_step), %d instructions:\n", r, u->n[r]);
    upd_dump(out, u, r);
  }
}

static int finish(Arena *a, int code) {
  arena_free(a);
  return mpl_stdout_check("mplc") && code == 0 ? 1 : code; /* --emit=... > /dev/full is an error */
}

int main(int argc, char **argv) {
  mpl_std_fds_open();
  Arena arena;
  arena_init(&arena);
  Options o = {0};
  parse_options(&arena, argc, argv, &o);
  o.co.stdlib_dir = find_stdlib(&arena);
  Diag diag;
  diag_init(&diag, &arena, stderr);

  /* 1. parse (lang/): tokens -> AST                                                --emit=ast */
  Node *program = parse_file(&diag, &arena, o.input);
  if (!program) {
    fprintf(stderr, "mplc: error: cannot read '%s': %s\n", o.input, strerror(errno ? errno : ENOENT));
    return finish(&arena, 1);
  }
  if (diag.nerrors) return finish(&arena, 1);
  if (o.emit == EMIT_AST) {
    ast_dump(stdout, program);
    return finish(&arena, 0);
  }

  /* 2. front end (sema*.c): AST -> the forward graph IR                            --emit=graph */
  Graph *g = sema_program(&diag, &arena, program, &o.co);
  if (!g || diag.nerrors) return finish(&arena, 1);
  check_device_speed(&o.co, g);
  if (o.emit == EMIT_GRAPH) {
    dump_config(stdout, g);
    graph_dump(stdout, g);
    return finish(&arena, 0);
  }

  /* 3. tensor parallelism (shard.c), tp > 1: one tp rank's program, local shapes, collectives */
  g = shard_program(&diag, g, o.co.allow_gather);

  /* 3a. the fused cross-entropy (ce_fuse.c; off with --no-fused-ce): a product's logits and
   *     their cross_entropy as one op where that is exact (tp = 1, f32, the logits read by
   *     nothing else); after the layouts are known, before the identities and autodiff */
  if (!o.co.no_fused_ce) g = ce_fuse(g);

  /* 3b. the forward ops' identities (profile.c), which the job carries for mplrun --profile;
   *     with --profile, the measured costs of the ops the profile has */
  prof_identify(g);
  if (o.co.profile && prof_load(&diag, g, o.co.profile)) return finish(&arena, 1);

  /* 4. stage balancing (balance.c), pp > 1 and nothing placed by hand: the top-level
   *    statements cut into stages by the cost model (or the profile's measured costs) and
   *    the devices' speeds, within --mem-limit */
  if (bal_stages(&diag, g, o.co.mem_limit) || diag.nerrors) return finish(&arena, 1);

  /* 5. autodiff (autodiff.c): the backward, its input-gradient (B) and weight-gradient (W)
   *    parts */
  if (ad_backward(g, &diag) || diag.nerrors) return finish(&arena, 1);
  graph_verify(g);

  /* 6. precision (precision.c): the program's own bf16 and f16 tensors computed in f32 and
   *    rounded to their type after each op (the backward's ops too); then, precision = bf16,
   *    every product's operands and result rounded to bf16, the backward's products too (so
   *    after autodiff, and the roundings need no gradient); before the partition, which
   *    cuts, stashes and recomputes them like any op                               --emit=grad */
  g = prec_apply(prec_lower_half(g));
  if (o.emit == EMIT_GRAD) {
    ad_dump(stdout, g);
    return finish(&arena, 0);
  }

  /* 6a. selective recomputation (remat.c; off with --no-remat): forward values that cheap
   *     ops remake from other held values are remade in the backward, not held (after the
   *     roundings, which it may remake too); then the backward as one pass where the
   *     schedule runs W right after B (partition.c) */
  if (!o.co.no_remat) g = remat_apply(g);
  part_join_backward(g);

  /* 7. partition (partition.c): each stage's passes, transfers between stages, stash,
   *    recompute, tied params                                               --emit=partition, dot */
  Partition *part = part_build(&diag, g);
  if (!part || diag.nerrors) return finish(&arena, 1);
  /* 7a. bf16 storage (precision.c; off with --no-bf16-storage): the bf16 roundings (precision
   *     = bf16's, a program's own bf16 tensors') every reader of which can read 2-byte bf16
   *     are stored so */
  if (!o.co.no_bf16_storage) prec_narrow(part);
  if (o.emit == EMIT_PARTITION || o.emit == EMIT_DOT) {
    if (o.emit == EMIT_PARTITION) part_dump(stdout, part);
    else part_dot(stdout, part);
    return finish(&arena, 0);
  }

  /* 8. fusion (fuse.c, fuse_emit.c, kir.c): each stage's passes -> Programs of Steps, the
   *    kernels in kernel IR                                                       --emit=kernels */
  Fused *fu = fuse_partition(&diag, &arena, part);
  if (!fu || diag.nerrors) return finish(&arena, 1);
  if (o.emit == EMIT_KERNELS) {
    fuse_dump(stdout, fu);
    return finish(&arena, 0);
  }

  /* 9. schedule (schedule.c): each rank's instruction list, the passes timed by the cost
   *    model (cost.c), proven deadlock-free; then each rank's update phase (update.c),
   *    which replaces its optimizer_step                                         --emit=schedule */
  Costs *cost = cost_partition(&arena, part);
  Schedule *sched = sched_partition(&diag, &arena, part, cost);
  if (!sched || diag.nerrors) return finish(&arena, 1);
  Op **params;
  int nparams = graph_params(part->g, &params, &arena);
  UpdatePhase *upd = upd_build(&arena, part, params, nparams);
  if (o.emit == EMIT_SCHEDULE) {
    dump_schedule(stdout, sched, upd);
    return finish(&arena, 0);
  }

  /* 10. memory plan (plan.c): every buffer of every rank at an arena offset, from liveness
   *    over the very steps the executor runs; each world rank's optimizer state and
   *    communication; --mem-limit */
  PlanIn pin = plan_input(&arena, part, fu, sched, upd);
  PlanRank *plan = plan_build(&arena, &pin);
  PlanWorld *world = plan_world(&arena, &pin, plan);
  if (plan_check_limit(&diag, plan, sched->pp, o.co.mem_limit) || diag.nerrors) return finish(&arena, 1);

  /* 11. simulation (sched_sim.c): the schedule run with the cost model's pass times: each
   *     rank's busy time, the bubble                                 --emit=plan (with the plan) */
  SchedTiming timing;
  double pre[SCHED_MAX_PP], post[SCHED_MAX_PP];
  cost_step_ends(part->g, upd, pre, post);
  sched_simulate(sched, cost->F, cost->B, cost->W, 0, pre, post, &timing);
  if (o.emit == EMIT_PLAN) {
    plan_dump(stdout, &pin, plan, world, &timing, cost->flops);
    return finish(&arena, 0);
  }

  /* 12. code generation (codegen.c): LLVM bitcode (cg_llvm.c), CUDA C and its PTX from
   *     NVRTC (cg_cuda.c); only for a job                               --emit=llvm, --emit=cuda */
  if (o.emit == EMIT_LLVM) {
    cg_llvm_dump_ir(stdout, fu->ks);
    return finish(&arena, 0);
  }
  if (o.emit == EMIT_CUDA) {
    fputs(cg_cuda_source(&arena, fu->ks), stdout);
    return finish(&arena, 0);
  }
  if (!o.output) return finish(&arena, 0);
  KernelCode code;
  if (cg_kernels(&diag, &arena, fu->ks, o.co.gpu_arch, &code)) return finish(&arena, 1);

  /* 13. the job (jobgen.c): every result above serialised, validated, written */
  JobParts job = {.source = o.input, .part = part, .fused = fu, .sched = sched, .upd = upd, .plan = plan,
                  .timing = &timing, .flops = cost->flops, .code = &code};
  for (int i = 0; i < diag.files.n; i++) {
    const SourceFile *sf = diag.files.items[i];
    if (same_file(o.output, sf->path)) {
      fprintf(stderr, "mplc: error: -o %s is %s, a module the program imports: writing the job there would destroy it\n",
              o.output, sf->path);
      return finish(&arena, 1);
    }
  }
  if (jobgen_write(&diag, &job, o.output)) return finish(&arena, 1);
  return finish(&arena, 0);
}
