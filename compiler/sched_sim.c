/*
 * sched_sim.c — a schedule played out: the proof that it cannot deadlock
 * (sched_verify), its timed simulation (sched_simulate: each rank's busy time and the
 * bubble, from the cost model's pass times), and --emit=schedule (sched_dump, a timed
 * run with unit passes); plus the names and messages of schedules, which schedule.c
 * uses too.
 *
 * The proof runs all ranks' lists together with no help from how they were made
 * (schedule.c's steps 1-3): eager buffered sends, blocking receives, all-reduces that
 * wait for every member; it checks every invariant of sched.h and, when the ranks get
 * stuck, names each rank and the instruction it waits in. A timed run is the same
 * execution with a clock per rank.
 *
 * Invariants: see sched.h. No global mutable state; scratch memory lives in a local
 * Arena freed before returning.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

/* ---- names ---------------------------------------------------------------- */

static const char *const ins_names[INS__COUNT] = {
#define X(name, text) text,
    INS_LIST(X)
#undef X
};

const char *ins_name(InsKind k) {
  if ((unsigned)k >= INS__COUNT)
    die("bad instruction kind %d", (int)k);
  return ins_names[k];
}

const char *sched_name(SchedKind k) {
  if ((unsigned)k >= SCHED__COUNT)
    die("bad schedule kind %d", (int)k);
  return mpl_sched_name(k);
}

bool sched_parse(const char *s, SchedKind *kind, int *v) {
  *v = 1;
  for (int k = 0; k < SCHED__COUNT; k++) {
    if (strcmp(s, mpl_sched_name(k)) == 0) {
      *kind = (SchedKind)k;
      *v = k == SCHED_ZBV ? 2 : 1;
      return true;
    }
  }
  int n = 0, len = 0;
  if (sscanf(s, "interleaved(%d)%n", &n, &len) == 1 && len == (int)strlen(s) && n >= 1) {
    *kind = SCHED_INTERLEAVED;
    *v = n;
    return true;
  }
  return false;
}

double sched_textbook_bubble(int p, int m) {
  return (double)(p - 1) / (double)(m + p - 1);
}

double sched_kind_bubble(SchedKind k, int p, int v, int m, const char **formula) {
  const char *f = "(p-1)/(m+p-1)";
  double b = sched_textbook_bubble(p, m);
  if (k == SCHED_SEQUENTIAL) f = "(p-1)/p", b = (double)(p - 1) / p;
  else if (k == SCHED_INTERLEAVED) f = "(p-1)/(v*m+p-1)", b = (double)(p - 1) / ((double)v * m + p - 1);
  else if (k == SCHED_ZB || k == SCHED_ZBV) f = "1f1b's (p-1)/(m+p-1)"; /* no closed form: the reference it improves on */
  if (formula) *formula = f;
  return b;
}


/* ---- small helpers, schedule.c's too ---------------------------------------- */

void sched_errf(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Appends to a message already in err. */
static void errcat(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errcat(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0)
    return;
  size_t used = strlen(err);
  if (used + 1 >= errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + used, errlen - used, fmt, ap);
  va_end(ap);
}

/* Index of edge (src, dst) in the sorted edge list, or -1. */
static int edge_index(const Schedule *s, int src, int dst) {
  int lo = 0, hi = s->nedges - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int c = s->edges[mid][0] != src ? s->edges[mid][0] - src : s->edges[mid][1] - dst;
    if (c == 0)
      return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return -1;
}

int sched_msg_index(const Schedule *s, const Ins *in) {
  bool act = in->kind == INS_SEND_ACT || in->kind == INS_RECV_ACT;
  if (!act && in->kind != INS_SEND_GRAD && in->kind != INS_RECV_GRAD)
    return -1;
  bool down = in->kind == INS_SEND_ACT || in->kind == INS_RECV_GRAD; /* stage is the src */
  int e = down ? edge_index(s, in->stage, in->peer_stage) : edge_index(s, in->peer_stage, in->stage);
  if (e < 0 || in->mb < 0 || in->mb >= s->m)
    return -1;
  return ((act ? 0 : 1) * s->nedges + e) * s->m + in->mb;
}

bool sched_tied_on_rank(const Schedule *s, int g, int rank) {
  for (int i = 0; i < s->tied[g].nstages; i++)
    if (sched_stage_rank(s, s->tied[g].stages[i]) == rank)
      return true;
  return false;
}

static int tied_nranks(const Schedule *s, int g) {
  int n = 0;
  for (int r = 0; r < s->pp; r++)
    n += sched_tied_on_rank(s, g, r);
  return n;
}

/* "recv_act(stage 1 <- 0, mb 2)" and the like. */
static char *ins_str(const Ins *in, char *buf, size_t n) {
  const char *name = (unsigned)in->kind < INS__COUNT ? ins_names[in->kind] : "?";
  switch (in->kind) {
  case INS_FWD: case INS_BWD_B: case INS_BWD_W:
    snprintf(buf, n, "%s(stage %d, mb %d)", name, in->stage, in->mb);
    break;
  case INS_SEND_ACT: case INS_SEND_GRAD:
    snprintf(buf, n, "%s(stage %d -> %d, mb %d)", name, in->stage, in->peer_stage, in->mb);
    break;
  case INS_RECV_ACT: case INS_RECV_GRAD:
    snprintf(buf, n, "%s(stage %d <- %d, mb %d)", name, in->stage, in->peer_stage, in->mb);
    break;
  case INS_ALLREDUCE_TIED:
    snprintf(buf, n, "%s(group %d)", name, in->stage);
    break;
  default:
    snprintf(buf, n, "%s", name);
    break;
  }
  return buf;
}


/* ---- the proof, which is also the timed simulation -------------------------------- */

typedef struct Exec {
  const Schedule *s;
  const double *F, *B, *W;
  double latency;
  int *pc;
  double *clock, *busy;
  double **start;      /* optional, per rank per instruction: start time */
  int *fdone, *bdone, *wdone; /* per (stage, mb): times run */
  int *next_w;         /* per stage: the micro-batch whose W must come next */
  int *nw_rank;        /* per rank: W's run */
  int *sent, *recvd;   /* per message (dir, edge, mb) */
  double *tsent;
  int *arrived;        /* per tied group */
  double *tmax;
  bool *reached, *passed; /* per (rank, group) */
  char *err;
  size_t errlen;
} Exec;

enum { STEP_OK, STEP_BLOCKED, STEP_ERROR };

static int msg_key(const Exec *x, int dir, int edge, int mb) {
  return (dir * x->s->nedges + edge) * x->s->m + mb;
}

static Exec *exec_new(Arena *a, const Schedule *s) {
  Exec *x = arena_alloc(a, sizeof *x);
  int pp = s->pp, n = s->nstages * s->m, nmsg = 2 * s->nedges * s->m + 1;
  int nt = s->ntied + 1;
  x->s = s;
  x->pc = arena_alloc(a, sizeof(int) * pp);
  x->clock = arena_alloc(a, sizeof(double) * pp);
  x->busy = arena_alloc(a, sizeof(double) * pp);
  x->fdone = arena_alloc(a, sizeof(int) * n);
  x->bdone = arena_alloc(a, sizeof(int) * n);
  x->wdone = arena_alloc(a, sizeof(int) * n);
  x->next_w = arena_alloc(a, sizeof(int) * s->nstages);
  x->nw_rank = arena_alloc(a, sizeof(int) * pp);
  x->sent = arena_alloc(a, sizeof(int) * nmsg);
  x->recvd = arena_alloc(a, sizeof(int) * nmsg);
  x->tsent = arena_alloc(a, sizeof(double) * nmsg);
  x->arrived = arena_alloc(a, sizeof(int) * nt);
  x->tmax = arena_alloc(a, sizeof(double) * nt);
  x->reached = arena_alloc(a, sizeof(bool) * pp * nt);
  x->passed = arena_alloc(a, sizeof(bool) * pp * nt);
  return x;
}

static int step_fail(Exec *x, int r, const Ins *in, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int step_fail(Exec *x, int r, const Ins *in, const char *fmt, ...) {
  char b[128], why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  sched_errf(x->err, x->errlen, "rank %d, instruction %d %s: %s", r, x->pc[r],
       ins_str(in, b, sizeof b), why);
  return STEP_ERROR;
}

/* Checks the operands of a pass or message: ranges, rank, edge. Returns the edge or -1. */
static int step_check_operands(Exec *x, int r, const Ins *in, int *edge) {
  const Schedule *s = x->s;
  *edge = -1;
  if (in->stage < 0 || in->stage >= s->nstages || in->mb < 0 || in->mb >= s->m)
    return step_fail(x, r, in, "stage or micro-batch out of range");
  if (sched_stage_rank(s, in->stage) != r)
    return step_fail(x, r, in, "stage %d runs on rank %d", in->stage, sched_stage_rank(s, in->stage));
  if (in->kind <= INS_BWD_W)
    return STEP_OK;
  int p = in->peer_stage;
  if (p < 0 || p >= s->nstages || sched_stage_rank(s, p) == r)
    return step_fail(x, r, in, "the peer stage must be on another rank");
  bool down = in->kind == INS_SEND_ACT || in->kind == INS_RECV_GRAD; /* stage is the src */
  *edge = down ? edge_index(s, in->stage, p) : edge_index(s, p, in->stage);
  if (*edge < 0)
    return step_fail(x, r, in, "no such stage edge");
  bool grad = in->kind == INS_SEND_GRAD || in->kind == INS_RECV_GRAD;
  if (!(s->flow[*edge] & (grad ? SCHED_GRAD : SCHED_ACT)))
    return step_fail(x, r, in, "the stage edge carries no %s", grad ? "gradient" : "activation");
  return STEP_OK;
}

/* The inputs of FWD(st, mb) or BWD_B(st, mb) are there on rank r. */
static int step_check_inputs(Exec *x, int r, const Ins *in) {
  const Schedule *s = x->s;
  int m = s->m;
  for (int e = 0; e < s->nedges; e++) {
    int src = s->edges[e][0], dst = s->edges[e][1];
    bool fwd = in->kind == INS_FWD;
    if (fwd ? dst != in->stage : src != in->stage)
      continue;
    if (!(s->flow[e] & (fwd ? SCHED_ACT : SCHED_GRAD)))
      continue; /* nothing of this kind crosses the edge */
    int other = fwd ? src : dst;
    bool ok = sched_stage_rank(s, other) == r
                  ? (fwd ? x->fdone : x->bdone)[other * m + in->mb] > 0
                  : x->recvd[msg_key(x, fwd ? 0 : 1, e, in->mb)] > 0;
    if (!ok)
      return step_fail(x, r, in, "runs before its %s from stage %d arrived",
                       fwd ? "activation" : "gradient", other);
  }
  if (in->kind == INS_BWD_B && x->fdone[in->stage * m + in->mb] == 0)
    return step_fail(x, r, in, "runs before its forward");
  return STEP_OK;
}

static int step_pass(Exec *x, int r, const Ins *in) {
  int edge, k = in->stage * x->s->m + in->mb;
  if (step_check_operands(x, r, in, &edge) != STEP_OK)
    return STEP_ERROR;
  int *done = in->kind == INS_FWD ? x->fdone : in->kind == INS_BWD_B ? x->bdone : x->wdone;
  if (done[k])
    return step_fail(x, r, in, "runs twice");
  if (in->kind != INS_BWD_W && step_check_inputs(x, r, in) != STEP_OK)
    return STEP_ERROR;
  if (in->kind == INS_BWD_W) {
    if (!x->bdone[k])
      return step_fail(x, r, in, "runs before its bwd_b");
    if (x->next_w[in->stage] != in->mb)
      return step_fail(x, r, in, "weight gradients of stage %d must be summed in micro-batch "
                       "order (mb %d is next)", in->stage, x->next_w[in->stage]);
    x->next_w[in->stage]++;
    x->nw_rank[r]++;
  }
  const double *c = in->kind == INS_FWD ? x->F : in->kind == INS_BWD_B ? x->B : x->W;
  double d = sched_pass_time(c, in->stage);
  done[k] = 1;
  x->clock[r] += d;
  x->busy[r] += d;
  return STEP_OK;
}

static int step_send(Exec *x, int r, const Ins *in) {
  int edge;
  if (step_check_operands(x, r, in, &edge) != STEP_OK)
    return STEP_ERROR;
  bool act = in->kind == INS_SEND_ACT;
  if (!(act ? x->fdone : x->bdone)[in->stage * x->s->m + in->mb])
    return step_fail(x, r, in, "sends before the %s that makes it", act ? "fwd" : "bwd_b");
  int k = msg_key(x, act ? 0 : 1, edge, in->mb);
  if (x->sent[k])
    return step_fail(x, r, in, "sent twice");
  x->sent[k] = 1;
  x->tsent[k] = x->clock[r];
  return STEP_OK;
}

static int step_recv(Exec *x, int r, const Ins *in) {
  int edge;
  if (step_check_operands(x, r, in, &edge) != STEP_OK)
    return STEP_ERROR;
  int k = msg_key(x, in->kind == INS_RECV_ACT ? 0 : 1, edge, in->mb);
  if (x->recvd[k])
    return step_fail(x, r, in, "received twice");
  if (!x->sent[k])
    return STEP_BLOCKED;
  x->recvd[k] = 1;
  x->clock[r] = fmax(x->clock[r], x->tsent[k] + x->latency);
  return STEP_OK;
}

/* All of rank r's W passes have run. */
static bool rank_backward_done(const Exec *x, int r) {
  int local = 0;
  for (int st = 0; st < x->s->nstages; st++)
    local += sched_stage_rank(x->s, st) == r;
  return x->nw_rank[r] == local * x->s->m;
}

static int step_allreduce(Exec *x, int r, const Ins *in) {
  const Schedule *s = x->s;
  int g = in->stage;
  if (g < 0 || g >= s->ntied || !sched_tied_on_rank(s, g, r))
    return step_fail(x, r, in, "rank %d holds no stage of this tied group", r);
  if (x->passed[r * (s->ntied + 1) + g])
    return step_fail(x, r, in, "all-reduces twice");
  if (!rank_backward_done(x, r))
    return step_fail(x, r, in, "comes before the end of the rank's backward work");
  bool *reached = &x->reached[r * (s->ntied + 1) + g];
  if (!*reached) {
    *reached = true;
    x->arrived[g]++;
    x->tmax[g] = fmax(x->tmax[g], x->clock[r]);
  }
  if (x->arrived[g] < tied_nranks(s, g))
    return STEP_BLOCKED;
  x->passed[r * (s->ntied + 1) + g] = true;
  x->clock[r] = x->tmax[g] + (tied_nranks(s, g) > 1 ? x->latency : 0);
  return STEP_OK;
}

static int step_optimizer(Exec *x, int r, const Ins *in) {
  if (x->pc[r] != x->s->nins[r] - 1)
    return step_fail(x, r, in, "must be the rank's last instruction");
  if (!rank_backward_done(x, r))
    return step_fail(x, r, in, "comes before the end of the rank's backward work");
  for (int g = 0; g < x->s->ntied; g++)
    if (sched_tied_on_rank(x->s, g, r) && !x->passed[r * (x->s->ntied + 1) + g])
      return step_fail(x, r, in, "comes before allreduce_tied(group %d)", g);
  return STEP_OK;
}

static int exec_step(Exec *x, int r) {
  const Ins *in = &x->s->ins[r][x->pc[r]];
  if (x->start)
    x->start[r][x->pc[r]] = x->clock[r];
  switch (in->kind) {
  case INS_FWD: case INS_BWD_B: case INS_BWD_W: return step_pass(x, r, in);
  case INS_SEND_ACT: case INS_SEND_GRAD: return step_send(x, r, in);
  case INS_RECV_ACT: case INS_RECV_GRAD: return step_recv(x, r, in);
  case INS_ALLREDUCE_TIED: return step_allreduce(x, r, in);
  case INS_OPTIMIZER_STEP: return step_optimizer(x, r, in);
  }
  return step_fail(x, r, in, "unknown instruction kind %d", in->kind);
}

/* True if some rank's list holds the send that matches recv `in`. */
static bool recv_has_sender(const Schedule *s, const Ins *in) {
  int want = in->kind == INS_RECV_ACT ? INS_SEND_ACT : INS_SEND_GRAD;
  int pr = sched_stage_rank(s, in->peer_stage);
  for (int i = 0; i < s->nins[pr]; i++) {
    const Ins *o = &s->ins[pr][i];
    if (o->kind == want && o->stage == in->peer_stage && o->peer_stage == in->stage &&
        o->mb == in->mb)
      return true;
  }
  return false;
}

static bool exec_report_deadlock(Exec *x) {
  const Schedule *s = x->s;
  char b[128];
  sched_errf(x->err, x->errlen, "deadlock:");
  for (int r = 0; r < s->pp; r++) {
    if (x->pc[r] == s->nins[r])
      continue;
    const Ins *in = &s->ins[r][x->pc[r]];
    errcat(x->err, x->errlen, " rank %d waits at instruction %d %s%s;", r, x->pc[r],
           ins_str(in, b, sizeof b),
           (in->kind == INS_RECV_ACT || in->kind == INS_RECV_GRAD) && !recv_has_sender(s, in)
               ? " (no rank sends it)" : "");
  }
  return false;
}

/* After every rank finished: every pass ran, every send was received, every rank stepped. */
static bool exec_check_complete(Exec *x) {
  const Schedule *s = x->s;
  static const char *const what[] = {"fwd", "bwd_b", "bwd_w"};
  for (int st = 0; st < s->nstages; st++) {
    for (int mb = 0; mb < s->m; mb++) {
      const int *done[] = {x->fdone, x->bdone, x->wdone};
      for (int i = 0; i < 3; i++)
        if (!done[i][st * s->m + mb])
          return sched_errf(x->err, x->errlen, "%s(stage %d, mb %d) never runs (rank %d)",
                      what[i], st, mb, sched_stage_rank(s, st)), false;
    }
  }
  for (int dir = 0; dir < 2; dir++)
    for (int e = 0; e < s->nedges; e++)
      for (int mb = 0; mb < s->m; mb++) {
        int k = msg_key(x, dir, e, mb);
        int a = s->edges[e][dir], b = s->edges[e][1 - dir];
        if (x->sent[k] && !x->recvd[k])
          return sched_errf(x->err, x->errlen, "rank %d: %s(stage %d -> %d, mb %d) is never received",
                      sched_stage_rank(s, a), dir ? "send_grad" : "send_act", a, b, mb), false;
      }
  for (int r = 0; r < s->pp; r++)
    if (s->nins[r] == 0 || s->ins[r][s->nins[r] - 1].kind != INS_OPTIMIZER_STEP)
      return sched_errf(x->err, x->errlen, "rank %d does not end with optimizer_step", r), false;
  return true;
}

/*
 * Runs every rank as far as it can, over and over, until all finish or none can
 * move. Sends never block, so the order in which ranks are tried changes neither
 * the outcome nor the times.
 */
static bool exec_run(Exec *x) {
  const Schedule *s = x->s;
  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < s->pp; r++) {
      while (x->pc[r] < s->nins[r]) {
        int st = exec_step(x, r);
        if (st == STEP_ERROR)
          return false;
        if (st == STEP_BLOCKED)
          break;
        x->pc[r]++;
        progress = true;
      }
    }
  }
  for (int r = 0; r < s->pp; r++)
    if (x->pc[r] < s->nins[r])
      return exec_report_deadlock(x);
  return exec_check_complete(x);
}

/*
 * The messages from rank a to rank b: b's recvs from a come in the order of a's sends
 * to b. Checked on the lists alone (it does not depend on timing): pos[msg] is the
 * message's place among a's sends to b.
 */
static bool check_fifo(const Schedule *s, Arena *a, char *err, size_t errlen) {
  int nmsg = 2 * s->nedges * s->m + 1;
  int *pos = arena_alloc(a, sizeof(int) * nmsg);
  int *next = arena_alloc(a, sizeof(int) * s->pp * s->pp); /* [a * pp + b] */
  char b1[128];
  for (int r = 0; r < s->pp; r++)
    for (int i = 0, k; i < s->nins[r]; i++)
      if ((s->ins[r][i].kind == INS_SEND_ACT || s->ins[r][i].kind == INS_SEND_GRAD) &&
          (k = sched_msg_index(s, &s->ins[r][i])) >= 0)
        pos[k] = next[r * s->pp + sched_peer_rank(s, &s->ins[r][i])]++;
  memset(next, 0, sizeof(int) * s->pp * s->pp);
  for (int r = 0; r < s->pp; r++)
    for (int i = 0, k; i < s->nins[r]; i++) {
      const Ins *in = &s->ins[r][i];
      if ((in->kind != INS_RECV_ACT && in->kind != INS_RECV_GRAD) || (k = sched_msg_index(s, in)) < 0)
        continue;
      int *want = &next[sched_peer_rank(s, in) * s->pp + r];
      if (pos[k] != *want)
        return sched_errf(err, errlen, "rank %d, instruction %d %s: rank %d sends it as its message %d to rank %d, "
                          "but this is the rank's receive %d from it (messages between two ranks arrive in the "
                          "order they are sent)", r, i, ins_str(in, b1, sizeof b1), sched_peer_rank(s, in), pos[k],
                          r, *want), false;
      ++*want;
    }
  return true;
}

bool sched_verify(const Schedule *s, char *err, size_t errlen) {
  Arena scratch;
  arena_init(&scratch);
  Exec *x = exec_new(&scratch, s);
  char dummy[8];
  x->err = err ? err : dummy;
  x->errlen = err ? errlen : sizeof dummy;
  bool ok = exec_run(x) && check_fifo(s, &scratch, x->err, x->errlen);
  arena_free(&scratch);
  return ok;
}

/* Runs a proven schedule with times; start (optional) gets each instruction's start. */
static void exec_timed(const Schedule *s, const double *F, const double *B, const double *W,
                       double latency, const double *pre, const double *post, SchedTiming *out, double **start) {
  if (s->pp > SCHED_MAX_PP)
    die("pp %d over SCHED_MAX_PP", s->pp);
  Arena scratch;
  arena_init(&scratch);
  Exec *x = exec_new(&scratch, s);
  char err[1024];
  x->F = F, x->B = B, x->W = W, x->latency = latency;
  x->err = err, x->errlen = sizeof err;
  x->start = start;
  for (int r = 0; r < s->pp && pre; r++) x->clock[r] = pre[r];
  if (!exec_run(x))
    die("simulating an unproven schedule: %s", err);
  memset(out, 0, sizeof *out);
  out->pp = s->pp;
  double sum = 0;
  for (int r = 0; r < s->pp; r++) {
    if (post) x->clock[r] += post[r], x->busy[r] += post[r];
    out->busy[r] = x->busy[r];
    out->makespan = fmax(out->makespan, x->clock[r]);
    sum += x->busy[r];
  }
  out->bubble = out->makespan > 0 ? 1 - sum / (s->pp * out->makespan) : 0;
  arena_free(&scratch);
}

void sched_simulate(const Schedule *s, const double *F, const double *B, const double *W,
                    double latency, const double *pre, const double *post, SchedTiming *out) {
  exec_timed(s, F, B, W, latency, pre, post, out, NULL);
}

int sched_peak_inflight(const Schedule *s, int rank) {
  int n = 0, peak = 0;
  for (int i = 0; i < s->nins[rank]; i++) {
    if (s->ins[rank][i].kind == INS_FWD && ++n > peak)
      peak = n;
    if (s->ins[rank][i].kind == INS_BWD_W)
      n--;
  }
  return peak;
}


/* ---- --emit=schedule ------------------------------------------------------------ */

static void dump_header(FILE *out, const Schedule *s, const SchedTiming *t) {
  fprintf(out, "schedule %s pp=%d v=%d microbatches=%d stages=%d\n", sched_name(s->kind), s->pp,
          s->v, s->m, s->nstages);
  fprintf(out, "edges:");
  for (int e = 0; e < s->nedges; e++)
    fprintf(out, " %d->%d%s", s->edges[e][0], s->edges[e][1],
            s->flow[e] == SCHED_ACT ? "(no grad)" : s->flow[e] == SCHED_GRAD ? "(grad only)" : "");
  fprintf(out, "%s\ntied:", s->nedges ? "" : " none");
  for (int g = 0; g < s->ntied; g++) {
    fprintf(out, " {");
    for (int i = 0; i < s->tied[g].nstages; i++)
      fprintf(out, "%s%d", i ? "," : "", s->tied[g].stages[i]);
    fprintf(out, "}");
  }
  fprintf(out, "%s\n", s->ntied ? "" : " none");
  const char *f;
  double tb = sched_kind_bubble(s->kind, s->pp, s->v, s->m, &f);
  fprintf(out, "unit passes: makespan %.0f slots, bubble %.4f (textbook %s %.4f)\n", t->makespan, t->bubble, f, tb);
}

/* The pass of rank r that starts in slot t, as "F s0 m3", or ".". */
static void dump_cell(const Schedule *s, double *const *start, int r, int t, char *buf, size_t n) {
  snprintf(buf, n, ".");
  for (int i = 0; i < s->nins[r]; i++) {
    const Ins *in = &s->ins[r][i];
    if (in->kind > INS_BWD_W || (int)lround(start[r][i]) != t)
      continue;
    snprintf(buf, n, "%c s%d m%d", "FBW"[in->kind], in->stage, in->mb);
    return;
  }
}

void sched_dump(FILE *out, const Schedule *s) {
  Arena scratch;
  arena_init(&scratch);
  double **start = arena_alloc(&scratch, sizeof(double *) * s->pp);
  for (int r = 0; r < s->pp; r++)
    start[r] = arena_alloc(&scratch, sizeof(double) * (s->nins[r] + 1));
  SchedTiming *t = arena_alloc(&scratch, sizeof *t);
  exec_timed(s, NULL, NULL, NULL, 0, NULL, NULL, t, start);
  dump_header(out, s, t);
  char cell[64];
  for (int slot = -1; slot < (int)lround(t->makespan); slot++) {
    char row[16 * SCHED_MAX_PP + 16];
    int len = snprintf(row, sizeof row, slot < 0 ? "slot " : "%4d ", slot);
    for (int r = 0; r < s->pp; r++) {
      if (slot < 0)
        snprintf(cell, sizeof cell, "rank %d", r);
      else
        dump_cell(s, start, r, slot, cell, sizeof cell);
      len += snprintf(row + len, sizeof row - len, " %-11s", cell);
    }
    while (len > 0 && row[len - 1] == ' ')
      row[--len] = 0;
    fprintf(out, "%s\n", row);
  }
  for (int r = 0; r < s->pp; r++) {
    fprintf(out, "rank %d: %d instructions\n", r, s->nins[r]);
    for (int i = 0; i < s->nins[r]; i++)
      fprintf(out, "  %4d  %s\n", i, ins_str(&s->ins[r][i], cell, sizeof cell));
  }
  arena_free(&scratch);
}
