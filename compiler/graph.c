/*
 * graph.c — the graph IR: construction, the op table, --emit=graph, and the verifier.
 *
 * Invariants kept (graph_verify): ops[i]->id == i; inputs precede their users;
 * input counts match op_info; shapes are concrete; elementwise inputs broadcast
 * to the op's shape.
 */
#include "mplc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const OpInfo op_info[OP__COUNT] = {
#define X(name, nin, kind) [OP_##name] = {#name, nin, OPC_##kind},
    OP_LIST(X)
#undef X
};

static const char *const dtype_names[DT__COUNT] = {"f32", "bf16", "f16", "i32", "bool"};
static const int dtype_sizes[DT__COUNT] = {4, 2, 2, 4, 1};

const char *dtype_name(DType t) { return (unsigned)t < DT__COUNT ? dtype_names[t] : "?"; }

bool graph_reads_input(const Graph *g, int v) {
  bool *seen = calloc((size_t)g->nops + 1, 1);
  int *stack = malloc(sizeof(int) * ((size_t)g->nops + 1)), n = 0;
  if (!seen || !stack) die("out of memory");
  bool found = false;
  stack[n++] = v, seen[v] = true;
  while (n > 0 && !found) {
    const Op *op = g->ops[stack[--n]];
    found = op->kind == OP_INPUT;
    for (int j = 0; j < op->nin; j++)
      if (!seen[op->in[j]]) seen[op->in[j]] = true, stack[n++] = op->in[j];
  }
  free(seen);
  free(stack);
  return found;
}

/* Which ops the loss reads, directly or not: a calloc'd array of g->nops + 1 flags (all
 * false when the graph has no loss), freed by the caller. Inputs come before their readers,
 * so one walk down from the loss marks them all. */
bool *graph_live_from_loss(const Graph *g) {
  bool *live = calloc((size_t)g->nops + 1, 1);
  if (!live) die("out of memory");
  if (g->loss >= 0) live[g->loss] = true;
  for (int i = g->loss; i >= 0; i--)
    for (int j = 0; live[i] && j < g->ops[i]->nin; j++) live[g->ops[i]->in[j]] = true;
  return live;
}

/* The nearest bf16 value (8 significant bits, f32's exponent range, subnormals down to
 * 2^-133), ties to even; past the largest bf16 (0x7F7F) it is infinite; NaN stays NaN. */
double dtype_round_bf16(double x) {
  if (isnan(x) || isinf(x) || x == 0) return x;
  int e;
  frexp(x, &e); /* |x| in [2^(e-1), 2^e) */
  int q = e - 8 > -133 ? e - 8 : -133; /* the spacing of bf16 values near x */
  double r = ldexp(nearbyint(ldexp(x, -q)), q); /* the default rounding: ties to even */
  return fabs(r) >= 0x1p128 ? copysign(INFINITY, x) : r;
}

/* The nearest f16 value (11 significant bits, subnormals down to 2^-24), ties to even; past
 * 65504 it is infinite; NaN stays NaN. */
double dtype_round_f16(double x) {
  if (isnan(x) || isinf(x) || x == 0) return x;
  int e;
  frexp(x, &e); /* |x| in [2^(e-1), 2^e) */
  int q = e - 11 > -24 ? e - 11 : -24; /* the spacing of f16 values near x */
  double r = ldexp(nearbyint(ldexp(x, -q)), q);
  return fabs(r) > 65504.0 ? copysign(INFINITY, x) : r;
}
int dtype_size(DType t) { return (unsigned)t < DT__COUNT ? dtype_sizes[t] : 0; }

/* Lower-case op names, computed once per call into a static table of literals. */
const char *op_name(OpKind k) {
  static const char *const names[OP__COUNT] = {
#define X(name, nin, kind) [OP_##name] = #name,
      OP_LIST(X)
#undef X
  };
  static char lower[OP__COUNT][24]; /* immutable after first fill; same bytes every time */
  if ((unsigned)k >= OP__COUNT) return "?";
  if (!lower[k][0]) {
    size_t i = 0;
    for (; names[k][i] && i < sizeof lower[k] - 1; i++)
      lower[k][i] = (char)(names[k][i] >= 'A' && names[k][i] <= 'Z' ? names[k][i] + 32 : names[k][i]);
    lower[k][i] = 0;
  }
  return lower[k];
}

int64_t shape_numel(const Shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->d[i];
  return n;
}

uint64_t op_bytes(const Op *op) { return (uint64_t)shape_numel(&op->shape) * (uint64_t)dtype_size(op->dtype); }

bool shape_eq(const Shape *a, const Shape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->d[i] != b->d[i]) return false;
  return true;
}

char *shape_str(const Shape *s, char *buf, size_t n) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "[");
  for (int i = 0; i < s->rank && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)s->d[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

bool shape_broadcast(const Shape *a, const Shape *b, Shape *out) {
  Shape r = {.rank = a->rank > b->rank ? a->rank : b->rank};
  for (int i = 0; i < r.rank; i++) {
    int ia = a->rank - r.rank + i, ib = b->rank - r.rank + i;
    int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    r.d[i] = da == 1 ? db : da;
  }
  *out = r;
  return true;
}

Graph *graph_new(Arena *a) {
  Graph *g = arena_alloc(a, sizeof *g);
  g->arena = a;
  g->loss = -1;
  g->mesh = (Mesh){1, 1, 1};
  g->nstages = 1;
  return g;
}

Op *graph_add(Graph *g, OpKind k, int nin, const int *in, Loc loc) {
  if (g->nops == g->cap) {
    int cap = g->cap ? g->cap * 2 : 64;
    Op **ops = arena_alloc(g->arena, sizeof(Op *) * (size_t)cap);
    if (g->nops) memcpy(ops, g->ops, sizeof(Op *) * (size_t)g->nops);
    g->ops = ops;
    g->cap = cap;
  }
  Op *op = arena_alloc(g->arena, sizeof *op);
  op->id = g->nops;
  op->kind = k;
  op->nin = nin;
  op->in = nin ? arena_alloc(g->arena, sizeof(int) * (size_t)nin) : NULL;
  if (nin) memcpy(op->in, in, sizeof(int) * (size_t)nin);
  op->stage = -1;
  op->layout = (Layout){.split_dim = -1, .groups = 1};
  op->loc = loc;
  op->fwd_of = -1;
  op->seg = -1;
  g->ops[g->nops++] = op;
  return op;
}

Op *graph_copy(Graph *g, const Op *src, const int *in) {
  Op *op = graph_add(g, src->kind, src->nin, in, src->loc);
  int id = op->id;
  int *keep_in = op->in;
  *op = *src;
  op->id = id;
  op->in = keep_in;
  return op;
}

Loc op_user_loc(const Op *op) { return op->site ? op->site->loc : op->loc; }

void note_inside(Diag *d, Loc loc, const char *inside) { diag_note(d, loc, "the error is in this line of %s", inside); }

static int cmp_name(const void *a, const void *b) {
  return strcmp((*(Op *const *)a)->name, (*(Op *const *)b)->name);
}

int graph_params(const Graph *g, Op ***out, Arena *a) {
  int n = 0;
  for (int i = 0; i < g->nops; i++) n += g->ops[i]->kind == OP_PARAM;
  Op **ps = arena_alloc(a, sizeof(Op *) * (size_t)(n ? n : 1));
  n = 0;
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->kind == OP_PARAM) ps[n++] = g->ops[i];
  qsort(ps, (size_t)n, sizeof *ps, cmp_name);
  *out = ps;
  return n;
}

static const char *const phase_names[] = {"fwd", "bwd_b", "bwd_w", "recomp", "recomp_w"};
static const char *const init_names[] = {"zeros", "ones", "normal", "uniform"};

/* The attributes of one op, as "key=value" words, for the dump. */
static void dump_attrs(FILE *out, const Op *op) {
  switch (op->kind) {
  case OP_INPUT: fprintf(out, " \"%s\"", op->name); break;
  case OP_PARAM:
    fprintf(out, " \"%s\" init=%s", op->name, init_names[op->init]);
    if (op->init == INIT_NORMAL) fprintf(out, "(%g)", op->init_a);
    if (op->init == INIT_UNIFORM) fprintf(out, "(%g, %g)", op->init_a, op->init_b);
    break;
  case OP_FULL: /* an int's value exactly (%g shows 2147483647 as 2.14748e+09) */
    if (op->dtype == DT_I32) fprintf(out, " value=%lld", (long long)op->value);
    else fprintf(out, " value=%g", op->value);
    break;
  case OP_POW: fprintf(out, " value=%g", op->value); break;
  case OP_DROPOUT: fprintf(out, " p=%g key=%d", op->value, op->key); break;
  case OP_SUM: case OP_MEAN: case OP_AMAX: case OP_ARGMAX:
    if (op->axis == AXIS_ALL) fprintf(out, " axis=all");
    else fprintf(out, " axis=%d", op->axis);
    if (op->keepdims) fprintf(out, " keepdims");
    break;
  case OP_SOFTMAX: case OP_LOG_SOFTMAX: case OP_CONCAT:
  case OP_CUMSUM: case OP_CUMSUM_REV: case OP_TOPK: case OP_GATHER: case OP_GATHER_GRAD:
    fprintf(out, " axis=%d", op->axis);
    break;
  case OP_IM2COL: case OP_COL2IM:
    fprintf(out, " kernel=%dx%d stride=%lld padding=%lld", op->axis, op->axis2, (long long)op->begin, (long long)op->end);
    break;
  case OP_CHECK:
    fprintf(out, " of=%s", op_name((OpKind)op->key));
    if (op->key != OP_REM && op->key != OP_DIV) fprintf(out, " bound=%g", op->value);
    break;
  case OP_ALLGATHER: case OP_TP_SLICE: case OP_REDUCE_SCATTER: fprintf(out, " axis=%d groups=%d", op->axis, op->key); break;
  case OP_TRANSPOSE: fprintf(out, " axes=%d,%d", op->axis, op->axis2); break;
  case OP_SLICE: fprintf(out, " axis=%d range=%lld:%lld", op->axis, (long long)op->begin, (long long)op->end); break;
  case OP_PAD: fprintf(out, " axis=%d at=%lld", op->axis, (long long)op->begin); break;
  case OP_MATMUL: case OP_CE_FUSED:
    if (op->ta) fprintf(out, " ta");
    if (op->tb) fprintf(out, " tb");
    break;
  case OP_SDPA: case OP_SDPA_GRAD:
    fprintf(out, " scale=%g", op->value);
    if (op->causal) fprintf(out, " causal");
    break;
  case OP_RESULT: fprintf(out, " #%d", op->axis); break;
  case OP_PARAM_GRAD: fprintf(out, " param=%%%d use=%d", op->key, op->use); break;
  case OP_CE_ROWS: fprintf(out, " of=%%%d", op->key); break;
  case OP_SEND: case OP_RECV: fprintf(out, " peer=%d tag=%d", op->peer, op->tag); break;
  default: break;
  }
}

static void dump_layout(FILE *out, const Layout *l) {
  if (l->partial) fprintf(out, " partial");
  else if (l->split_dim >= 0 && l->groups > 1) fprintf(out, " split(%d,g=%d)", l->split_dim, l->groups);
  else if (l->split_dim >= 0) fprintf(out, " split(%d)", l->split_dim);
  else fprintf(out, " repl");
}

void graph_dump(FILE *out, const Graph *g) {
  char buf[160];
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    fprintf(out, "%%%d = %s(", op->id, op_name(op->kind));
    for (int j = 0; j < op->nin; j++) fprintf(out, "%s%%%d", j ? ", " : "", op->in[j]);
    fprintf(out, ")");
    dump_attrs(out, op);
    fprintf(out, " : %s%s", dtype_name(op->dtype), shape_str(&op->shape, buf, sizeof buf));
    if (op->stage >= 0) fprintf(out, " @%d", op->stage);
    else fprintf(out, " @-");
    dump_layout(out, &op->layout);
    if (op->phase != PH_FWD) fprintf(out, " %s", phase_names[op->phase]);
    if (op->recompute) fprintf(out, " recompute");
    if (op->stash) fprintf(out, " stash");
    if (op->loc.line) fprintf(out, "  # %s:%d:%d", op->loc.file, op->loc.line, op->loc.col);
    fputc('\n', out);
  }
  if (g->loss >= 0) fprintf(out, "loss = %%%d\n", g->loss);
}

int graph_result(const Graph *g, int op, int index) {
  for (int i = op + 1; i < g->nops; i++)
    if (g->ops[i]->kind == OP_RESULT && g->ops[i]->in[0] == op && g->ops[i]->axis == index) return i;
  return -1;
}

/* A RESULT reads a multi-result op and is placed with it (stage, pass); that op has one of each. */
static void verify_result(const Graph *g, const Op *op) {
  const Op *of = g->ops[op->in[0]];
  int n = of->kind == OP_SDPA ? 1 : of->kind == OP_SDPA_GRAD || of->kind == OP_CE_FUSED ? 2 : 0;
  if (op->axis < 1 || op->axis > n) die("graph: %%%d result #%d of %%%d %s", op->id, op->axis, of->id, op_name(of->kind));
  if (op->stage != of->stage || op->phase != of->phase || op->recompute != of->recompute)
    die("graph: %%%d result of %%%d is placed apart from it", op->id, of->id);
}

void graph_verify(const Graph *g) {
  for (int i = 0; i < g->nops; i++) {
    const Op *op = g->ops[i];
    if (!op || op->id != i) die("graph: op %d has id %d", i, op ? op->id : -1);
    if ((unsigned)op->kind >= OP__COUNT) die("graph: op %d has bad kind %d", i, op->kind);
    int want = op_info[op->kind].nin;
    if (want >= 0 && op->nin != want) die("graph: %%%d %s has %d inputs, wants %d", i, op_name(op->kind), op->nin, want);
    if (op->shape.rank < 0 || op->shape.rank > MPL_MAX_RANK) die("graph: %%%d has rank %d", i, op->shape.rank);
    for (int j = 0; j < op->shape.rank; j++)
      if (op->shape.d[j] <= 0) die("graph: %%%d has dimension %lld", i, (long long)op->shape.d[j]);
    for (int j = 0; j < op->nin; j++) {
      if (op->in[j] < 0 || op->in[j] >= i) die("graph: %%%d input %d is %%%d (not earlier)", i, j, op->in[j]);
      if (op->kind == OP_RESULT && j == 0) verify_result(g, op);
      if (op_info[op->kind].cls == OPC_E) {
        Shape b;
        const Shape *s = &g->ops[op->in[j]]->shape;
        if (!shape_broadcast(s, &op->shape, &b) || !shape_eq(&b, &op->shape))
          die("graph: %%%d input %%%d does not broadcast to the op's shape", i, op->in[j]);
      }
    }
  }
  if (g->loss >= g->nops) die("graph: loss %%%d out of range", g->loss);
}
