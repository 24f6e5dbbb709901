/*
 * jobgen.c — from the partitioned graph to the Job: the schedule of every rank,
 * the fused programs of every stage, the memory plan, the kernels, and the
 * predictions (FLOPs, bubble), plus the --emit=schedule/plan/kernels dumps.
 *
 * Invariants: the schedule is proven (sched_build) before anything is written; the
 * memory plan is made from the very steps the executor will run; every value id in
 * the Job is an op id of the partitioned graph.
 */
#include "jobgen.h"
#include "../runtime/mpl.h"

#include <stdlib.h>
#include <string.h>

/* ---- schedule -------------------------------------------------------------------- */

static int cmp_name(const void *a, const void *b) {
  return strcmp((*(Op *const *)a)->name, (*(Op *const *)b)->name);
}

/* Stage edges (src < dst) from the transfers, and tied groups from the tied params. */
static Schedule *build_schedule(Diag *d, Arena *a, const Partition *p, const double *F, const double *B,
                                const double *W) {
  const Graph *g = p->g;
  int (*edges)[2] = arena_alloc(a, sizeof(int[2]) * (size_t)(p->nxfers + 1));
  int ne = 0;
  for (int i = 0; i < p->nxfers; i++) {
    const PartXfer *x = &p->xfers[i];
    edges[ne][0] = x->grad ? x->dst : x->src;
    edges[ne][1] = x->grad ? x->src : x->dst;
    ne++;
  }
  TiedGroup *tied = arena_alloc(a, sizeof(TiedGroup) * (size_t)(p->tied.n + 1));
  for (int t = 0; t < p->tied.n; t++) {
    int *st = arena_alloc(a, sizeof(int) * (size_t)p->nstages);
    int n = 0;
    for (int s = 0; s < p->nstages; s++)
      if (ivec_has(&p->st[s].params, p->tied.v[t])) st[n++] = s;
    tied[t] = (TiedGroup){n, st};
  }
  SchedSpec spec = {.kind = g->train.schedule,
                    .pp = g->mesh.pp,
                    .v = g->train.schedule == SCHED_INTERLEAVED ? g->train.virtual_stages : 1,
                    .m = (int)g->train.microbatches,
                    .nedges = ne,
                    .edges = (const int(*)[2])edges,
                    .ntied = p->tied.n,
                    .tied = tied,
                    .F = F, .B = B, .W = W};
  char err[512];
  Schedule *s = sched_build(a, &spec, err, sizeof err);
  if (!s)
    diag_error_noloc(d, "schedule %s for pp=%d, %d micro-batch%s: %s", sched_name(spec.kind), spec.pp, spec.m,
                     spec.m == 1 ? "" : "es", err);
  return s;
}

/* Predicted seconds of each stage's passes from the cost model. */
static void pass_times(const Partition *p, double *F, double *B, double *W) {
  for (int s = 0; s < p->nstages; s++) {
    double t[PASS__COUNT] = {0};
    for (int k = 0; k < PASS__COUNT; k++)
      for (int i = 0; i < p->st[s].pass[k].n; i++)
        t[k] += cost_time(cost_op(p->g, p->g->ops[p->st[s].pass[k].v[i]]));
    F[s] = t[PASS_FWD] > 0 ? t[PASS_FWD] : 1e-9;
    B[s] = t[PASS_RECOMP] + t[PASS_BWD_B] > 0 ? t[PASS_RECOMP] + t[PASS_BWD_B] : 1e-9;
    W[s] = t[PASS_BWD_W] > 0 ? t[PASS_BWD_W] : 1e-9;
  }
}

/* ---- steps ---------------------------------------------------------------------- */

static int *step_vals(Arena *a, const Graph *g, const Step *st, int *n) {
  int *v;
  switch (st->kind) {
  case STEP_KERNEL:
    *n = st->nargs;
    return st->args;
  case STEP_GEMM:
    v = arena_alloc(a, sizeof(int) * 3);
    v[0] = st->a, v[1] = st->b, v[2] = st->c;
    *n = 3;
    return v;
  case STEP_ALIAS: case STEP_ACCUM:
    v = arena_alloc(a, sizeof(int) * 2);
    v[0] = st->a, v[1] = st->b;
    *n = 2;
    return v;
  case STEP_COMM: /* out, in */
    v = arena_alloc(a, sizeof(int) * 2);
    v[0] = st->op;
    v[1] = g->ops[st->op]->in[0];
    *n = 2;
    return v;
  }
  *n = 0;
  return NULL;
}

static uint8_t comm_code(OpKind k) {
  switch (k) {
  case OP_ALLREDUCE: return JC_ALLREDUCE;
  case OP_ALLGATHER: return JC_ALLGATHER;
  case OP_TP_ENTER: return JC_TP_ENTER;
  case OP_TP_SLICE: return JC_TP_SLICE;
  case OP_REDUCE_SCATTER: return JC_REDUCE_SCATTER;
  default: die("jobgen: %s is not a collective the runtime runs", op_name(k));
  }
}


/* The steps' values for the memory plan, and the collectives that communicate with
 * their payload (the larger of output and input: the whole tensor) for the mesh plan. */
static void to_plan_prog(Arena *a, const Graph *g, const Program *pg, PlanProg *out) {
  out->nsteps = pg->nsteps;
  out->steps = arena_alloc(a, sizeof(PlanStep) * (size_t)(pg->nsteps + 1));
  for (int i = 0; i < pg->nsteps; i++) {
    const Step *st = &pg->steps[i];
    int n;
    int *v = step_vals(a, g, st, &n);
    out->steps[i] = (PlanStep){n, v, -1, 0};
    if (st->kind != STEP_COMM) continue;
    const Op *op = g->ops[st->op], *in = g->ops[op->in[0]];
    out->steps[i].comm = mpl_comm_kind_of_jc(comm_code(op->kind));
    out->steps[i].comm_bytes = op_bytes(op) > op_bytes(in) ? op_bytes(op) : op_bytes(in);
  }
}

static JobStep to_job_step(const Graph *g, const Step *st) {
  JobStep j = {.kind = (uint8_t)st->kind, .kernel = -1};
  int n;
  Arena tmp;
  arena_init(&tmp);
  int *v = step_vals(&tmp, g, st, &n);
  j.nargs = n;
  j.args = mpl_malloc(sizeof(int32_t) * (size_t)(n + 1));
  for (int i = 0; i < n; i++) j.args[i] = v[i];
  arena_free(&tmp);
  switch (st->kind) {
  case STEP_KERNEL: j.kind = JS_KERNEL, j.kernel = st->kernel, j.n_outer = st->n_outer; break;
  case STEP_GEMM:
    j.kind = JS_GEMM, j.ta = st->ta, j.tb = st->tb, j.M = st->m, j.N = st->n, j.K = st->k, j.batch = st->batch;
    j.stride_a = st->stride_a, j.stride_b = st->stride_b, j.stride_c = st->stride_c;
    j.off_a = st->off_a, j.off_b = st->off_b, j.off_c = st->off_c;
    j.alpha = st->alpha, j.beta = st->beta;
    break;
  case STEP_ALIAS: j.kind = JS_ALIAS; break;
  case STEP_ACCUM: j.kind = JS_ACCUM; break;
  case STEP_COMM: {
    const Op *op = g->ops[st->op];
    j.kind = JS_COMM, j.comm = comm_code(op->kind), j.axis = op->axis, j.groups = op->key > 0 ? op->key : 1;
    break;
  }
  }
  return j;
}

/* ---- the job ------------------------------------------------------------------- */

static void fill_dims(const Shape *s, int32_t *rank, int64_t *dims, int64_t *numel) {
  *rank = s->rank;
  for (int i = 0; i < s->rank; i++) dims[i] = s->d[i];
  if (numel) *numel = shape_numel(s);
}

static void fill_values(Job *j, const Graph *g, Op **params, int np) {
  j->nvalues = g->nops;
  j->values = mpl_calloc((size_t)g->nops + 1, sizeof(JobValue));
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    JobValue *v = &j->values[i];
    v->dtype = (uint8_t)op->dtype;
    v->kind = op->kind == OP_PARAM ? JV_PARAM : op->kind == OP_INPUT ? JV_INPUT : op->kind == OP_PARAM_GRAD ? JV_GRAD : JV_ACT;
    fill_dims(&op->shape, &v->rank, v->dims, &v->numel);
    v->param = -1;
    v->use = op->kind == OP_PARAM_GRAD ? op->use : 0;
  }
  for (int k = 0; k < np; k++) {
    j->values[params[k]->id].param = k;
    for (int i = 0; i < g->nops; i++)
      if (g->ops[i]->kind == OP_PARAM_GRAD && g->ops[i]->key == params[k]->id) j->values[i].param = k;
  }
}

static void fill_params(Job *j, const Graph *g, Op **params, int np) {
  j->nparams = np;
  j->params = mpl_calloc((size_t)np + 1, sizeof(JobParam));
  for (int k = 0; k < np; k++) {
    const Op *op = params[k];
    JobParam *p = &j->params[k];
    p->name = mpl_strdup(op->name);
    p->value = op->id;
    fill_dims(&op->shape, &p->rank, p->dims, &p->numel);
    p->init = (uint8_t)op->init, p->init_a = op->init_a, p->init_b = op->init_b;
    p->decay = op->shape.rank >= 2;
    p->split_dim = op->layout.split_dim;
    p->groups = op->layout.groups > 0 ? op->layout.groups : 1;
    for (int i = 0; i < g->nops; i++) p->nuses += g->ops[i]->kind == OP_PARAM_GRAD && g->ops[i]->key == op->id;
    p->use_value = mpl_calloc((size_t)p->nuses + 1, sizeof(int32_t));
    p->use_stage = mpl_calloc((size_t)p->nuses + 1, sizeof(int32_t));
    for (int i = 0; i < g->nops; i++) {
      const Op *u = g->ops[i];
      if (u->kind != OP_PARAM_GRAD || u->key != op->id) continue;
      if (u->use < 0 || u->use >= p->nuses) die("jobgen: %s use %d of %d", op->name, u->use, p->nuses);
      p->use_value[u->use] = u->id;
      p->use_stage[u->use] = u->stage >= 0 ? u->stage : 0;
    }
  }
}

static void fill_inputs(Job *j, const Graph *g) {
  int n = 0;
  for (int i = 0; i < g->nops; i++) n += g->ops[i]->kind == OP_INPUT;
  j->ninputs = n;
  j->inputs = mpl_calloc((size_t)n + 1, sizeof(JobInput));
  n = 0;
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->kind != OP_INPUT) continue;
    JobInput *in = &j->inputs[n];
    in->name = mpl_strdup(op->name);
    in->value = op->id;
    in->dtype = (uint8_t)op->dtype;
    fill_dims(&op->shape, &in->rank, in->dims, NULL);
    in->hi = op->value > 0 ? (int64_t)op->value : 2;
    in->token_role = g->train.data_kind == DATA_TOKENS && n < 2 ? n : -1;
    n++;
  }
}

static void fill_train(Job *j, const Graph *g) {
  const TrainConfig *t = &g->train;
  JobTrain *o = &j->train;
  o->data_kind = (uint8_t)t->data_kind;
  o->data_path = mpl_strdup(t->data_path ? t->data_path : "");
  o->synthetic_n = t->synthetic_n;
  o->batch = t->batch, o->seq = t->seq, o->microbatches = t->microbatches;
  o->schedule = (uint8_t)t->schedule, o->virtual_stages = t->virtual_stages > 0 ? t->virtual_stages : 1;
  o->optimizer = (uint8_t)t->optimizer;
  o->lr = t->lr, o->beta1 = t->beta1, o->beta2 = t->beta2, o->eps = t->eps;
  o->weight_decay = t->weight_decay, o->momentum = t->momentum;
  o->lr_schedule = (uint8_t)t->lr_schedule, o->warmup = t->warmup, o->min_lr = t->min_lr, o->grad_clip = t->grad_clip;
  o->zero = t->zero, o->steps = t->steps, o->seed = t->seed;
}

/* Schedule instruction -> job instruction; false when it moves nothing (dropped): a
 * transfer within the rank, ALLREDUCE_TIED and OPTIMIZER_STEP (the update phase replaces
 * them: fill_ranks). */
static bool to_job_ins(const Partition *p, const Ins *in, JobIns *out) {
  *out = (JobIns){.stage = in->stage, .mb = in->mb, .xfer = -1, .param = -1, .use = -1, .peer = -1};
  switch (in->kind) {
  case INS_FWD: out->kind = JI_FWD; return true;
  case INS_BWD_B: out->kind = JI_BWD_B; return true;
  case INS_BWD_W: out->kind = JI_BWD_W; return true;
  case INS_SEND_ACT:
  case INS_SEND_GRAD: out->kind = JI_SEND; break;
  case INS_RECV_ACT:
  case INS_RECV_GRAD: out->kind = JI_RECV; break;
  case INS_ALLREDUCE_TIED:
  case INS_OPTIMIZER_STEP: return false;
  default: die("jobgen: instruction kind %d", in->kind);
  }
  const PartXfer *x = plan_xfer_of(p, in);
  if (x) out->xfer = (int32_t)(x - p->xfers);
  return x != NULL;
}

static void fill_ranks(Job *j, const Partition *p, const Schedule *s, const UpdatePhase *u, const PlanRank *plan,
                       const SchedTiming *tm) {
  int m = s->m;
  j->ranks = mpl_calloc((size_t)s->pp + 1, sizeof(JobRank));
  for (int r = 0; r < s->pp; r++) {
    JobRank *rk = &j->ranks[r];
    rk->stages = mpl_calloc((size_t)p->nstages + 1, sizeof(int32_t));
    for (int st = 0; st < p->nstages; st++)
      if (st % s->pp == r) rk->stages[rk->nstages++] = st;
    rk->ins = mpl_calloc((size_t)(s->nins[r] + u->n[r]) + 1, sizeof(JobIns));
    for (int i = 0; i < s->nins[r]; i++) {
      if (to_job_ins(p, &s->ins[r][i], &rk->ins[rk->nins])) rk->nins++;
      if (s->ins[r][i].kind == INS_OPTIMIZER_STEP)
        for (int k = 0; k < u->n[r]; k++) rk->ins[rk->nins++] = u->ins[r][k];
    }
    rk->arena_bytes = plan[r].arena_bytes;
    size_t n = (size_t)j->nvalues * (size_t)m;
    rk->offset = mpl_malloc(sizeof(uint64_t) * (n + 1));
    memcpy(rk->offset, plan[r].offset, sizeof(uint64_t) * n);
    rk->predicted_busy = tm->busy[r];
    rk->predicted_bubble = tm->makespan > 0 ? 1 - tm->busy[r] / tm->makespan : 0;
  }
}

static void fill_stages(Job *j, const Partition *p, Program *(*progs)[PASS__COUNT], int pp) {
  const Graph *g = p->g;
  j->stages = mpl_calloc((size_t)p->nstages + 1, sizeof(JobStage));
  for (int s = 0; s < p->nstages; s++) {
    JobStage *st = &j->stages[s];
    st->rank = s % pp;
    st->loss_value = p->st[s].loss;
    st->logits_value = p->st[s].logits;
    for (int k = 0; k < PASS__COUNT; k++) {
      const Program *pg = progs[s][k];
      st->prog[k].nsteps = pg->nsteps;
      st->prog[k].steps = mpl_calloc((size_t)pg->nsteps + 1, sizeof(JobStep));
      for (int i = 0; i < pg->nsteps; i++) st->prog[k].steps[i] = to_job_step(g, &pg->steps[i]);
    }
  }
  j->nxfers = p->nxfers;
  j->xfers = mpl_calloc((size_t)p->nxfers + 1, sizeof(JobXfer));
  for (int i = 0; i < p->nxfers; i++) {
    const PartXfer *x = &p->xfers[i];
    j->xfers[i] = (JobXfer){.src = x->src, .dst = x->dst, .grad = x->grad, .nvals = x->vals.n};
    j->xfers[i].vals = mpl_calloc((size_t)x->vals.n + 1, sizeof(int32_t));
    for (int v = 0; v < x->vals.n; v++) j->xfers[i].vals[v] = x->vals.v[v];
  }
}

static int fill_kernels(Diag *d, Job *j, Arena *a, const KernelSet *ks, const CompileOptions *opt) {
  JobKernels *k = &j->kernels;
  char err[4096];
  k->nkernels = ks->n;
  k->names = mpl_calloc((size_t)ks->n + 1, sizeof(char *));
  for (int i = 0; i < ks->n; i++) k->names[i] = mpl_strdup(ks->k[i]->name);
  void *bc = NULL;
  size_t len = 0;
  if (cg_llvm_module(ks, &bc, &len, err, sizeof err)) {
    diag_error_noloc(d, "LLVM: %s", err);
    return 1;
  }
  k->llvm_bc = mpl_malloc(len + 1), k->llvm_bc_len = len;
  memcpy(k->llvm_bc, bc, len);
  free(bc);
  char *src = cg_cuda_source(a, ks);
  k->cuda_src = mpl_strdup(src);
  k->cuda_src_len = strlen(src);
  char *ptx = NULL;
  size_t plen = 0;
  int rc = cg_nvrtc_compile(src, opt->gpu_arch, &ptx, &plen, err, sizeof err);
  if (rc == 0) {
    k->ptx = mpl_malloc(plen + 1), k->ptx_len = plen;
    memcpy(k->ptx, ptx, plen);
    k->ptx[plen] = 0;
    free(ptx);
  } else if (rc != CG_NVRTC_UNAVAILABLE) {
    diag_error_noloc(d, "NVRTC: %s", err);
    return 1;
  }
  return 0;
}

/* The kernel IR lowers f32, i32 and bool only (kir.c dies on anything else): a program
 * that computes in bf16 or f16 gets one located diagnostic here instead of an abort.
 * Remove when kir.c lowers the half types. */
static bool check_kernel_dtypes(Diag *d, const Graph *g) {
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->dtype != DT_BF16 && op->dtype != DT_F16) continue;
    diag_error(d, op->loc, "%s tensors cannot be compiled to kernels yet (only f32, i32 and bool); cast to f32",
               dtype_name(op->dtype));
    return false;
  }
  return true;
}

Lowered *jobgen_lower(Diag *d, Arena *a, Partition *p) {
  const Graph *g = p->g;
  if (!check_kernel_dtypes(d, g)) return NULL;
  Lowered *lw = arena_alloc(a, sizeof *lw);
  lw->p = p;
  lw->ks = kset_new(a);
  int nst = p->nstages;
  lw->progs = arena_alloc(a, sizeof(Program *[PASS__COUNT]) * (size_t)nst);
  lw->plan_progs = arena_alloc(a, sizeof(PlanProg[PASS__COUNT]) * (size_t)nst);
  for (int i = 0; i < g->nops; i++) lw->flops += cost_op(g, g->ops[i]).flops;
  lw->flops *= (double)g->train.microbatches;
  /* fusion may append temporaries to the graph (fuse.c's CE_ROWS): everything sized
   * by the number of values is allocated after it */
  for (int s = 0; s < nst; s++)
    for (int k = 0; k < PASS__COUNT; k++)
      lw->progs[s][k] = fuse_program(a, p->g, p->st[s].pass[k].v, p->st[s].pass[k].n, lw->ks);
  lw->alias_of = arena_alloc(a, sizeof(int) * (size_t)g->nops);
  for (int i = 0; i < g->nops; i++) lw->alias_of[i] = -1;
  for (int s = 0; s < nst; s++)
    for (int k = 0; k < PASS__COUNT; k++) {
      Program *pg = lw->progs[s][k];
      to_plan_prog(a, g, pg, &lw->plan_progs[s][k]);
      for (int i = 0; i < pg->nsteps; i++)
        if (pg->steps[i].kind == STEP_ALIAS) lw->alias_of[pg->steps[i].a] = pg->steps[i].b;
    }
  double *F = arena_alloc(a, sizeof(double) * (size_t)nst), *B = arena_alloc(a, sizeof(double) * (size_t)nst),
         *W = arena_alloc(a, sizeof(double) * (size_t)nst);
  pass_times(p, F, B, W);
  lw->F = F, lw->B = B, lw->W = W;
  lw->sched = build_schedule(d, a, p, F, B, W);
  if (!lw->sched) return NULL;
  lw->nparams = graph_params(g, &lw->params, a);
  qsort(lw->params, (size_t)lw->nparams, sizeof *lw->params, cmp_name);
  lw->upd = upd_build(a, p, lw->params, lw->nparams);
  PlanIn pin = {.g = g, .part = p, .sched = lw->sched, .progs = lw->plan_progs, .alias_of = lw->alias_of,
                .params = lw->params, .nparams = lw->nparams, .upd = lw->upd};
  lw->plan = plan_build(a, &pin);
  lw->world = plan_world(a, &pin, lw->plan);
  sched_simulate(lw->sched, F, B, W, 0, &lw->timing);
  return lw;
}

int jobgen_write(Diag *d, Arena *a, const Lowered *lw, const CompileOptions *opt, const char *source,
                 const char *path) {
  const Partition *p = lw->p;
  const Graph *g = p->g;
  Job *j = mpl_calloc(1, sizeof *j);
  Op **params = lw->params;
  int np = lw->nparams;
  j->model_name = mpl_strdup(g->model_name ? g->model_name : "model");
  j->source_name = mpl_strdup(source);
  j->dp = g->mesh.dp, j->pp = g->mesh.pp, j->tp = g->mesh.tp;
  j->nstages = p->nstages;
  fill_train(j, g);
  fill_values(j, g, params, np);
  fill_params(j, g, params, np);
  fill_inputs(j, g);
  fill_stages(j, p, lw->progs, g->mesh.pp);
  fill_ranks(j, p, lw->sched, lw->upd, lw->plan, &lw->timing);
  j->flops_per_step = lw->flops;
  j->predicted_bubble = lw->timing.bubble;
  j->textbook_bubble = sched_textbook_bubble(g->mesh.pp, (int)g->train.microbatches);
  int rc = fill_kernels(d, j, a, lw->ks, opt);
  char err[600];
  if (!rc && job_validate(j, err, sizeof err)) die("jobgen: the job fails its own validation: %s", err);
  if (!rc && job_write(j, path, err, sizeof err)) {
    diag_error_noloc(d, "cannot write the job: %s", err); /* err starts with the path */
    rc = 1;
  }
  job_free(j); /* every block of the Job came from the runtime's allocator */
  return rc;
}


/* ---- dumps --------------------------------------------------------------------- */

static void print_bytes(FILE *out, const char *what, uint64_t b) {
  fprintf(out, "  %-22s %12llu bytes (%.2f MiB)\n", what, (unsigned long long)b, (double)b / 1048576.0);
}

/* Do two world ranks have the same figures (pipeline rank, optimizer state, communication)? */
static bool same_figures(const PlanWorld *a, const PlanWorld *b) {
  return a->pr == b->pr && a->opt_bytes == b->opt_bytes && !memcmp(a->comm, b->comm, sizeof a->comm);
}

/* A set of mesh indices: "0-3", "1" or "0,2". */
static void print_set(FILE *out, const bool *in, int n) {
  int cnt = 0, lo = -1, hi = -1;
  for (int i = 0; i < n; i++)
    if (in[i]) cnt++, hi = i, lo = lo < 0 ? i : lo;
  if (cnt > 1 && hi - lo + 1 == cnt) {
    fprintf(out, "%d-%d", lo, hi);
    return;
  }
  for (int i = 0, k = 0; i < n; i++)
    if (in[i]) fprintf(out, "%s%d", k++ ? "," : "", i);
}

/* "ranks 0,2,4,6 (dp 0-1 x tp 0-1, pp 0)": the world ranks of a group, then their coordinates. */
static void print_group(FILE *out, const PlanWorld *pw, const bool *member, int nworld, int dp, int tp) {
  bool *ds = calloc((size_t)dp, 1), *ts = calloc((size_t)tp, 1);
  int n = 0, nd = 0, nt = 0, pr = -1;
  for (int w = 0; w < nworld; w++)
    if (member[w]) n++;
  fprintf(out, "%s ", n == 1 ? "rank" : "ranks");
  for (int w = 0, k = 0; w < nworld; w++) {
    if (!member[w]) continue;
    fprintf(out, "%s%d", k++ ? "," : "", w);
    nd += !ds[pw[w].dpi], nt += !ts[pw[w].tpi];
    ds[pw[w].dpi] = ts[pw[w].tpi] = true;
    pr = pw[w].pr;
  }
  if (n == 1) {
    for (int w = 0; w < nworld; w++)
      if (member[w]) fprintf(out, " (dp %d, pp %d, tp %d)", pw[w].dpi, pw[w].pr, pw[w].tpi);
  } else if (n == nd * nt) { /* every (dp, tp) pair of the two sets */
    fprintf(out, " (dp ");
    print_set(out, ds, dp);
    fprintf(out, " x tp ");
    print_set(out, ts, tp);
    fprintf(out, ", pp %d)", pr);
  } else {
    fprintf(out, " ((dp, tp) =");
    for (int w = 0; w < nworld; w++)
      if (member[w]) fprintf(out, " (%d, %d)", pw[w].dpi, pw[w].tpi);
    fprintf(out, ", pp %d)", pr);
  }
  free(ds);
  free(ts);
}

/* One step's messages and collectives of a rank, by kind, and their total. */
static void print_comm(FILE *out, const MplCommCount *c) {
  MplCommCount tot = {0, 0};
  fprintf(out, "  communication per step\n");
  for (int k = 0; k < MPL_COMM__COUNT; k++) {
    if (!c[k].calls) continue;
    fprintf(out, "    %-20s %8llu calls %14llu bytes (%.2f MiB)\n", mpl_comm_kind_name(k),
            (unsigned long long)c[k].calls, (unsigned long long)c[k].bytes, (double)c[k].bytes / 1048576.0);
    tot.calls += c[k].calls, tot.bytes += c[k].bytes;
  }
  fprintf(out, "    %-20s %8llu calls %14llu bytes (%.2f MiB)\n", "total", (unsigned long long)tot.calls,
          (unsigned long long)tot.bytes, (double)tot.bytes / 1048576.0);
}

static void print_rank_memory(FILE *out, const Lowered *lw, const PlanWorld *pw) {
  const Schedule *s = lw->sched;
  const PlanRank *pr = &lw->plan[pw->pr];
  int r = pw->pr;
  fprintf(out, ": stages");
  for (int st = 0; st < s->nstages; st++)
    if (st % s->pp == r) fprintf(out, " %d", st);
  fprintf(out, ", predicted busy %.3g s, bubble %.4f\n", lw->timing.busy[r],
          lw->timing.makespan > 0 ? 1 - lw->timing.busy[r] / lw->timing.makespan : 0);
  print_bytes(out, "params", pr->param_bytes);
  print_bytes(out, "grads", pr->grad_bytes);
  print_bytes(out, "optimizer state", pw->opt_bytes);
  print_bytes(out, "inputs", pr->input_bytes);
  print_bytes(out, "stash (peak)", pr->stash_peak);
  print_bytes(out, "activations (peak)", pr->act_peak);
  print_bytes(out, "arena (peak)", pr->arena_bytes);
}

/* --emit=plan: the step's totals, then per pipeline rank the groups of world ranks with
 * the same figures (tp ranks always agree; with ZeRO-1 the replicas differ), each with
 * its memory and its communication. */
void jobgen_dump_plan(FILE *out, const Lowered *lw) {
  const Graph *g = lw->p->g;
  const Schedule *s = lw->sched;
  int dp = g->mesh.dp > 0 ? g->mesh.dp : 1, tp = g->mesh.tp > 0 ? g->mesh.tp : 1, nworld = dp * tp * s->pp;
  fprintf(out, "plan: model %s, mesh dp=%d pp=%d tp=%d, schedule %s", g->model_name ? g->model_name : "?", dp, s->pp,
          tp, sched_name(s->kind));
  if (s->kind == SCHED_INTERLEAVED) fprintf(out, "(%d)", s->v);
  fprintf(out, ", %d micro-batches, %d stages\n", s->m, s->nstages);
  fprintf(out, "mesh: %d rank%s, world rank = (dp * %d + tp) * %d + pp\n", nworld, nworld == 1 ? "" : "s", tp, s->pp);
  fprintf(out, "flops per step: %.4g\n", lw->flops);
  MplCommCount all = {0, 0};
  for (int w = 0; w < nworld; w++)
    for (int k = 0; k < MPL_COMM__COUNT; k++) all.calls += lw->world[w].comm[k].calls, all.bytes += lw->world[w].comm[k].bytes;
  fprintf(out, "communication per step, all ranks: %llu calls, %llu payload bytes\n", (unsigned long long)all.calls,
          (unsigned long long)all.bytes);
  fprintf(out, "  (payload: the buffer a rank contributes or receives; a ring all-reduce over n ranks sends\n"
               "   and receives about 2(n-1)/n of it per rank)\n");
  fprintf(out, "bubble: predicted %.4f, textbook (p-1)/(m+p-1) = %.4f\n", lw->timing.bubble,
          sched_textbook_bubble(s->pp, s->m));
  bool *done = calloc((size_t)nworld, 1), *member = calloc((size_t)nworld, 1);
  for (int r = 0; r < s->pp; r++)
    for (int w = r; w < nworld; w += s->pp) {
      if (done[w]) continue;
      for (int v = 0; v < nworld; v++) member[v] = !done[v] && same_figures(&lw->world[w], &lw->world[v]);
      for (int v = 0; v < nworld; v++) done[v] |= member[v];
      print_group(out, lw->world, member, nworld, dp, tp);
      print_rank_memory(out, lw, &lw->world[w]);
      print_comm(out, lw->world[w].comm);
    }
  free(done);
  free(member);
}

void jobgen_dump_kernels(FILE *out, const Lowered *lw) {
  kir_dump(out, lw->ks, NULL);
  for (int s = 0; s < lw->p->nstages; s++)
    for (int k = 0; k < PASS__COUNT; k++) {
      if (!lw->progs[s][k]->nsteps) continue;
      fprintf(out, "\nprogram stage %d %s:\n", s, part_pass_name(k));
      kir_dump_program(out, lw->ks, lw->progs[s][k]);
    }
}
