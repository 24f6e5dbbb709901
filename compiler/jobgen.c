/*
 * jobgen.c — the last pass: the results of the passes before it serialised into a Job
 * (runtime/job.h) and written. It decides nothing: the values and params come from the
 * partitioned graph, the stages' programs from fusion, each rank's instructions from the
 * schedule and the update phase, the offsets from the plan, the predictions from the
 * simulation and the cost model, the kernels' code from codegen.c.
 *
 * Each step also names the forward ops whose work it does (JobStep.src: the op itself, a
 * backward or recompute op's forward op, a CE_ROWS temporary's CROSS_ENTROPY), each with
 * its share of the step's modelled time, so that mplrun --profile can give every forward
 * op its measured time; the ops' identities are the graph's (profile.c).
 *
 * Invariants: every value id in the Job is an op id of the partitioned graph; params
 * are in the update phase's order (by global name); a transfer within one rank and the
 * schedule's ALLREDUCE_TIED and OPTIMIZER_STEP are not written (the update phase
 * replaces the last two); the Job passes job_validate before it is written, and every
 * block of it comes from the runtime's allocator.
 */
#include "jobgen.h"
#include "../runtime/mpl.h"

#include <stdlib.h>
#include <string.h>

/* Where the compiler's enums are written into the job as numbers, they are the job's. */
_Static_assert((int)DT_F32 == (int)JDT_F32 && (int)DT_BF16 == (int)JDT_BF16 && (int)DT_F16 == (int)JDT_F16 &&
                   (int)DT_I32 == (int)JDT_I32 && (int)DT_BOOL == (int)JDT_BOOL,
               "compiler dtypes are the job's JobDType");
_Static_assert(INIT_ZEROS == 0 && INIT_ONES == 1 && INIT_NORMAL == 2 && INIT_UNIFORM == 3,
               "param inits are JobParam.init's codes");
_Static_assert((int)PASS_FWD == (int)JP_FWD && (int)PASS_BWD_B == (int)JP_BWD_B &&
                   (int)PASS_BWD_W == (int)JP_BWD_W && (int)PASS__COUNT == (int)JP__COUNT,
               "a stage's passes are the job's programs");

/* ---- steps ---------------------------------------------------------------------- */

/* The forward op (its index in Job.opids) whose work op does, or -1. */
static int origin_of(const Graph *g, const Op *op, const int *opid_of) {
  int o = op->id;
  if (o >= g->nop_keys || !g->op_key[o]) o = op->kind == OP_CE_ROWS ? op->key : op->fwd_of;
  return o >= 0 && o < g->nop_keys ? opid_of[o] : -1;
}

/* JobStep.src: the step's ops' forward ops with their shares of its modelled time (equal
 * shares when the model gives the step no time), ops of one forward op summed; @recompute's
 * copies, which run in the backward pass, count for none. */
static void step_sources(const Graph *g, const Step *st, const int *opid_of, JobStep *j) {
  int n = st->nsrc ? st->nsrc : 1;
  const int *ops = st->nsrc ? st->src : &st->op;
  double total = 0;
  for (int i = 0; i < n; i++) total += cost_time(cost_op(g, g->ops[ops[i]]));
  j->src = mpl_calloc((size_t)n + 1, sizeof(int32_t));
  j->src_w = mpl_calloc((size_t)n + 1, sizeof(double));
  for (int i = 0; i < n; i++) {
    int o = origin_of(g, g->ops[ops[i]], opid_of), k = 0;
    if (o < 0 || phase_is_recomp(g->ops[ops[i]]->phase)) continue; /* a recompute copy: the cost model adds
                                                                 its forward's time (not measured twice) */
    double w = total > 0 ? cost_time(cost_op(g, g->ops[ops[i]])) / total : 1.0 / n;
    while (k < j->nsrc && j->src[k] != o) k++;
    if (k == j->nsrc) j->src[j->nsrc++] = o;
    j->src_w[k] += w;
  }
  for (int k = 0; k < j->nsrc; k++) /* rounding: the shares add up to at most 1 */
    if (j->src_w[k] > 1) j->src_w[k] = 1;
}

static JobStep to_job_step(const Graph *g, const Step *st, const int *opid_of) {
  JobStep j = {.kind = (uint8_t)st->kind, .kernel = -1};
  int n;
  Arena tmp;
  arena_init(&tmp);
  int *v = step_values(&tmp, g, st, &n);
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
    j.alpha = st->alpha, j.beta = st->beta, j.prec = st->prec;
    break;
  case STEP_SDPA: case STEP_SDPA_BWD:
    j.kind = st->kind == STEP_SDPA ? JS_SDPA : JS_SDPA_BWD, j.batch = st->batch, j.heads = st->heads;
    j.kv_heads = st->kv_heads, j.M = st->m, j.N = st->n, j.K = st->k, j.hv = st->hv, j.alpha = st->alpha;
    j.causal = st->causal, j.prec = st->prec;
    break;
  case STEP_EMB_GRAD: j.kind = JS_EMB_GRAD, j.M = st->m, j.N = st->n, j.K = st->k; break;
  case STEP_CE:
    j.kind = JS_CE, j.M = st->m, j.N = st->n, j.K = st->k, j.tb = st->tb;
    j.chunk = st->chunk, j.prec = st->prec;
    break;
  case STEP_ALIAS: j.kind = JS_ALIAS; break;
  case STEP_ACCUM: j.kind = JS_ACCUM; break;
  case STEP_COMM: {
    const Op *op = g->ops[st->op];
    j.kind = JS_COMM, j.comm = plan_comm_code(op->kind), j.axis = op->axis, j.groups = op->key > 0 ? op->key : 1;
    break;
  }
  }
  step_sources(g, st, opid_of, &j);
  return j;
}

/* Job.opids: the graph's forward ops that have an identity, in op order; opid_of[op id]
 * is the op's index there, or -1. */
static int *fill_opids(Job *j, const Graph *g) {
  int *opid_of = mpl_calloc((size_t)g->nop_keys + 1, sizeof(int));
  j->opids = mpl_calloc((size_t)g->nop_keys + 1, sizeof(JobOpId));
  for (int i = 0; i < g->nop_keys; i++) {
    opid_of[i] = g->op_key[i] ? j->nopids : -1;
    if (g->op_key[i])
      j->opids[j->nopids++] = (JobOpId){mpl_strdup(g->op_key[i]), mpl_strdup(g->op_label[i]), g->ops[i]->stage};
  }
  return opid_of;
}

/* ---- the job ------------------------------------------------------------------- */

static void fill_dims(const Shape *s, int32_t *rank, int64_t *dims, int64_t *numel) {
  *rank = s->rank;
  for (int i = 0; i < s->rank; i++) dims[i] = s->d[i];
  if (numel) *numel = shape_numel(s);
}

/* The index in params[] of each param op (by op id), -1 for any other op: one pass over the
 * ops finds every param's gradients (a scan per param made a 200-layer GPT-2's job
 * quadratic). */
static int *param_index(const Graph *g, Op *const *params, int np) {
  int *pk = malloc(sizeof(int) * ((size_t)g->nops + 1));
  if (!pk) die("out of memory");
  for (int i = 0; i < g->nops; i++) pk[i] = -1;
  for (int k = 0; k < np; k++) pk[params[k]->id] = k;
  return pk;
}

static void fill_values(Job *j, const Graph *g) {
  j->nvalues = g->nops;
  j->values = mpl_calloc((size_t)g->nops + 1, sizeof(JobValue));
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    JobValue *v = &j->values[i];
    v->dtype = (uint8_t)op->dtype;
    v->kind = op->kind == OP_PARAM ? JV_PARAM : op->kind == OP_INPUT ? JV_INPUT : op->kind == OP_PARAM_GRAD ? JV_GRAD : JV_ACT;
    if (op->kind == OP_CHECK) v->kind = JV_CHECK;
    fill_dims(&op->shape, &v->rank, v->dims, &v->numel);
  }
}

static void fill_params(Job *j, const Graph *g, Op *const *params, int np) {
  j->nparams = np;
  j->params = mpl_calloc((size_t)np + 1, sizeof(JobParam));
  for (int k = 0; k < np; k++) {
    const Op *op = params[k];
    JobParam *p = &j->params[k];
    p->name = mpl_strdup(op->name);
    p->value = op->id;
    fill_dims(&op->shape, &p->rank, p->dims, &p->numel);
    p->init = (uint8_t)op->init, p->init_a = op->init_a, p->init_b = op->init_b;
    p->type = (uint8_t)op->param_type;
    p->decay = op->shape.rank >= 2;
    p->split_dim = op->layout.split_dim;
    p->groups = op->layout.groups > 0 ? op->layout.groups : 1;
  }
  int *pk = param_index(g, params, np);
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->kind == OP_PARAM_GRAD && pk[g->ops[i]->key] >= 0) j->params[pk[g->ops[i]->key]].nuses++;
  for (int k = 0; k < np; k++) {
    JobParam *p = &j->params[k];
    p->use_value = mpl_calloc((size_t)p->nuses + 1, sizeof(int32_t));
    p->use_stage = mpl_calloc((size_t)p->nuses + 1, sizeof(int32_t));
  }
  for (int i = 0; i < g->nops; i++) {
    const Op *u = g->ops[i];
    if (u->kind != OP_PARAM_GRAD || pk[u->key] < 0) continue;
    JobParam *p = &j->params[pk[u->key]];
    if (u->use < 0 || u->use >= p->nuses) die("jobgen: %s use %d of %d", p->name, u->use, p->nuses);
    p->use_value[u->use] = u->id;
    p->use_stage[u->use] = u->stage >= 0 ? u->stage : 0;
  }
  free(pk);
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
    in->hi = op->value > 0 ? (int64_t)op->value : 0; /* 0: no op bounds it (nor the tokens it reads) */
    in->draw_hi = op->draw_hi;
    in->token_role = g->train.data_kind == DATA_TOKENS && n < 2 ? n : -1;
    n++;
  }
}

/* The train block as it is (one TrainConfig from sema to the runtime), with its own copies
 * of the data and val paths. */
static void fill_train(Job *j, const Graph *g) {
  j->train = g->train;
  j->train.data_path = mpl_strdup(g->train.data_path ? g->train.data_path : "");
  j->train.val_path = mpl_strdup(g->train.val_path ? g->train.val_path : "");
  if (j->train.virtual_stages < 1) j->train.virtual_stages = 1;
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
      if (sched_stage_rank(s, st) == r) rk->stages[rk->nstages++] = st;
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

static void fill_stages(Job *j, const Partition *p, Program *(*progs)[PASS__COUNT]) {
  const Graph *g = p->g;
  int *opid_of = fill_opids(j, g);
  j->stages = mpl_calloc((size_t)p->nstages + 1, sizeof(JobStage));
  for (int s = 0; s < p->nstages; s++) {
    JobStage *st = &j->stages[s];
    st->rank = graph_stage_rank(g, s);
    st->loss_value = p->st[s].loss;
    st->logits_value = p->st[s].logits;
    for (int k = 0; k < PASS__COUNT; k++) {
      const Program *pg = progs[s][k];
      st->prog[k].nsteps = pg->nsteps;
      st->prog[k].steps = mpl_calloc((size_t)pg->nsteps + 1, sizeof(JobStep));
      for (int i = 0; i < pg->nsteps; i++) st->prog[k].steps[i] = to_job_step(g, &pg->steps[i], opid_of);
    }
  }
  mpl_free(opid_of);
  j->nxfers = p->nxfers;
  j->xfers = mpl_calloc((size_t)p->nxfers + 1, sizeof(JobXfer));
  for (int i = 0; i < p->nxfers; i++) {
    const PartXfer *x = &p->xfers[i];
    j->xfers[i] = (JobXfer){.src = x->src, .dst = x->dst, .grad = x->grad, .nvals = x->vals.n};
    j->xfers[i].vals = mpl_calloc((size_t)x->vals.n + 1, sizeof(int32_t));
    for (int v = 0; v < x->vals.n; v++) j->xfers[i].vals[v] = x->vals.v[v];
  }
}

/* The run-time checks (OP_CHECK): each value and what the runtime says when it counts bad
 * elements, at the user's place of the op it guards. */
static void fill_checks(Job *j, const Graph *g) {
  for (int i = 0; i < g->nops; i++) j->nchecks += g->ops[i]->kind == OP_CHECK;
  j->checks = mpl_calloc((size_t)j->nchecks + 1, sizeof(JobCheck));
  for (int i = 0, n = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (op->kind != OP_CHECK) continue;
    Loc at = op_user_loc(op);
    char what[400];
    if (op->key == OP_GATHER || op->key == OP_EMBEDDING)
      snprintf(what, sizeof what, "%s:%d:%d: %s: index out of range [0, %.0f)", at.file, at.line, at.col,
               op_name((OpKind)op->key), op->value);
    else if (op->key == OP_CROSS_ENTROPY)
      snprintf(what, sizeof what, "%s:%d:%d: cross_entropy: target out of range [0, %.0f)", at.file, at.line, at.col,
               op->value);
    else if (op->key == OP_DIV)
      snprintf(what, sizeof what, "%s:%d:%d: '/' on i32 tensors: division by zero", at.file, at.line, at.col);
    else snprintf(what, sizeof what, "%s:%d:%d: '%%' on i32 tensors: remainder by zero", at.file, at.line, at.col);
    j->checks[n++] = (JobCheck){.value = op->id, .what = mpl_strdup(what)};
  }
}

static void fill_kernels(Job *j, const KernelSet *ks, const KernelCode *code) {
  JobKernels *k = &j->kernels;
  k->nkernels = ks->n;
  k->names = mpl_calloc((size_t)ks->n + 1, sizeof(char *));
  for (int i = 0; i < ks->n; i++) k->names[i] = mpl_strdup(ks->k[i]->name);
  k->llvm_bc = mpl_malloc(code->llvm_bc_len + 1), k->llvm_bc_len = code->llvm_bc_len;
  memcpy(k->llvm_bc, code->llvm_bc, code->llvm_bc_len);
  k->cuda_src = mpl_strdup(code->cuda_src);
  k->cuda_src_len = code->cuda_src_len;
  if (code->ptx) {
    k->ptx = mpl_malloc(code->ptx_len + 1), k->ptx_len = code->ptx_len;
    memcpy(k->ptx, code->ptx, code->ptx_len);
    k->ptx[code->ptx_len] = 0;
  }
}

int jobgen_write(Diag *d, const JobParts *jp, const char *path) {
  const Partition *p = jp->part;
  const Graph *g = p->g;
  Job *j = mpl_calloc(1, sizeof *j);
  Op *const *params = jp->upd->params;
  int np = jp->upd->nparams;
  j->model_name = mpl_strdup(g->model_name ? g->model_name : "model");
  j->source_name = mpl_strdup(jp->source);
  j->mesh.dp = g->mesh.dp, j->mesh.pp = g->mesh.pp, j->mesh.tp = g->mesh.tp;
  j->rank_speed = mpl_calloc((size_t)g->mesh.pp, sizeof(double));
  for (int r = 0; r < g->mesh.pp; r++) j->rank_speed[r] = g->rank_speed ? g->rank_speed[r] : 1;
  j->nstages = p->nstages;
  fill_train(j, g);
  fill_values(j, g);
  fill_params(j, g, params, np);
  fill_inputs(j, g);
  fill_stages(j, p, jp->fused->progs);
  fill_ranks(j, p, jp->sched, jp->upd, jp->plan, jp->timing);
  j->flops_per_step = jp->flops;
  for (int i = 0; i < g->nops; i++)
    j->loss_ces += (g->ops[i]->kind == OP_CROSS_ENTROPY || g->ops[i]->kind == OP_CE_FUSED) && g->ops[i]->phase == PH_FWD;
  j->predicted_bubble = jp->timing->bubble;
  j->textbook_bubble = sched_kind_bubble(jp->sched->kind, jp->sched->pp, jp->sched->v, jp->sched->m, NULL);
  fill_kernels(j, jp->fused->ks, jp->code);
  fill_checks(j, g);
  char err[600];
  int rc = 0;
  /* the runtime's limits (runtime/job.c: a product's sides up to 2^30, the fused
     cross-entropy's K up to 2^20, an arena up to 2^42 bytes, ...) are not all the
     language's: a program past one is refused here, not written (it aborted mplc) */
  if (job_validate(j, err, sizeof err)) {
    diag_error_noloc(d, "the job is past a limit of mplrun's (%s): use smaller sizes, more micro-batches or stages", err);
    rc = 1;
  } else if (job_write(j, path, err, sizeof err)) {
    diag_error_noloc(d, "cannot write the job: %s", err); /* err starts with the path */
    rc = 1;
  }
  job_free(j); /* every block of the Job came from the runtime's allocator */
  return rc;
}
