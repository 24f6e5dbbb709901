/*
 * job.c — the job file's manifest on top of the checksummed container (jobfile.c):
 * job_write (mplc), job_read + job_validate (mplrun), job_inspect (--inspect).
 *
 * Sections, in this order: MANI (names, mesh, train settings, predictions, device speeds),
 * VALS (value table), PARM (params), INPT (inputs), OPID (the forward ops' identities),
 * STAG (stage programs, each step with its source ops), XFER (transfers), RANK
 * (instruction streams and memory plans), KERN (kernels), CHEK (the run-time checks;
 * optional: a job written without it has none). The container's header flags hold the
 * contents' format (MPL_JOB_FORMAT); another is refused.
 * The reader trusts nothing it can check: every count goes through mpl_cur_count, and
 * after parsing job_validate checks every index and offset, so a corrupted job is
 * refused with a message and never reaches the executor. The kernels are code (bitcode,
 * PTX): their bounds are not re-derived, and a job edited with its checksum recomputed
 * is trusted as any program is.
 */
#include "job.h"
#include "mpl.h"

#include <inttypes.h>
#include <string.h>

#define TAG(s) MPL_JOB_TAG(s[0], s[1], s[2], s[3])
enum { MAX_COUNT = 1 << 26, MAX_RANK = 8 };

/* ---- writing ------------------------------------------------------------------ */

static void put_dims(MplJobWriter *w, int32_t rank, const int64_t *dims) {
  mpl_jw_u32(w, (uint32_t)rank);
  for (int i = 0; i < rank; i++) mpl_jw_i64(w, dims[i]);
}

static void put_i32s(MplJobWriter *w, int32_t n, const int32_t *v) {
  mpl_jw_u32(w, (uint32_t)n);
  for (int i = 0; i < n; i++) mpl_jw_u32(w, (uint32_t)v[i]);
}

static void put_blob(MplJobWriter *w, const void *p, size_t n) {
  mpl_jw_u64(w, n);
  if (n) mpl_jw_bytes(w, p, n);
}

static void write_manifest(MplJobWriter *w, const Job *j) {
  const JobTrain *t = &j->train;
  mpl_jw_begin(w, TAG("MANI"));
  mpl_jw_str(w, j->model_name ? j->model_name : "");
  mpl_jw_str(w, j->source_name ? j->source_name : "");
  mpl_jw_u32(w, (uint32_t)j->mesh.dp), mpl_jw_u32(w, (uint32_t)j->mesh.pp), mpl_jw_u32(w, (uint32_t)j->mesh.tp);
  mpl_jw_u32(w, (uint32_t)j->nstages);
  mpl_jw_u8(w, t->data_kind), mpl_jw_str(w, t->data_path ? t->data_path : ""), mpl_jw_i64(w, t->synthetic_n);
  mpl_jw_i64(w, t->batch), mpl_jw_i64(w, t->seq), mpl_jw_i64(w, t->microbatches);
  mpl_jw_u8(w, t->schedule), mpl_jw_u32(w, (uint32_t)t->virtual_stages), mpl_jw_u8(w, t->optimizer);
  mpl_jw_f64(w, t->lr), mpl_jw_f64(w, t->beta1), mpl_jw_f64(w, t->beta2), mpl_jw_f64(w, t->eps);
  mpl_jw_f64(w, t->weight_decay), mpl_jw_f64(w, t->momentum);
  mpl_jw_u8(w, t->lr_schedule), mpl_jw_i64(w, t->warmup), mpl_jw_f64(w, t->min_lr), mpl_jw_f64(w, t->grad_clip);
  mpl_jw_u32(w, (uint32_t)t->zero), mpl_jw_i64(w, t->steps), mpl_jw_u64(w, t->seed);
  mpl_jw_str(w, t->val_path ? t->val_path : ""), mpl_jw_i64(w, t->eval_every), mpl_jw_i64(w, t->eval_batches);
  mpl_jw_u8(w, t->precision);
  mpl_jw_f64(w, j->flops_per_step), mpl_jw_f64(w, j->predicted_bubble), mpl_jw_f64(w, j->textbook_bubble);
  mpl_jw_u32(w, (uint32_t)j->loss_ces);
  for (int r = 0; r < j->mesh.pp; r++) mpl_jw_f64(w, j->rank_speed ? j->rank_speed[r] : 1);
  mpl_jw_end(w);
}

static void write_values(MplJobWriter *w, const Job *j) {
  mpl_jw_begin(w, TAG("VALS"));
  mpl_jw_u32(w, (uint32_t)j->nvalues);
  for (int i = 0; i < j->nvalues; i++) {
    const JobValue *v = &j->values[i];
    mpl_jw_u8(w, v->dtype), mpl_jw_u8(w, v->kind);
    put_dims(w, v->rank, v->dims);
  }
  mpl_jw_end(w);
  mpl_jw_begin(w, TAG("PARM"));
  mpl_jw_u32(w, (uint32_t)j->nparams);
  for (int i = 0; i < j->nparams; i++) {
    const JobParam *p = &j->params[i];
    mpl_jw_str(w, p->name), mpl_jw_u32(w, (uint32_t)p->value);
    put_dims(w, p->rank, p->dims);
    mpl_jw_u8(w, p->init), mpl_jw_f64(w, p->init_a), mpl_jw_f64(w, p->init_b), mpl_jw_u8(w, p->decay);
    mpl_jw_u8(w, p->type);
    mpl_jw_u32(w, (uint32_t)p->split_dim), mpl_jw_u32(w, (uint32_t)p->groups);
    put_i32s(w, p->nuses, p->use_value);
    put_i32s(w, p->nuses, p->use_stage);
  }
  mpl_jw_end(w);
  mpl_jw_begin(w, TAG("INPT"));
  mpl_jw_u32(w, (uint32_t)j->ninputs);
  for (int i = 0; i < j->ninputs; i++) {
    const JobInput *in = &j->inputs[i];
    mpl_jw_str(w, in->name), mpl_jw_u32(w, (uint32_t)in->value), mpl_jw_u8(w, in->dtype);
    put_dims(w, in->rank, in->dims);
    mpl_jw_i64(w, in->hi), mpl_jw_i64(w, in->draw_hi), mpl_jw_u32(w, (uint32_t)in->token_role);
  }
  mpl_jw_end(w);
  mpl_jw_begin(w, TAG("OPID"));
  mpl_jw_u32(w, (uint32_t)j->nopids);
  for (int i = 0; i < j->nopids; i++)
    mpl_jw_str(w, j->opids[i].key), mpl_jw_str(w, j->opids[i].label), mpl_jw_u32(w, (uint32_t)j->opids[i].stage);
  mpl_jw_end(w);
}

static void write_program(MplJobWriter *w, const JobProgram *pg) {
  mpl_jw_u32(w, (uint32_t)pg->nsteps);
  for (int i = 0; i < pg->nsteps; i++) {
    const JobStep *s = &pg->steps[i];
    mpl_jw_u8(w, s->kind), mpl_jw_u32(w, (uint32_t)s->kernel);
    put_i32s(w, s->nargs, s->args);
    mpl_jw_i64(w, s->n_outer), mpl_jw_u8(w, s->ta), mpl_jw_u8(w, s->tb);
    mpl_jw_i64(w, s->M), mpl_jw_i64(w, s->N), mpl_jw_i64(w, s->K), mpl_jw_i64(w, s->batch);
    mpl_jw_i64(w, s->stride_a), mpl_jw_i64(w, s->stride_b), mpl_jw_i64(w, s->stride_c);
    mpl_jw_i64(w, s->off_a), mpl_jw_i64(w, s->off_b), mpl_jw_i64(w, s->off_c);
    mpl_jw_f64(w, s->alpha), mpl_jw_f64(w, s->beta), mpl_jw_u8(w, s->prec);
    mpl_jw_u8(w, s->comm), mpl_jw_u32(w, (uint32_t)s->axis), mpl_jw_u32(w, (uint32_t)s->groups);
    put_i32s(w, s->nsrc, s->src);
    for (int k = 0; k < s->nsrc; k++) mpl_jw_f64(w, s->src_w[k]);
    mpl_jw_i64(w, s->heads), mpl_jw_i64(w, s->kv_heads), mpl_jw_i64(w, s->hv), mpl_jw_u8(w, s->causal);
    mpl_jw_i64(w, s->chunk);
  }
}

static void write_stages(MplJobWriter *w, const Job *j) {
  mpl_jw_begin(w, TAG("STAG"));
  for (int s = 0; s < j->nstages; s++) {
    const JobStage *st = &j->stages[s];
    mpl_jw_u32(w, (uint32_t)st->rank), mpl_jw_u32(w, (uint32_t)st->loss_value), mpl_jw_u32(w, (uint32_t)st->logits_value);
    for (int k = 0; k < JP__COUNT; k++) write_program(w, &st->prog[k]);
  }
  mpl_jw_end(w);
  mpl_jw_begin(w, TAG("XFER"));
  mpl_jw_u32(w, (uint32_t)j->nxfers);
  for (int i = 0; i < j->nxfers; i++) {
    const JobXfer *x = &j->xfers[i];
    mpl_jw_u32(w, (uint32_t)x->src), mpl_jw_u32(w, (uint32_t)x->dst), mpl_jw_u8(w, x->grad);
    put_i32s(w, x->nvals, x->vals);
  }
  mpl_jw_end(w);
}

static void write_ranks(MplJobWriter *w, const Job *j) {
  int64_t m = j->train.microbatches;
  mpl_jw_begin(w, TAG("RANK"));
  for (int r = 0; r < j->mesh.pp; r++) {
    const JobRank *rk = &j->ranks[r];
    put_i32s(w, rk->nstages, rk->stages);
    mpl_jw_u32(w, (uint32_t)rk->nins);
    for (int i = 0; i < rk->nins; i++) {
      const JobIns *in = &rk->ins[i];
      mpl_jw_u8(w, in->kind), mpl_jw_u32(w, (uint32_t)in->stage), mpl_jw_u32(w, (uint32_t)in->mb),
          mpl_jw_u32(w, (uint32_t)in->xfer), mpl_jw_u32(w, (uint32_t)in->param), mpl_jw_u32(w, (uint32_t)in->use),
          mpl_jw_u32(w, (uint32_t)in->peer), mpl_jw_u8(w, in->flags);
    }
    mpl_jw_u64(w, rk->arena_bytes);
    mpl_jw_f64(w, rk->predicted_busy), mpl_jw_f64(w, rk->predicted_bubble);
    for (int64_t k = 0; k < (int64_t)j->nvalues * m; k++) mpl_jw_u64(w, rk->offset[k]);
  }
  mpl_jw_end(w);
}

static void write_kernels(MplJobWriter *w, const Job *j) {
  const JobKernels *k = &j->kernels;
  mpl_jw_begin(w, TAG("KERN"));
  mpl_jw_u32(w, (uint32_t)k->nkernels);
  for (int i = 0; i < k->nkernels; i++) mpl_jw_str(w, k->names[i]);
  put_blob(w, k->llvm_bc, k->llvm_bc_len);
  put_blob(w, k->cuda_src, k->cuda_src_len);
  put_blob(w, k->ptx, k->ptx_len);
  mpl_jw_end(w);
}

static void write_checks(MplJobWriter *w, const Job *j) {
  mpl_jw_begin(w, TAG("CHEK"));
  mpl_jw_u32(w, (uint32_t)j->nchecks);
  for (int i = 0; i < j->nchecks; i++) {
    mpl_jw_u32(w, (uint32_t)j->checks[i].value);
    mpl_jw_str(w, j->checks[i].what);
  }
  mpl_jw_end(w);
}

int job_write(const Job *job, const char *path, char *err, size_t errlen) {
  MplJobWriter w;
  MplErr e = {{0}};
  mpl_jw_init(&w);
  write_manifest(&w, job);
  write_values(&w, job);
  write_stages(&w, job);
  write_ranks(&w, job);
  write_kernels(&w, job);
  write_checks(&w, job);
  int rc = mpl_jw_save(&w, path, MPL_JOB_FORMAT, &e); /* the header's flags: the contents' format */
  if (rc != MPL_OK && err) snprintf(err, errlen, "%s", e.msg);
  mpl_jw_free(&w);
  return rc;
}

/* ---- reading ----------------------------------------------------------------- */

/* The reader's allocations: NULL fails the cursor with "out of memory", so the readers'
 * loops (which stop at c->failed) never touch it and job_read reports a clean error. */
static void *cur_alloc(MplCursor *c, size_t count, size_t size) {
  void *p = mpl_calloc(count, size);
  if (!p) mpl_cur_fail(c, "out of memory");
  return p;
}

static char *dup_str(MplCursor *c) {
  const char *s = mpl_cur_str(c);
  char *d = mpl_strdup(s ? s : "");
  if (!d) mpl_cur_fail(c, "out of memory");
  return d;
}

static void get_dims(MplCursor *c, int32_t *rank, int64_t *dims, int64_t *numel) {
  uint32_t r = mpl_cur_count(c, MAX_RANK, 8, "dimensions");
  *rank = (int32_t)r;
  int64_t n = 1;
  for (uint32_t i = 0; i < r; i++) {
    dims[i] = mpl_cur_i64(c);
    if (dims[i] <= 0 || dims[i] > ((int64_t)1 << 40) || n > ((int64_t)1 << 40) / dims[i]) {
      mpl_cur_fail(c, "bad dimension %" PRId64, dims[i]);
      dims[i] = 1;
    }
    n *= dims[i];
  }
  if (numel) *numel = n;
}

static int32_t *get_i32s(MplCursor *c, int32_t *n) {
  uint32_t k = mpl_cur_count(c, MAX_COUNT, 4, "list");
  int32_t *v = cur_alloc(c, k ? k : 1, sizeof(int32_t));
  *n = v ? (int32_t)k : 0;
  for (uint32_t i = 0; v && i < k; i++) v[i] = (int32_t)mpl_cur_u32(c);
  return v;
}

static void *get_blob(MplCursor *c, size_t *len) {
  uint64_t n = mpl_cur_u64(c);
  const void *p = mpl_cur_bytes(c, n);
  if (!p) n = 0;
  uint8_t *b = cur_alloc(c, (size_t)n + 1, 1);
  *len = b ? (size_t)n : 0;
  if (!b) return NULL;
  if (n) memcpy(b, p, (size_t)n);
  b[n] = 0;
  return b;
}

static void read_manifest(MplCursor *c, Job *j) {
  JobTrain *t = &j->train;
  j->model_name = dup_str(c);
  j->source_name = dup_str(c);
  j->mesh.dp = (int32_t)mpl_cur_u32(c), j->mesh.pp = (int32_t)mpl_cur_u32(c), j->mesh.tp = (int32_t)mpl_cur_u32(c);
  j->nstages = (int32_t)mpl_cur_u32(c);
  t->data_kind = mpl_cur_u8(c), t->data_path = dup_str(c), t->synthetic_n = mpl_cur_i64(c);
  t->batch = mpl_cur_i64(c), t->seq = mpl_cur_i64(c), t->microbatches = mpl_cur_i64(c);
  t->schedule = mpl_cur_u8(c), t->virtual_stages = (int32_t)mpl_cur_u32(c), t->optimizer = mpl_cur_u8(c);
  t->lr = mpl_cur_f64(c), t->beta1 = mpl_cur_f64(c), t->beta2 = mpl_cur_f64(c), t->eps = mpl_cur_f64(c);
  t->weight_decay = mpl_cur_f64(c), t->momentum = mpl_cur_f64(c);
  t->lr_schedule = mpl_cur_u8(c), t->warmup = mpl_cur_i64(c), t->min_lr = mpl_cur_f64(c), t->grad_clip = mpl_cur_f64(c);
  t->zero = (int32_t)mpl_cur_u32(c), t->steps = mpl_cur_i64(c), t->seed = mpl_cur_u64(c);
  t->val_path = dup_str(c), t->eval_every = mpl_cur_i64(c), t->eval_batches = mpl_cur_i64(c);
  t->precision = mpl_cur_u8(c);
  j->flops_per_step = mpl_cur_f64(c), j->predicted_bubble = mpl_cur_f64(c), j->textbook_bubble = mpl_cur_f64(c);
  j->loss_ces = (int32_t)mpl_cur_u32(c);
  if (j->mesh.pp >= 1 && j->mesh.pp <= 4096) {
    j->rank_speed = cur_alloc(c, (size_t)j->mesh.pp, sizeof(double));
    for (int r = 0; j->rank_speed && r < j->mesh.pp; r++) j->rank_speed[r] = mpl_cur_f64(c);
  }
  if (j->mesh.pp < 1 || j->mesh.pp > 4096 || j->nstages < j->mesh.pp || j->nstages > 65536 || j->mesh.dp < 1 ||
      j->mesh.tp < 1 || j->mesh.dp > MPL_MAX_WORLD || j->mesh.tp > MPL_MAX_WORLD ||
      (int64_t)j->mesh.dp * j->mesh.tp * j->mesh.pp > MPL_MAX_WORLD)
    mpl_cur_fail(c, "bad mesh dp=%d pp=%d tp=%d stages=%d", j->mesh.dp, j->mesh.pp, j->mesh.tp, j->nstages);
  if (t->microbatches < 1 || t->microbatches > MPL_MAX_MICROBATCHES || t->batch < 1 || t->seq < 1)
    mpl_cur_fail(c, "bad batch %" PRId64 " / micro-batches %" PRId64, t->batch, t->microbatches);
  if (t->eval_every < 0 || t->eval_batches < 1 || t->eval_batches > (1 << 30))
    mpl_cur_fail(c, "bad validation: eval_every %" PRId64 ", eval_batches %" PRId64, t->eval_every, t->eval_batches);
  if ((unsigned)t->data_kind > DATA_TOKENS || (unsigned)t->schedule >= SCHED__COUNT || (unsigned)t->optimizer > OPT_ADAMW ||
      (unsigned)t->lr_schedule > LR_COSINE || (unsigned)t->precision > PREC_BF16)
    mpl_cur_fail(c, "bad train config: data %d, schedule %d, optimizer %d, lr schedule %d, precision %d", t->data_kind,
                 t->schedule, t->optimizer, t->lr_schedule, t->precision);
}

static void read_values(MplCursor *c, Job *j) {
  j->nvalues = (int32_t)mpl_cur_count(c, MAX_COUNT, 6, "values");
  j->values = cur_alloc(c, (size_t)j->nvalues + 1, sizeof(JobValue));
  for (int i = 0; i < j->nvalues && !c->failed; i++) {
    JobValue *v = &j->values[i];
    v->dtype = mpl_cur_u8(c), v->kind = mpl_cur_u8(c);
    get_dims(c, &v->rank, v->dims, &v->numel);
  }
}

static void read_params(MplCursor *c, Job *j) {
  j->nparams = (int32_t)mpl_cur_count(c, MAX_COUNT, 16, "params");
  j->params = cur_alloc(c, (size_t)j->nparams + 1, sizeof(JobParam));
  for (int i = 0; i < j->nparams && !c->failed; i++) {
    JobParam *p = &j->params[i];
    p->name = dup_str(c), p->value = (int32_t)mpl_cur_u32(c);
    get_dims(c, &p->rank, p->dims, &p->numel);
    p->init = mpl_cur_u8(c), p->init_a = mpl_cur_f64(c), p->init_b = mpl_cur_f64(c), p->decay = mpl_cur_u8(c);
    p->type = mpl_cur_u8(c);
    p->split_dim = (int32_t)mpl_cur_u32(c), p->groups = (int32_t)mpl_cur_u32(c);
    int32_t n2;
    p->use_value = get_i32s(c, &p->nuses);
    p->use_stage = get_i32s(c, &n2);
    if (n2 != p->nuses) mpl_cur_fail(c, "param %s: %d uses but %d stages", p->name, p->nuses, n2);
  }
}

static void read_inputs(MplCursor *c, Job *j) {
  j->ninputs = (int32_t)mpl_cur_count(c, 1024, 16, "inputs");
  j->inputs = cur_alloc(c, (size_t)j->ninputs + 1, sizeof(JobInput));
  for (int i = 0; i < j->ninputs && !c->failed; i++) {
    JobInput *in = &j->inputs[i];
    in->name = dup_str(c), in->value = (int32_t)mpl_cur_u32(c), in->dtype = mpl_cur_u8(c);
    get_dims(c, &in->rank, in->dims, NULL);
    in->hi = mpl_cur_i64(c), in->draw_hi = mpl_cur_i64(c), in->token_role = (int32_t)mpl_cur_u32(c);
  }
}

static void read_program(MplCursor *c, JobProgram *pg) {
  pg->nsteps = (int32_t)mpl_cur_count(c, MAX_COUNT, 90, "steps");
  pg->steps = cur_alloc(c, (size_t)pg->nsteps + 1, sizeof(JobStep));
  for (int i = 0; i < pg->nsteps && !c->failed; i++) {
    JobStep *s = &pg->steps[i];
    s->kind = mpl_cur_u8(c), s->kernel = (int32_t)mpl_cur_u32(c);
    s->args = get_i32s(c, &s->nargs);
    s->n_outer = mpl_cur_i64(c), s->ta = mpl_cur_u8(c), s->tb = mpl_cur_u8(c);
    s->M = mpl_cur_i64(c), s->N = mpl_cur_i64(c), s->K = mpl_cur_i64(c), s->batch = mpl_cur_i64(c);
    s->stride_a = mpl_cur_i64(c), s->stride_b = mpl_cur_i64(c), s->stride_c = mpl_cur_i64(c);
    s->off_a = mpl_cur_i64(c), s->off_b = mpl_cur_i64(c), s->off_c = mpl_cur_i64(c);
    s->alpha = mpl_cur_f64(c), s->beta = mpl_cur_f64(c), s->prec = mpl_cur_u8(c);
    s->comm = mpl_cur_u8(c), s->axis = (int32_t)mpl_cur_u32(c), s->groups = (int32_t)mpl_cur_u32(c);
    s->src = get_i32s(c, &s->nsrc);
    s->src_w = cur_alloc(c, (size_t)s->nsrc + 1, sizeof(double));
    for (int k = 0; s->src_w && k < s->nsrc; k++) s->src_w[k] = mpl_cur_f64(c);
    s->heads = mpl_cur_i64(c), s->kv_heads = mpl_cur_i64(c), s->hv = mpl_cur_i64(c), s->causal = mpl_cur_u8(c);
    s->chunk = mpl_cur_i64(c);
  }
}

static void read_opids(MplCursor *c, Job *j) {
  j->nopids = (int32_t)mpl_cur_count(c, MAX_COUNT, 8, "op identities");
  j->opids = cur_alloc(c, (size_t)j->nopids + 1, sizeof(JobOpId));
  for (int i = 0; j->opids && i < j->nopids && !c->failed; i++)
    j->opids[i].key = dup_str(c), j->opids[i].label = dup_str(c), j->opids[i].stage = (int32_t)mpl_cur_u32(c);
}

static void read_stages(MplCursor *c, Job *j) {
  j->stages = cur_alloc(c, (size_t)j->nstages + 1, sizeof(JobStage));
  for (int s = 0; s < j->nstages && !c->failed; s++) {
    JobStage *st = &j->stages[s];
    st->rank = (int32_t)mpl_cur_u32(c), st->loss_value = (int32_t)mpl_cur_u32(c), st->logits_value = (int32_t)mpl_cur_u32(c);
    for (int k = 0; k < JP__COUNT; k++) read_program(c, &st->prog[k]);
  }
}

static void read_xfers(MplCursor *c, Job *j) {
  j->nxfers = (int32_t)mpl_cur_count(c, MAX_COUNT, 13, "transfers");
  j->xfers = cur_alloc(c, (size_t)j->nxfers + 1, sizeof(JobXfer));
  for (int i = 0; i < j->nxfers && !c->failed; i++) {
    JobXfer *x = &j->xfers[i];
    x->src = (int32_t)mpl_cur_u32(c), x->dst = (int32_t)mpl_cur_u32(c), x->grad = mpl_cur_u8(c);
    x->vals = get_i32s(c, &x->nvals);
  }
}

static void read_ranks(MplCursor *c, Job *j) {
  int64_t m = j->train.microbatches;
  j->ranks = cur_alloc(c, (size_t)j->mesh.pp + 1, sizeof(JobRank));
  for (int r = 0; r < j->mesh.pp && !c->failed; r++) {
    JobRank *rk = &j->ranks[r];
    rk->stages = get_i32s(c, &rk->nstages);
    rk->nins = (int32_t)mpl_cur_count(c, MAX_COUNT, 26, "instructions");
    rk->ins = cur_alloc(c, (size_t)rk->nins + 1, sizeof(JobIns));
    for (int i = 0; i < rk->nins && !c->failed; i++) {
      JobIns *in = &rk->ins[i];
      in->kind = mpl_cur_u8(c), in->stage = (int32_t)mpl_cur_u32(c), in->mb = (int32_t)mpl_cur_u32(c);
      in->xfer = (int32_t)mpl_cur_u32(c), in->param = (int32_t)mpl_cur_u32(c), in->use = (int32_t)mpl_cur_u32(c);
      in->peer = (int32_t)mpl_cur_u32(c), in->flags = mpl_cur_u8(c);
    }
    rk->arena_bytes = mpl_cur_u64(c);
    rk->predicted_busy = mpl_cur_f64(c), rk->predicted_bubble = mpl_cur_f64(c);
    uint64_t n = (uint64_t)j->nvalues * (uint64_t)m;
    if (c->failed || n > c->len - c->pos || n * 8 > c->len - c->pos) {
      mpl_cur_fail(c, "rank %d: offset table truncated", r);
      break;
    }
    rk->offset = cur_alloc(c, (size_t)n + 1, 8);
    for (uint64_t k = 0; rk->offset && k < n; k++) rk->offset[k] = mpl_cur_u64(c);
  }
}

static void read_kernels(MplCursor *c, Job *j) {
  JobKernels *k = &j->kernels;
  k->nkernels = (int32_t)mpl_cur_count(c, MAX_COUNT, 5, "kernels");
  k->names = cur_alloc(c, (size_t)k->nkernels + 1, sizeof(char *));
  for (int i = 0; i < k->nkernels && !c->failed; i++) k->names[i] = dup_str(c);
  k->llvm_bc = get_blob(c, &k->llvm_bc_len);
  k->cuda_src = get_blob(c, &k->cuda_src_len);
  k->ptx = get_blob(c, &k->ptx_len);
}

static void read_checks(MplCursor *c, Job *j) {
  j->nchecks = (int32_t)mpl_cur_count(c, MAX_COUNT, 5, "checks");
  j->checks = cur_alloc(c, (size_t)j->nchecks + 1, sizeof(JobCheck));
  for (int i = 0; i < j->nchecks && !c->failed; i++) {
    j->checks[i].value = (int32_t)mpl_cur_u32(c);
    j->checks[i].what = dup_str(c);
  }
}

typedef void (*SectionReader)(MplCursor *, Job *);

/* Reads one section with fn; false (and the message in err) if it is missing or bad. */
static bool read_section(const MplJob *mj, const char *tag, SectionReader fn, Job *j, char *err, size_t errlen) {
  const MplJobSection *s = mpl_job_section(mj, TAG(tag));
  if (!s) {
    snprintf(err, errlen, "section %s is missing", tag);
    return false;
  }
  MplCursor c;
  mpl_cur_init(&c, s);
  fn(&c, j);
  if (c.failed) {
    snprintf(err, errlen, "section %s: %s", tag, c.err.msg);
    return false;
  }
  if (!mpl_cur_at_end(&c)) { /* the writer writes each section whole: bytes left are damage */
    snprintf(err, errlen, "section %s: %" PRIu64 " bytes after its last field", tag, c.len - c.pos);
    return false;
  }
  return true;
}

Job *job_read(const char *path, char *err, size_t errlen) {
  MplJob mj = {0};
  MplErr e = {{0}};
  char why[600] = "";
  if (mpl_job_load(&mj, path, &e) != MPL_OK) {
    snprintf(err, errlen, "%s", e.msg);
    return NULL;
  }
  if (mj.flags != MPL_JOB_FORMAT) { /* jobs before format 3 have flags 0 */
    snprintf(err, errlen, "%s: job format %u, but this mplrun reads format %d (recompile it with mplc)", path,
             mj.flags ? mj.flags : 2, MPL_JOB_FORMAT);
    mpl_job_free(&mj);
    return NULL;
  }
  Job *j = mpl_calloc(1, sizeof *j);
  if (!j) {
    mpl_job_free(&mj);
    snprintf(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  bool ok = read_section(&mj, "MANI", read_manifest, j, why, sizeof why) &&
            read_section(&mj, "VALS", read_values, j, why, sizeof why) &&
            read_section(&mj, "PARM", read_params, j, why, sizeof why) &&
            read_section(&mj, "INPT", read_inputs, j, why, sizeof why) &&
            read_section(&mj, "OPID", read_opids, j, why, sizeof why) &&
            read_section(&mj, "STAG", read_stages, j, why, sizeof why) &&
            read_section(&mj, "XFER", read_xfers, j, why, sizeof why) &&
            read_section(&mj, "RANK", read_ranks, j, why, sizeof why) &&
            read_section(&mj, "KERN", read_kernels, j, why, sizeof why) &&
            (!mpl_job_section(&mj, TAG("CHEK")) || read_section(&mj, "CHEK", read_checks, j, why, sizeof why));
  mpl_job_free(&mj);
  if (ok && job_validate(j, why, sizeof why) != 0) ok = false;
  if (!ok) {
    snprintf(err, errlen, "%s: corrupted job: %s", path, why);
    job_free(j);
    return NULL;
  }
  job_derive(j);
  return j;
}

void job_derive(Job *j) {
  for (int s = 0; s < j->nstages; s++)
    for (int k = 0; k < JP__COUNT; k++)
      for (int i = 0; i < j->stages[s].prog[k].nsteps; i++) {
        JobStep *st = &j->stages[s].prog[k].steps[i];
        bool ops = st->kind == JS_GEMM || st->kind == JS_SDPA || st->kind == JS_SDPA_BWD || st->kind == JS_CE;
        st->in16 = ops && st->nargs > 0 && j->values[st->args[0]].dtype == JDT_BF16;
      }
}

/* ---- validation ------------------------------------------------------------------ */

#define CHECK(cond, ...)                     \
  do {                                       \
    if (!(cond)) {                           \
      snprintf(err, errlen, __VA_ARGS__);    \
      return -1;                             \
    }                                        \
  } while (0)

/* JS_SDPA, JS_SDPA_BWD: sizes in range, every operand f32 and of the size its role says. */
static int validate_sdpa(const Job *j, int s, const JobStep *st, char *err, size_t errlen) {
  bool bwd = st->kind == JS_SDPA_BWD;
  CHECK(st->nargs == (bwd ? 9 : 5) && st->prec <= PREC_BF16, "stage %d: bad sdpa step", s);
  CHECK(st->batch > 0 && st->heads > 0 && st->kv_heads > 0 && st->M > 0 && st->N > 0 && st->K > 0 && st->hv > 0 &&
            st->batch <= (1 << 30) && st->heads <= (1 << 20) && st->M <= (1 << 30) && st->N <= (1 << 30) &&
            st->K <= (1 << 20) && st->hv <= (1 << 20) && st->heads % st->kv_heads == 0,
        "stage %d: bad sdpa sizes", s);
  /* sizes as a damaged job may hold them: products in 128 bits (each factor is below 2^31) */
  typedef unsigned __int128 U128;
  U128 q = (U128)st->batch * (U128)st->heads * (U128)st->M, kv = (U128)st->batch * (U128)st->kv_heads * (U128)st->N;
  U128 want128[9] = {q * (U128)st->K, kv * (U128)st->K,  kv * (U128)st->hv, q * (U128)st->hv, q,
                     q * (U128)st->hv, q * (U128)st->K, kv * (U128)st->K,  kv * (U128)st->hv};
  int64_t want[9];
  for (int a = 0; a < 9; a++) {
    CHECK(want128[a] <= (U128)INT64_MAX, "stage %d: sdpa sizes overflow", s);
    want[a] = (int64_t)want128[a];
  }
  /* the inputs (q, k, v; the backward's out and dout) all f32 or all bf16; the rest f32 */
  bool in16 = j->values[st->args[0]].dtype == JDT_BF16;
  for (int a = 0; a < st->nargs; a++) {
    const JobValue *v = &j->values[st->args[a]];
    bool input = a < 3 || (bwd && (a == 3 || a == 5));
    int dt = input && in16 ? JDT_BF16 : JDT_F32;
    CHECK(v->dtype == dt, "stage %d: sdpa operand %d is %s, not %s", s, a, job_dtype_name(v->dtype), job_dtype_name(dt));
    CHECK(v->numel == want[a], "stage %d: sdpa operand %d has %lld elements, not %lld", s, a, (long long)v->numel,
          (long long)want[a]);
  }
  CHECK(!in16 || st->prec == PREC_BF16, "stage %d: sdpa of bf16 inputs in precision %d", s, st->prec);
  return 0;
}

/* JS_CE: sizes in range, the block of rows within [1, M] and its scratch bounded, every
 * operand of the dtype and size its role says (targets i32, the rest f32). The targets'
 * values are the kernels' to check (a row whose target is out of range fails the step). */
static int validate_ce(const Job *j, int s, const JobStep *st, char *err, size_t errlen) {
  CHECK(st->nargs == 6 && st->prec <= PREC_BF16, "stage %d: bad cross-entropy step", s);
  CHECK(st->M > 0 && st->N > 0 && st->K > 0 && st->M <= (1LL << 34) && st->N <= (1LL << 31) && st->K <= (1 << 20) &&
            st->chunk > 0 && st->chunk <= st->M && st->chunk <= (1LL << 34) / st->N,
        "stage %d: bad cross-entropy sizes", s);
  int64_t x = st->M * st->K, w = st->N * st->K;
  int64_t want[6] = {x, w, st->M, 1, x, w};
  bool in16 = j->values[st->args[0]].dtype == JDT_BF16; /* x and w: both bf16 (a bf16 step) or both f32 */
  CHECK(!in16 || st->prec == PREC_BF16, "stage %d: cross-entropy of bf16 inputs in precision %d", s, st->prec);
  for (int a = 0; a < st->nargs; a++) {
    const JobValue *v = &j->values[st->args[a]];
    int dt = a == 2 ? JDT_I32 : a < 2 && in16 ? JDT_BF16 : JDT_F32;
    CHECK(v->dtype == dt && v->numel == want[a], "stage %d: cross-entropy operand %d has %lld elements, not %lld", s,
          a, (long long)v->numel, (long long)want[a]);
  }
  return 0;
}

/* JS_EMB_GRAD: sizes in range, idx i32 [M], dy f32 [M, N], out f32 [K, N]. idx's values are
 * the kernels' to clamp (they never read or write outside out). */
static int validate_emb_grad(const Job *j, int s, const JobStep *st, char *err, size_t errlen) {
  CHECK(st->nargs == 3 && st->M > 0 && st->N > 0 && st->K > 0 && st->M <= (1LL << 31) && st->N <= (1LL << 31) &&
            st->K <= (1LL << 31),
        "stage %d: bad embedding gradient step", s);
  int64_t want[3] = {st->M, st->M * st->N, st->K * st->N};
  for (int a = 0; a < 3; a++) {
    const JobValue *v = &j->values[st->args[a]];
    int dt = a == 0 ? JDT_I32 : JDT_F32;
    CHECK(v->dtype == dt && v->numel == want[a], "stage %d: embedding gradient operand %d has %lld elements, not %lld",
          s, a, (long long)v->numel, (long long)want[a]);
  }
  return 0;
}

static int validate_step(const Job *j, int s, const JobStep *st, char *err, size_t errlen) {
  CHECK(st->kind < JS__COUNT, "stage %d: bad step kind %d", s, st->kind);
  for (int a = 0; a < st->nargs; a++)
    CHECK(st->args[a] >= 0 && st->args[a] < j->nvalues, "stage %d: step reads value %d of %d", s, st->args[a], j->nvalues);
  switch (st->kind) {
  case JS_KERNEL:
    CHECK(st->kernel >= 0 && st->kernel < j->kernels.nkernels, "stage %d: kernel %d of %d", s, st->kernel, j->kernels.nkernels);
    CHECK(st->n_outer >= 0 && st->n_outer <= ((int64_t)1 << 40), "stage %d: bad iteration count", s);
    break;
  case JS_GEMM: {
    CHECK(st->nargs == 3, "stage %d: gemm with %d operands", s, st->nargs);
    CHECK(st->prec <= PREC_BF16, "stage %d: gemm precision %d", s, st->prec);
    CHECK(st->M > 0 && st->N > 0 && st->K > 0 && st->batch > 0, "stage %d: bad gemm sizes", s);
    const JobValue *a = &j->values[st->args[0]], *b = &j->values[st->args[1]], *c = &j->values[st->args[2]];
    CHECK(c->dtype == JDT_F32 && a->dtype == b->dtype &&
              (a->dtype == JDT_F32 || (a->dtype == JDT_BF16 && st->prec == PREC_BF16)),
          "stage %d: gemm of %s x %s into %s", s, job_dtype_name(a->dtype), job_dtype_name(b->dtype),
          job_dtype_name(c->dtype));
    int64_t nb = st->batch - 1;
    CHECK(st->stride_a >= 0 && st->stride_b >= 0 && st->stride_c >= 0 && st->off_a >= 0 && st->off_b >= 0 &&
              st->off_c >= 0 && st->M <= (1 << 30) && st->N <= (1 << 30) && st->K <= (1 << 30) &&
              st->batch <= (1 << 30) && st->stride_a <= (1LL << 40) && st->stride_b <= (1LL << 40) &&
              st->stride_c <= (1LL << 40) && st->off_a <= (1LL << 40) && st->off_b <= (1LL << 40) &&
              st->off_c <= (1LL << 40),
          "stage %d: bad gemm strides", s);
    CHECK(st->off_a + nb * st->stride_a + st->M * st->K <= a->numel &&
              st->off_b + nb * st->stride_b + st->K * st->N <= b->numel &&
              st->off_c + nb * st->stride_c + st->M * st->N <= c->numel,
          "stage %d: gemm operands out of bounds", s);
    break;
  }
  case JS_COMM: {
    CHECK(st->nargs == 2 && st->comm <= JC_REDUCE_SCATTER, "stage %d: bad collective", s);
    const JobValue *o = &j->values[st->args[0]], *in = &j->values[st->args[1]];
    bool split = st->comm == JC_ALLGATHER || st->comm == JC_TP_SLICE || st->comm == JC_REDUCE_SCATTER;
    CHECK(o->dtype == in->dtype && o->rank == in->rank, "stage %d: collective operands differ", s);
    CHECK(o->dtype != JDT_BF16 && o->dtype != JDT_F16, "stage %d: collective of %s values", s, job_dtype_name(o->dtype));
    CHECK(!split || (st->axis >= 0 && st->axis < o->rank && st->groups >= 1 && j->mesh.tp >= 1 &&
                     (st->comm == JC_ALLGATHER ? o : in)->dims[st->axis] % ((int64_t)j->mesh.tp * st->groups) == 0 &&
                     (st->comm == JC_ALLGATHER ? in : o)->dims[st->axis] * j->mesh.tp ==
                         (st->comm == JC_ALLGATHER ? o : in)->dims[st->axis]),
          "stage %d: bad split collective", s);
    CHECK(split || o->numel == in->numel, "stage %d: collective sizes differ", s);
    break;
  }
  case JS_SDPA: case JS_SDPA_BWD: return validate_sdpa(j, s, st, err, errlen);
  case JS_CE: return validate_ce(j, s, st, err, errlen);
  case JS_EMB_GRAD: return validate_emb_grad(j, s, st, err, errlen);
  case JS_ALIAS: case JS_ACCUM:
    CHECK(st->nargs == 2, "stage %d: step with %d operands", s, st->nargs);
    CHECK(j->values[st->args[0]].numel == j->values[st->args[1]].numel, "stage %d: operand sizes differ", s);
    CHECK(j->values[st->args[0]].dtype == j->values[st->args[1]].dtype &&
              (st->kind == JS_ALIAS || j->values[st->args[0]].dtype == JDT_F32),
          "stage %d: %s of %s into %s", s, st->kind == JS_ALIAS ? "alias" : "accumulation",
          job_dtype_name(j->values[st->args[1]].dtype), job_dtype_name(j->values[st->args[0]].dtype));
    break;
  default: break;
  }
  double wsum = 0;
  for (int k = 0; k < st->nsrc; k++) {
    CHECK(st->src[k] >= 0 && st->src[k] < j->nopids, "stage %d: step's source op %d of %d", s, st->src[k], j->nopids);
    CHECK(st->src_w[k] >= 0 && st->src_w[k] <= 1, "stage %d: step's source share %g", s, st->src_w[k]);
    wsum += st->src_w[k];
  }
  CHECK(wsum <= 1 + 1e-9, "stage %d: step's source shares add up to %g", s, wsum);
  return 0;
}

static uint64_t value_bytes(const JobValue *v) {
  static const int size[] = {4, 2, 2, 4, 1};
  return (uint64_t)v->numel * (uint64_t)(v->dtype < 5 ? size[v->dtype] : 4);
}

/* An update-phase instruction: its param, use, peer and flags in range, and the param
 * (and for a tied send the use's accumulator) kept on this rank. */
static int validate_update_ins(const Job *j, int r, const JobIns *in, char *err, size_t errlen) {
  const char *what = job_ins_name(in->kind);
  CHECK(in->flags <= (JF_CHUNK | JF_TP0), "rank %d: %s with flags %d", r, what, in->flags);
  if (in->kind == JI_NORM_ALLREDUCE) return 0;
  CHECK(in->param >= 0 && in->param < j->nparams, "rank %d: %s of param %d", r, what, in->param);
  const JobParam *p = &j->params[in->param];
  CHECK(p->nuses > 0, "rank %d: %s of %s, which has no gradient", r, what, p->name);
  if (in->kind != JI_TIED_SEND) return 0;
  CHECK(in->use >= 0 && in->use < p->nuses, "rank %d: tied_send of %s use %d", r, p->name, in->use);
  CHECK(in->peer >= 0 && in->peer < j->mesh.pp && in->peer != r, "rank %d: tied_send of %s to rank %d", r, p->name, in->peer);
  CHECK(p->use_stage[in->use] >= 0 && p->use_stage[in->use] < j->nstages && j->stages[p->use_stage[in->use]].rank == r,
        "rank %d: tied_send of %s use %d, which is not on this rank", r, p->name, in->use);
  return 0;
}

static int validate_rank(const Job *j, int r, char *err, size_t errlen) {
  const JobRank *rk = &j->ranks[r];
  int64_t m = j->train.microbatches;
  for (int i = 0; i < rk->nstages; i++)
    CHECK(rk->stages[i] >= 0 && rk->stages[i] < j->nstages, "rank %d: stage %d", r, rk->stages[i]);
  for (int i = 0; i < rk->nins; i++) {
    const JobIns *in = &rk->ins[i];
    CHECK(in->kind < JI__COUNT, "rank %d: bad instruction kind %d", r, in->kind);
    if (job_ins_is_update(in->kind) && validate_update_ins(j, r, in, err, errlen)) return 1;
    if (in->kind <= JI_BWD_W) {
      CHECK(in->stage >= 0 && in->stage < j->nstages && j->stages[in->stage].rank == r, "rank %d: instruction on stage %d", r, in->stage);
      CHECK(in->mb >= 0 && in->mb < m, "rank %d: micro-batch %d of %" PRId64, r, in->mb, m);
    }
    if (in->kind == JI_SEND || in->kind == JI_RECV) {
      CHECK(in->xfer >= 0 && in->xfer < j->nxfers, "rank %d: transfer %d", r, in->xfer);
      CHECK(in->mb >= 0 && in->mb < m, "rank %d: micro-batch %d", r, in->mb);
    }
  }
  CHECK(rk->arena_bytes <= ((uint64_t)1 << 42), "rank %d: arena of %" PRIu64 " bytes", r, rk->arena_bytes);
  for (int64_t k = 0; k < (int64_t)j->nvalues * m; k++) {
    uint64_t off = rk->offset[k];
    if (off == UINT64_MAX) continue;
    uint64_t b = value_bytes(&j->values[k / m]);
    CHECK(off <= rk->arena_bytes && b <= rk->arena_bytes - off, "rank %d: value %" PRId64 " outside the arena", r, k / m);
  }
  return 0;
}

int job_validate(const Job *j, char *err, size_t errlen) {
  for (int r = 0; j->rank_speed && r < j->mesh.pp; r++)
    CHECK(j->rank_speed[r] > 0 && j->rank_speed[r] <= 1e9, "rank %d: device speed %g", r, j->rank_speed[r]);
  for (int i = 0; i < j->nopids; i++)
    CHECK(j->opids[i].key && j->opids[i].label && j->opids[i].stage >= -1 && j->opids[i].stage < j->nstages,
          "op identity %d: missing, or bad stage", i);
  for (int i = 0; i < j->nvalues; i++) {
    CHECK(j->values[i].dtype <= JDT_BOOL && j->values[i].kind <= JV_CHECK, "value %d: bad dtype or kind", i);
    CHECK(j->values[i].kind != JV_CHECK || (j->values[i].dtype == JDT_I32 && j->values[i].numel == 1),
          "value %d: a check that is not one i32", i);
  }
  for (int i = 0; i < j->nparams; i++) {
    const JobParam *p = &j->params[i];
    CHECK(p->value >= 0 && p->value < j->nvalues && j->values[p->value].numel == p->numel, "param %s: bad value", p->name);
    CHECK(p->init <= 3, "param %s: bad init", p->name);
    CHECK(p->type == JDT_F32 || p->type == JDT_BF16 || p->type == JDT_F16, "param %s: bad type %d", p->name, p->type);
    CHECK(p->split_dim >= -1 && p->split_dim < p->rank && p->groups >= 1 &&
              (p->split_dim < 0 || p->dims[p->split_dim] % p->groups == 0),
          "param %s: bad split", p->name);
    for (int u = 0; u < p->nuses; u++) {
      CHECK(p->use_value[u] >= 0 && p->use_value[u] < j->nvalues && j->values[p->use_value[u]].numel == p->numel,
            "param %s: bad use %d", p->name, u);
      CHECK(p->use_stage[u] >= 0 && p->use_stage[u] < j->nstages, "param %s: bad stage", p->name);
    }
  }
  for (int i = 0; i < j->ninputs; i++) {
    CHECK(j->inputs[i].value >= 0 && j->inputs[i].value < j->nvalues, "input %d: bad value", i);
    CHECK(j->inputs[i].hi >= 0 && j->inputs[i].hi <= INT32_MAX && j->inputs[i].draw_hi >= 0 &&
              j->inputs[i].draw_hi <= INT32_MAX, "input %d: bad bound", i);
  }
  for (int s = 0; s < j->nstages; s++) {
    const JobStage *st = &j->stages[s];
    CHECK(st->rank == mpl_stage_rank(j->train.schedule, j->mesh.pp, s), "stage %d: rank %d, not the %s schedule's %d", s,
          st->rank, mpl_sched_name(j->train.schedule), mpl_stage_rank(j->train.schedule, j->mesh.pp, s));
    CHECK(st->loss_value >= -1 && st->loss_value < j->nvalues, "stage %d: bad loss", s);
    CHECK(st->logits_value >= -1 && st->logits_value < j->nvalues, "stage %d: bad logits", s);
    for (int k = 0; k < JP__COUNT; k++)
      for (int i = 0; i < st->prog[k].nsteps; i++)
        if (validate_step(j, s, &st->prog[k].steps[i], err, errlen)) return -1;
  }
  for (int i = 0; i < j->nxfers; i++) {
    const JobXfer *x = &j->xfers[i];
    CHECK(x->src >= 0 && x->src < j->nstages && x->dst >= 0 && x->dst < j->nstages, "transfer %d: bad stages", i);
    for (int v = 0; v < x->nvals; v++) CHECK(x->vals[v] >= 0 && x->vals[v] < j->nvalues, "transfer %d: bad value", i);
  }
  for (int r = 0; r < j->mesh.pp; r++)
    if (validate_rank(j, r, err, errlen)) return -1;
  for (int i = 0; i < j->nchecks; i++)
    CHECK(j->checks[i].value >= 0 && j->checks[i].value < j->nvalues && j->values[j->checks[i].value].kind == JV_CHECK,
          "check %d: bad value", i);
  return 0;
}

/* ---- freeing and inspecting ------------------------------------------------------ */

void job_free(Job *j) {
  if (!j) return;
  mpl_free(j->model_name), mpl_free(j->source_name), mpl_free(j->train.data_path), mpl_free(j->train.val_path);
  mpl_free(j->values);
  for (int i = 0; j->params && i < j->nparams; i++)
    mpl_free(j->params[i].name), mpl_free(j->params[i].use_value), mpl_free(j->params[i].use_stage);
  mpl_free(j->params);
  for (int i = 0; j->inputs && i < j->ninputs; i++) mpl_free(j->inputs[i].name);
  mpl_free(j->inputs);
  for (int s = 0; j->stages && s < j->nstages; s++)
    for (int k = 0; k < JP__COUNT; k++) {
      for (int i = 0; j->stages[s].prog[k].steps && i < j->stages[s].prog[k].nsteps; i++)
        mpl_free(j->stages[s].prog[k].steps[i].args), mpl_free(j->stages[s].prog[k].steps[i].src),
            mpl_free(j->stages[s].prog[k].steps[i].src_w);
      mpl_free(j->stages[s].prog[k].steps);
    }
  mpl_free(j->stages);
  for (int i = 0; j->xfers && i < j->nxfers; i++) mpl_free(j->xfers[i].vals);
  mpl_free(j->xfers);
  for (int r = 0; j->ranks && r < j->mesh.pp; r++)
    mpl_free(j->ranks[r].stages), mpl_free(j->ranks[r].ins), mpl_free(j->ranks[r].offset);
  mpl_free(j->ranks);
  for (int i = 0; j->kernels.names && i < j->kernels.nkernels; i++) mpl_free(j->kernels.names[i]);
  mpl_free(j->kernels.names);
  mpl_free(j->kernels.llvm_bc), mpl_free(j->kernels.cuda_src), mpl_free(j->kernels.ptx);
  for (int i = 0; j->checks && i < j->nchecks; i++) mpl_free(j->checks[i].what);
  mpl_free(j->checks);
  mpl_free(j->rank_speed);
  for (int i = 0; j->opids && i < j->nopids; i++) mpl_free(j->opids[i].key), mpl_free(j->opids[i].label);
  mpl_free(j->opids);
  mpl_free(j);
}

static const char *const step_names[JS__COUNT] = {"kernel", "gemm",     "alias", "accum",   "comm",
                                                  "sdpa",   "sdpa_bwd", "ce",    "emb_grad"}; /* ORDER: JobStepKind */

void job_inspect(const Job *j, FILE *out) {
  const JobTrain *t = &j->train;
  fprintf(out, "job format %d: model %s (from %s)\n", MPL_JOB_FORMAT, j->model_name, j->source_name);
  fprintf(out, "mesh: dp=%d pp=%d tp=%d, %d stages\n", j->mesh.dp, j->mesh.pp, j->mesh.tp, j->nstages);
  fprintf(out, "train: batch %" PRId64 " seq %" PRId64 " microbatches %" PRId64 " schedule %s", t->batch, t->seq,
          t->microbatches, mpl_sched_name(t->schedule));
  if (t->schedule == SCHED_INTERLEAVED) fprintf(out, "(%d)", t->virtual_stages);
  fprintf(out, " optimizer %s lr %g steps %" PRId64 " seed %" PRIu64, t->optimizer == OPT_ADAMW ? "adamw" : "sgd", t->lr,
          t->steps, t->seed);
  if (t->precision != PREC_F32) fprintf(out, " precision %s", mpl_prec_name(t->precision));
  fputc('\n', out);
  /* the whole update, as mplc --emit=graph prints it: a compiled job audited alone */
  if (t->optimizer == OPT_ADAMW)
    fprintf(out, "optimizer: adamw(lr=%g, beta1=%g, beta2=%g, eps=%g, weight_decay=%g, on params of 2 or more dims)", t->lr,
            t->beta1, t->beta2, t->eps, t->weight_decay);
  else fprintf(out, "optimizer: sgd(lr=%g, momentum=%g)", t->lr, t->momentum);
  if (t->lr_schedule == LR_COSINE) fprintf(out, " lr_schedule=cosine(%" PRId64 ", %g)", t->warmup, t->min_lr);
  else fprintf(out, " lr_schedule=constant");
  if (t->grad_clip > 0) fprintf(out, " grad_clip=%g", t->grad_clip);
  else fprintf(out, " grad_clip=none");
  fprintf(out, " zero=%d\n", (int)t->zero);
  if (t->data_kind == DATA_TOKENS) fprintf(out, "data: %s\n", t->data_path);
  else fprintf(out, "data: synthetic(%" PRId64 ")\n", t->synthetic_n);
  if (t->val_path && t->val_path[0]) {
    fprintf(out, "val: %s, %" PRId64 " batches, ", t->val_path, t->eval_batches);
    if (t->eval_every > 0) fprintf(out, "every %" PRId64 " steps and after the last\n", t->eval_every);
    else fprintf(out, "after the last step\n");
  }
  fprintf(out, "flops per step: %.4g; predicted bubble %.4f (textbook %.4f)\n", j->flops_per_step,
          j->predicted_bubble, j->textbook_bubble);
  fprintf(out, "params (%d):\n", j->nparams);
  for (int i = 0; i < j->nparams; i++) {
    const JobParam *p = &j->params[i];
    fprintf(out, "  %s [", p->name);
    for (int d = 0; d < p->rank; d++) fprintf(out, "%s%" PRId64, d ? ", " : "", p->dims[d]);
    fprintf(out, "] uses %d on stages", p->nuses);
    for (int u = 0; u < p->nuses; u++) fprintf(out, " %d", p->use_stage[u]);
    fputc('\n', out);
  }
  fprintf(out, "inputs (%d):", j->ninputs);
  for (int i = 0; i < j->ninputs; i++) fprintf(out, " %s", j->inputs[i].name);
  fprintf(out, "\nvalues: %d; kernels: %d (LLVM bitcode %zu bytes, CUDA source %zu bytes, PTX %zu bytes)\n",
          j->nvalues, j->kernels.nkernels, j->kernels.llvm_bc_len, j->kernels.cuda_src_len, j->kernels.ptx_len);
  for (int i = 0; i < j->nchecks; i++) fprintf(out, "check %d (value %d): %s\n", i, j->checks[i].value, j->checks[i].what);
  for (int s = 0; s < j->nstages; s++) {
    const JobStage *st = &j->stages[s];
    fprintf(out, "stage %d on rank %d:", s, st->rank);
    for (int k = 0; k < JP__COUNT; k++) {
      int counts[JS__COUNT] = {0};
      for (int i = 0; i < st->prog[k].nsteps; i++) counts[st->prog[k].steps[i].kind]++;
      fprintf(out, " %s=%d steps (", (const char *[]){"fwd", "bwd_b", "bwd_w"}[k], st->prog[k].nsteps);
      for (int c = 0, first = 1; c < JS__COUNT; c++)
        if (counts[c]) fprintf(out, "%s%d %s", first ? "" : ", ", counts[c], step_names[c]), first = 0;
      fprintf(out, ")");
    }
    fputc('\n', out);
  }
  for (int r = 0; r < j->mesh.pp; r++) {
    const JobRank *rk = &j->ranks[r];
    fprintf(out, "rank %d: %d instructions, arena %" PRIu64 " bytes, predicted bubble %.4f\n ", r, rk->nins,
            rk->arena_bytes, rk->predicted_bubble);
    for (int i = 0; i < rk->nins; i++) { /* each after a space: no line ends in one */
      const JobIns *in = &rk->ins[i];
      const char *name = job_ins_name(in->kind);
      if (in->kind <= JI_BWD_W) fprintf(out, " %s(%d,%d)", name, in->stage, in->mb);
      else if (in->kind <= JI_RECV) fprintf(out, " %s(x%d,%d)", name, in->xfer, in->mb);
      else if (in->kind == JI_TIED_SEND) fprintf(out, " %s(p%d,u%d,r%d)", name, in->param, in->use, in->peer);
      else if (in->param >= 0) fprintf(out, " %s(p%d%s)", name, in->param, in->flags & JF_CHUNK ? ",chunk" : "");
      else fprintf(out, " %s", name);
    }
    fputc('\n', out);
  }
}
