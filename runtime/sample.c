/*
 * sample.c — generating text from a token model (mplrun --sample): for each token, the
 * window of the last seq tokens (the prompt's bytes, then the sampled ones) goes to
 * micro-batch 0's idx row, every rank runs a sampling pass (exec.c's rank_sample: micro-
 * batch 0's forward part of its stream, through the mesh's own messages and collectives),
 * and the next token is drawn from the last position's logits on replica 0's tp rank 0 of
 * the logits' stage. Under mpirun that rank's process draws it and sends it to every other
 * process; world rank 0 prints.
 *
 * Choosing the token: --temperature 0 is greedy (the first id of the largest logit);
 * otherwise softmax(logits / temperature) over the --top-k largest (0: all; ties to the
 * lower id), drawn with a uniform from the seed's stream (--seed, else the train seed).
 *
 * A job with the fused cross-entropy (JS_CE) holds no logits: the last position's are made
 * on the host from the step's x and w (fused_logits).
 *
 * Invariants: an evaluation pass (kernels get MPL_MB_EVAL: dropout is off); the same
 * params, options and seed give the same text on any mesh up to rounding (tp sums in
 * another order); only the text goes to `out`; a signal stops a threads run after the token
 * in progress (mplrun.c's handlers; under mpirun, mpirun ends the job, and the picker's flag,
 * sent with each token, would keep the processes in step if a handler set it).
 */
#include "rank.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpl_rng.h"

static int sample_input_index(const MplRun *r, int role) {
  for (int i = 0; i < r->job->ninputs; i++)
    if (r->role[i] == role) return i;
  return -1;
}

/* Greedy: the first index of the largest logit. */
static int32_t argmax(const float *logits, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; i++)
    if (logits[i] > logits[best]) best = i;
  return (int32_t)best;
}

typedef struct Ranked { float v; int32_t i; } Ranked;

/* Larger logits first, ties to the lower id; a nan ranks below -inf. */
static int by_logit(const void *pa, const void *pb) {
  const Ranked *a = pa, *b = pb;
  float x = isnan(a->v) ? -INFINITY : a->v, y = isnan(b->v) ? -INFINITY : b->v;
  if (x != y) return x > y ? -1 : 1;
  if (isnan(a->v) != isnan(b->v)) return isnan(a->v) ? 1 : -1;
  return a->i < b->i ? -1 : a->i > b->i;
}

/* A token drawn with uniform u from softmax(logits / temperature) over the top k: ranked
 * once a token (sorted by logit, ties to the lower id; a scan per candidate made a --top-k
 * near the vocabulary cost V^2 a token, 15 s at 50257). */
static int32_t sample_pick(const float *logits, int64_t V, const MplSampleOpts *o, double u, double *w, Ranked *rk) {
  if (o->temperature == 0) return argmax(logits, V);
  double mx = -INFINITY, z = 0;
  for (int64_t i = 0; i < V; i++) w[i] = (double)logits[i] / o->temperature;
  if (o->top_k > 0 && o->top_k < V) {
    for (int64_t i = 0; i < V; i++) rk[i] = (Ranked){logits[i], (int32_t)i};
    qsort(rk, (size_t)V, sizeof *rk, by_logit);
    for (int64_t j = o->top_k; j < V; j++) w[rk[j].i] = -INFINITY;
  }
  for (int64_t i = 0; i < V; i++)
    if (w[i] > mx) mx = w[i];
  /* a temperature so small that logit / T overflows (1e-310): the limit, greedy (inf - inf
     would make every weight nan and pick the last token) */
  if (!isfinite(mx)) return argmax(logits, V);
  for (int64_t i = 0; i < V; i++) z += w[i] = exp(w[i] - mx);
  double c = 0;
  int32_t last = 0;
  for (int64_t i = 0; i < V; i++) {
    if (w[i] == 0) continue;
    c += w[i] / z, last = (int32_t)i;
    if (u < c) return (int32_t)i;
  }
  return last;
}

static void put_token(FILE *out, int32_t t) {
  if (t >= 0 && t < 256) fputc(t, out);
  else fprintf(out, "<%d>", t);
}

/* A job compiled with the fused cross-entropy (JS_CE, mplc's default) holds no logits: the
 * row's are x[row] w^T (or x[row] w) from the step's operands, read before the step runs
 * (rank_sample stops before it), on the host, each a sum over k in order in double, of x and w as the
 * step reads them (stored as bf16 under ce->in16), and rounded to bf16 as the step rounds
 * them in a bf16 job: the logits fed to the cross-entropy. */
static int fused_logits(RankCtx *rc, const JobStep *ce, int stage, int64_t row, float **wt, float *logits,
                        MplErr *err) {
  int64_t K = ce->K, V = ce->N;
  size_t eb = ce->in16 ? 2 : 4; /* bytes an element */
  const char *x = need_ptr(rc, ce->args[0], 0, stage, err), *w = x ? need_ptr(rc, ce->args[1], 0, stage, err) : NULL;
  if (!x || !w) return MPL_ERR;
  float *xr = mpl_malloc((size_t)K * 4);
  uint16_t *h16 = ce->in16 ? mpl_malloc((size_t)(V * K) * 2) : NULL;
  bool first = !*wt; /* the params do not change while sampling */
  if (!xr || (ce->in16 && !h16) || (first && !(*wt = mpl_malloc((size_t)(V * K) * 4)))) {
    mpl_free(xr), mpl_free(h16);
    return mpl_errf(err, "out of memory");
  }
  int st = rc->dev.ops->copy_to_host(&rc->dev, ce->in16 ? (void *)h16 : (void *)xr, x + (size_t)(row * K) * eb,
                                     (size_t)K * eb, err);
  if (st == MPL_OK && ce->in16) mpl_bf16_widen(h16, xr, K);
  if (st == MPL_OK && first) {
    st = rc->dev.ops->copy_to_host(&rc->dev, ce->in16 ? (void *)h16 : (void *)*wt, w, (size_t)(V * K) * eb, err);
    if (st == MPL_OK && ce->in16) mpl_bf16_widen(h16, *wt, V * K);
  }
  for (int64_t v = 0; v < V && st == MPL_OK; v++) {
    double acc = 0;
    for (int64_t k = 0; k < K; k++) acc += (double)xr[k] * (*wt)[ce->tb ? v * K + k : k * V + v];
    logits[v] = ce->prec == PREC_BF16 ? mpl_bf16_round((float)acc) : (float)acc;
  }
  mpl_free(xr), mpl_free(h16);
  return st;
}

/* The token of pass k on the picking rank: the last position's logits (made from the fused
 * step's x and w where the job holds none), drawn as `o` says. */
static int pick_token(MplRun *r, RankCtx *rc, const JobStep *ce, int ls, int lv, int64_t wlen, int64_t k,
                      const MplSampleOpts *o, uint64_t stream, float **wt, float *logits, double *w, Ranked *rk,
                      int32_t *t, MplErr *err) {
  int64_t V = ce ? ce->N : r->job->values[lv].dims[r->job->values[lv].rank - 1];
  if (ce) {
    if (fused_logits(rc, ce, ls, wlen - 1, wt, logits, err) != MPL_OK) return MPL_ERR;
  } else {
    const float *row = (const float *)need_ptr(rc, lv, 0, ls, err);
    if (!row || rc->dev.ops->copy_to_host(&rc->dev, logits, row + (wlen - 1) * V, (size_t)V * 4, err) != MPL_OK)
      return MPL_ERR;
  }
  *t = sample_pick(logits, V, o, mpl_uniform(stream, (uint64_t)k), w, rk);
  return MPL_OK;
}

/* Where a job's sampling reads: the idx input, the logits' stage and value, or the fused
 * cross-entropy step that stands for them; V the logits' classes, hi idx's bound (the
 * embedding's rows; 0: none). */
typedef struct SampleModel {
  int idx_in, ls, lv, ce_step;
  const JobStep *ce;
  int64_t V, hi;
} SampleModel;

static int sample_model(const MplRun *r, SampleModel *m, MplErr *err) {
  const Job *job = r->job;
  *m = (SampleModel){.idx_in = sample_input_index(r, 0), .ls = -1, .lv = -1, .ce_step = -1};
  for (int s = 0; s < job->nstages; s++) if (job->stages[s].logits_value >= 0) m->ls = s;
  for (int s = 0; s < job->nstages && m->ls < 0; s++)
    for (int i = 0; i < job->stages[s].prog[JP_FWD].nsteps && !m->ce; i++)
      if (job->stages[s].prog[JP_FWD].steps[i].kind == JS_CE)
        m->ce = &job->stages[s].prog[JP_FWD].steps[i], m->ls = s, m->ce_step = i;
  if (m->idx_in < 0 || m->ls < 0)
    return mpl_errf(err, "--sample needs a token model (inputs idx, targets and a cross_entropy loss)");
  /* the logits of the returned cross_entropy: a loss of several (an auxiliary head) names
     none (the fused job read the first, the unfused the last: pass 64) */
  if (job->loss_ces > 1)
    return mpl_errf(err, "--sample: the loss is made of %d cross_entropy terms, and sampling reads the logits of the "
                    "one returned: compile a program whose model returns one cross_entropy (the same params, "
                    "given with --init)", job->loss_ces);
  m->lv = m->ce ? -1 : job->stages[m->ls].logits_value;
  const JobValue *lvv = m->ce ? NULL : &job->values[m->lv];
  int64_t T = job->train.seq;
  m->V = m->ce ? m->ce->N : lvv->dims[lvv->rank - 1];
  m->hi = job->inputs[m->idx_in].hi;
  if (m->ce ? m->ce->M < r->B * T : lvv->rank < 2 || lvv->numel < r->B * T * m->V)
    return mpl_errf(err, "--sample: the logits are not [B, T, vocab]");
  return MPL_OK;
}

static int check_sample(const MplRun *r, const char *prompt, const MplSampleOpts *o, SampleModel *mp, MplErr *err) {
  if (sample_model(r, mp, err) != MPL_OK) return MPL_ERR;
  const SampleModel m = *mp;
  if (!*prompt) return mpl_errf(err, "--prompt is empty: sampling starts from the prompt's bytes, give at least one");
  if (!(o->temperature >= 0) || !isfinite(o->temperature))
    return mpl_errf(err, "--temperature must be 0 (greedy) or positive, not %g", o->temperature);
  if (o->top_k < 0) return mpl_errf(err, "--top-k must be 0 (all tokens) or positive, not %lld", (long long)o->top_k);
  for (const unsigned char *p = (const unsigned char *)prompt; *p; p++) {
    if (*p >= m.V)
      return mpl_errf(err, "--prompt: byte %d is outside the vocabulary of %lld (the logits' classes)", *p, (long long)m.V);
    if (m.hi > 0 && *p >= m.hi)
      return mpl_errf(err, "--prompt: byte %d is outside the vocabulary of %lld (input '%s' takes [0, %lld): the rows "
                      "of the table it indexes)", *p, (long long)m.hi, r->job->inputs[m.idx_in].name, (long long)m.hi);
  }
  return MPL_OK;
}

int mpl_sample_check(const MplRun *r, const char *prompt, const MplSampleOpts *o, MplErr *err) {
  SampleModel m;
  return check_sample(r, prompt, o, &m, err);
}

int mpl_run_sample(MplRun *r, const char *prompt, int64_t n, const MplSampleOpts *o, FILE *out, MplErr *err) {
  const Job *job = r->job;
  SampleModel sm;
  if (check_sample(r, prompt, o, &sm, err) != MPL_OK) return MPL_ERR;
  const JobStep *ce = sm.ce; /* the fused cross-entropy (JS_CE): the logits are never held */
  int idx_in = sm.idx_in, ls = sm.ls, lv = sm.lv, ce_step = sm.ce_step;
  int64_t T = job->train.seq, V = sm.V, plen = (int64_t)strlen(prompt), ntok = plen;
  /* the logits are read on replica 0's tp rank 0 of their stage (the cross-entropy's input is
     whole on every tp rank); under mpirun its process picks and sends each token to the others */
  int L = world_of(r, 0, 0, job->stages[ls].rank);
  bool picker = !r->mpi || r->me == L;
  int32_t *toks = mpl_calloc((size_t)(ntok + n + 1), 4);
  float *logits = mpl_malloc((size_t)V * 4);
  double *w = mpl_malloc((size_t)V * 8);
  Ranked *rk = o->top_k > 0 ? mpl_malloc((size_t)V * sizeof *rk) : NULL;
  float *wt = NULL; /* a fused job's weight, copied to the host once */
  int st = toks && logits && w && (rk || o->top_k <= 0) ? MPL_OK : mpl_errf(err, "out of memory");
  for (int64_t i = 0; i < plen && st == MPL_OK; i++) toks[i] = (unsigned char)prompt[i];
  bool wrote = st == MPL_OK && r->lead; /* the prompt, then the tokens, then a newline; nothing if it was refused */
  if (wrote) fputs(prompt, out);
  uint64_t stream = mpl_name_stream(o->has_seed ? o->seed : job->train.seed, "mplrun.sample");
  r->eval = r->sampling = true; /* dropout off; the ranks run rank_sample */
  r->sample_idx = idx_in, r->sample_stage = ce ? ls : -1, r->sample_until = ce_step;
  for (int64_t k = 0; k < n && st == MPL_OK; k++) {
    int64_t w0 = ntok > T ? ntok - T : 0;
    r->sample_win = toks + w0, r->sample_wlen = ntok - w0;
    if (run_one_step(r, err) != MPL_OK) {
      st = MPL_ERR;
      break;
    }
    /* the token, and a signal (SIGINT, SIGTERM, SIGHUP, SIGPIPE: mplrun.c) that stops after
       it: the picker's, so that every process stops at the same token */
    int32_t msg[2] = {0, picker && r->opts.stop ? *r->opts.stop : 0};
    if (picker && pick_token(r, &r->ranks[L], ce, ls, lv, r->sample_wlen, k, o, stream, &wt, logits, w, rk, &msg[0], err) != MPL_OK) {
      st = MPL_ERR;
      break;
    }
    for (int q = 0; r->mpi && q < r->nworld && st == MPL_OK; q++) {
      if (q == L || (r->me != L && r->me != q)) continue;
      uint64_t tag = TAG_MAIN(MAIN_SAMPLE, k);
      if ((r->me == L ? r->mpi->ops->send(r->mpi, q, tag, msg, sizeof msg) : r->mpi->ops->recv(r->mpi, L, tag, msg, sizeof msg)) != MPL_OK)
        st = mpl_errf(err, "--sample: token %lld: %s", (long long)k + 1, r->mpi->err.msg);
    }
    if (st != MPL_OK) break;
    if (sm.hi > 0 && msg[0] >= sm.hi) { /* (every process has the token: they stop together) */
      st = mpl_errf(err, "--sample: token %lld drawn is %d, which input '%s' cannot take (it takes [0, %lld), the rows "
                    "of the table it indexes; the logits have %lld classes)", (long long)k + 1, msg[0],
                    job->inputs[idx_in].name, (long long)sm.hi, (long long)V);
      break;
    }
    toks[ntok++] = msg[0];
    if (r->lead) put_token(out, msg[0]), flush_out(r, out);
    if (msg[1] && k + 1 < n) { /* a stop every process agreed on, not a failure (pass 84: MPI_Abort, exit 1) */
      r->stopped = msg[1];
      st = mpl_errf(err, "stopped by signal %d after %lld of %lld tokens", msg[1], (long long)k + 1, (long long)n);
    }
  }
  r->eval = r->sampling = false;
  if (wrote) fputc('\n', out);
  mpl_free(toks);
  mpl_free(logits);
  mpl_free(w);
  mpl_free(rk);
  mpl_free(wt);
  return st;
}
