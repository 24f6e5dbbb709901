/*
 * kir.c — the kernel IR: the builder fuse.c emits through, the verifier, the
 * KernelSet (with deduplication of identical kernels), and --emit=kernels.
 *
 * Invariants kept: see kernel.h. The builder keeps a stack of open blocks; a pure
 * instruction goes to the block at the depth of its deepest operand (so anything
 * that does not depend on a loop's index is built outside that loop), inserted
 * before the open loop of that block. Identical pure instructions visible at the
 * insertion point are shared (hash-consing). The dump renumbers instructions in
 * execution order, so it is stable and identical kernels print identically.
 */
#include "kernel.h"

#include <stdlib.h>
#include <string.h>

static const char *const ktype_names[KT__COUNT] = {"void", "bool", "i32", "i64", "f32"};
static const char *const ki_names[KI__COUNT] = {
#define X(name, nops) #name,
    KI_LIST(X)
#undef X
};
static const int ki_nops[KI__COUNT] = {
#define X(name, nops) nops,
    KI_LIST(X)
#undef X
};

const char *kt_name(KType t) { return (unsigned)t < KT__COUNT ? ktype_names[t] : "?"; }
const char *ki_name(KiOp op) { return (unsigned)op < KI__COUNT ? ki_names[op] : "?"; }
int ki_nops_of(KiOp op) { return (unsigned)op < KI__COUNT ? ki_nops[op] : 0; }

KType kt_of_dtype(DType t) {
  switch (t) {
  case DT_F32: case DT_BF16: return KT_F32; /* bf16: 2 bytes in memory, f32 in registers */
  case DT_I32: return KT_I32;
  case DT_BOOL: return KT_BOOL;
  default: die("kernels: dtype %s is not supported in generated kernels", dtype_name(t));
  }
}

/* ---- the builder ------------------------------------------------------------ */

enum { KB_MAXDEPTH = 16 };

typedef struct KLevel {
  int owner; /* -1: the kernel body, else the LOOP instruction id */
  int pos;   /* insertion index in that block */
} KLevel;

struct KBuilder {
  Arena *arena;
  Kernel *k;
  int *blk;          /* per instruction: owner of its block */
  KLevel st[KB_MAXDEPTH];
  int sp;            /* depth of the top block */
  KLevel saved[KB_MAXDEPTH][KB_MAXDEPTH]; /* per open loop (LIFO): the levels it hid */
  int saved_sp[KB_MAXDEPTH];
  int nframes;
  int *hash;         /* open addressing: instruction ids, -1 empty */
  int hcap;
  int nargs_cap;
};

KBuilder *kb_new(Arena *a, const char *name, int64_t n_outer) {
  KBuilder *b = calloc(1, sizeof *b);
  if (!b) die("out of memory");
  b->arena = a;
  b->k = arena_alloc(a, sizeof *b->k);
  b->k->name = arena_strdup(a, name);
  b->k->n_outer = n_outer;
  b->st[0] = (KLevel){-1, 0};
  b->hcap = 1024;
  b->hash = malloc(sizeof(int) * (size_t)b->hcap);
  if (!b->hash) die("out of memory");
  memset(b->hash, 0xff, sizeof(int) * (size_t)b->hcap);
  return b;
}

Kernel *kb_kernel(KBuilder *b) { return b->k; }

/* Marks what stores depend on, walking blocks backwards; returns whether bl has live code. */
static bool mark_live(const Kernel *k, const KBlock *bl, char *live) {
  bool any = false;
  for (int i = bl->n - 1; i >= 0; i--) {
    int id = bl->ins[i];
    const KInstr *in = &k->ins[id];
    if (in->op == KI_STORE) live[id] = 1;
    if (in->op == KI_LOOP) {
      if (live[id] && in->red != KR_NONE) live[in->b] = 1;
      if (mark_live(k, &in->body, live)) live[id] = 1;
    }
    if (!live[id]) continue;
    any = true;
    int ops[3] = {in->a, in->b, in->c};
    for (int j = 0; j < 3; j++)
      if (ops[j] >= 0 && (in->op != KI_LOOP || j == 0)) live[ops[j]] = 1;
  }
  return any;
}

static void sweep(Kernel *k, KBlock *bl, const char *live) {
  int n = 0;
  for (int i = 0; i < bl->n; i++) {
    int id = bl->ins[i];
    if (!live[id]) continue;
    if (k->ins[id].op == KI_LOOP) sweep(k, &k->ins[id].body, live);
    bl->ins[n++] = id;
  }
  bl->n = n;
}

/* Drops instructions no store depends on (index arithmetic the simplifier made dead). */
static void kir_dce(Kernel *k) {
  char *live = calloc((size_t)k->ninstr + 1, 1);
  if (!live) die("out of memory");
  mark_live(k, &k->body, live);
  sweep(k, &k->body, live);
  free(live);
}

Kernel *kb_finish(KBuilder *b) {
  Kernel *k = b->k;
  if (b->sp != 0) die("kernels: %s finished with %d open loops", k->name, b->sp);
  free(b->hash);
  free(b->blk);
  free(b);
  kir_dce(k);
  kir_verify(k);
  return k;
}

int kb_add_arg(KBuilder *b, DType dt, KArgMode mode, int64_t numel) {
  Kernel *k = b->k;
  if (k->nargs == b->nargs_cap) {
    int cap = b->nargs_cap ? b->nargs_cap * 2 : 8;
    KArg *args = arena_alloc(b->arena, sizeof(KArg) * (size_t)cap);
    if (k->nargs) memcpy(args, k->args, sizeof(KArg) * (size_t)k->nargs);
    k->args = args;
    b->nargs_cap = cap;
  }
  k->args[k->nargs] = (KArg){dt, mode, numel};
  return k->nargs++;
}

static KBlock *block_of(Kernel *k, int owner) { return owner < 0 ? &k->body : &k->ins[owner].body; }

static void block_insert(Arena *a, KBlock *bl, int pos, int id) {
  if (bl->n == bl->cap) {
    int cap = bl->cap ? bl->cap * 2 : 16;
    int *v = arena_alloc(a, sizeof(int) * (size_t)cap);
    if (bl->n) memcpy(v, bl->ins, sizeof(int) * (size_t)bl->n);
    bl->ins = v;
    bl->cap = cap;
  }
  memmove(bl->ins + pos + 1, bl->ins + pos, sizeof(int) * (size_t)(bl->n - pos));
  bl->ins[pos] = id;
  bl->n++;
}

/* Appends a new instruction (not yet placed). */
static int new_instr(KBuilder *b, KInstr in) {
  Kernel *k = b->k;
  if (k->ninstr == k->cap) {
    int cap = k->cap ? k->cap * 2 : 64;
    KInstr *v = arena_alloc(b->arena, sizeof(KInstr) * (size_t)cap);
    if (k->ninstr) memcpy(v, k->ins, sizeof(KInstr) * (size_t)k->ninstr);
    k->ins = v;
    int *blk = realloc(b->blk, sizeof(int) * (size_t)cap);
    if (!blk) die("out of memory");
    b->blk = blk;
    k->cap = cap;
  }
  k->ins[k->ninstr] = in;
  return k->ninstr++;
}

/* Places instruction id in the open block at depth d, before that block's open loop. */
static void place(KBuilder *b, int id, int d) {
  if (d > b->sp) die("kernels: placement depth %d above top %d", d, b->sp);
  b->k->ins[id].depth = d;
  b->blk[id] = b->st[d].owner;
  block_insert(b->arena, block_of(b->k, b->st[d].owner), b->st[d].pos, id);
  b->st[d].pos++;
}

static int dep(KBuilder *b, int id) { return id < 0 ? 0 : b->k->ins[id].depth; }
int kb_depth(KBuilder *b, int id) { return dep(b, id); }

static uint64_t instr_hash(const KInstr *in) {
  uint32_t fb;
  memcpy(&fb, &in->fimm, 4);
  uint64_t h = (uint64_t)in->op * 0x9E3779B97F4A7C15ull;
  uint64_t parts[7] = {(uint64_t)in->type, (uint64_t)(int64_t)in->a, (uint64_t)(int64_t)in->b,
                       (uint64_t)(int64_t)in->c, (uint64_t)(int64_t)in->arg, (uint64_t)in->imm, fb};
  for (int i = 0; i < 7; i++) h = (h ^ parts[i]) * 0x100000001B3ull + (h >> 29);
  return h;
}

static bool instr_same(const KInstr *x, const KInstr *y) {
  return x->op == y->op && x->type == y->type && x->a == y->a && x->b == y->b && x->c == y->c &&
         x->arg == y->arg && x->imm == y->imm && memcmp(&x->fimm, &y->fimm, 4) == 0;
}

static bool visible(KBuilder *b, int id) {
  int d = b->k->ins[id].depth;
  return d <= b->sp && b->st[d].owner == b->blk[id];
}

bool kb_visible(KBuilder *b, int id) { return id >= 0 && id < b->k->ninstr && visible(b, id); }

static void hash_grow(KBuilder *b) {
  int ncap = b->hcap * 2;
  int *nh = malloc(sizeof(int) * (size_t)ncap);
  if (!nh) die("out of memory");
  memset(nh, 0xff, sizeof(int) * (size_t)ncap);
  for (int i = 0; i < b->hcap; i++) {
    int id = b->hash[i];
    if (id < 0) continue;
    uint64_t h = instr_hash(&b->k->ins[id]) & (uint64_t)(ncap - 1);
    while (nh[h] >= 0) h = (h + 1) & (uint64_t)(ncap - 1);
    nh[h] = id;
  }
  free(b->hash);
  b->hash = nh;
  b->hcap = ncap;
}

/* A pure instruction: reuse a visible identical one, else create and place it. */
static int pure(KBuilder *b, KInstr in) {
  int d = 0;
  if (in.a >= 0) d = dep(b, in.a);
  if (in.b >= 0 && dep(b, in.b) > d) d = dep(b, in.b);
  if (in.c >= 0 && dep(b, in.c) > d) d = dep(b, in.c);
  if (in.op == KI_LOOPVAR) d = b->k->ins[in.imm].depth + 1;
  uint64_t mask = (uint64_t)(b->hcap - 1), h = instr_hash(&in) & mask;
  for (; b->hash[h] >= 0; h = (h + 1) & mask) {
    int id = b->hash[h];
    if (instr_same(&b->k->ins[id], &in)) {
      if (visible(b, id)) return id;
      break; /* same key, no longer visible: replace the entry */
    }
  }
  int id = new_instr(b, in);
  place(b, id, d);
  b->hash[h] = id;
  if (b->k->ninstr * 2 > b->hcap) hash_grow(b);
  return id;
}

static KInstr mk(KiOp op, KType t, int a, int x, int y) {
  return (KInstr){.op = op, .type = t, .a = a, .b = x, .c = y, .arg = -1};
}

int kb_outer(KBuilder *b) {
  KInstr in = mk(KI_OUTER, KT_I64, -1, -1, -1);
  in.ub = b->k->n_outer; /* set by fuse before use when known; 0 = unknown */
  return pure(b, in);
}

int kb_scalar(KBuilder *b, int which) {
  KInstr in = mk(KI_SCALAR, KT_I64, -1, -1, -1);
  in.imm = which;
  return pure(b, in);
}

int kb_int(KBuilder *b, KType t, int64_t v) {
  KInstr in = mk(KI_CONST, t, -1, -1, -1);
  in.imm = v;
  if (t == KT_I64 && v >= 0 && v < INT64_MAX) in.ub = v + 1;
  return pure(b, in);
}

int kb_f32(KBuilder *b, float v) {
  KInstr in = mk(KI_CONST, KT_F32, -1, -1, -1);
  in.fimm = v;
  return pure(b, in);
}

static bool is_const(KBuilder *b, int id, int64_t *v) {
  const KInstr *in = &b->k->ins[id];
  if (in->op != KI_CONST || in->type == KT_F32) return false;
  *v = in->imm;
  return true;
}

static int64_t ub_of(KBuilder *b, int id) { return b->k->ins[id].ub; }

/* Whether an i64 value is known to be >= 0 (a known range, or a max/min of such). */
static bool nonneg(KBuilder *b, int id) {
  const KInstr *in = &b->k->ins[id];
  if (in->type != KT_I64) return false;
  if (in->ub) return true;
  if (in->op == KI_MAX) return nonneg(b, in->a) || nonneg(b, in->b);
  if (in->op == KI_MIN) return nonneg(b, in->a) && nonneg(b, in->b);
  return false;
}

/* Ranges of i64 index arithmetic: [0, ub), 0 unknown. Saturates to unknown. */
static int64_t range_of(KBuilder *b, KiOp op, int x, int y) {
  int64_t ux = ub_of(b, x), uy = ub_of(b, y), c;
  if (op == KI_MIN && nonneg(b, x) && nonneg(b, y)) /* a clamp: min(max(i, 0), n - 1) */
    return ux && uy ? (ux < uy ? ux : uy) : ux ? ux : uy;
  if (!ux) return 0;
  switch (op) {
  case KI_MAX: return uy ? (ux > uy ? ux : uy) : 0;
  case KI_ADD: return uy && ux < (INT64_MAX >> 2) && uy < (INT64_MAX >> 2) ? ux + uy - 1 : 0;
  case KI_MUL: return uy && (ux - 1) <= (INT64_MAX >> 2) / (uy > 1 ? uy : 1) ? (ux - 1) * (uy - 1) + 1 : 0;
  case KI_DIV: return is_const(b, y, &c) && c > 0 ? (ux + c - 1) / c : 0;
  case KI_REM: return is_const(b, y, &c) && c > 0 ? (ux < c ? ux : c) : 0;
  default: return 0;
  }
}

/* x == m * k + r with k % c == 0 and r >= 0 known (r = -1: no r): returns true. */
static bool split_mul_add(KBuilder *b, int x, int64_t c, int *m, int *r, int64_t *mulc) {
  const KInstr *in = &b->k->ins[x];
  int64_t k;
  if (in->op == KI_MUL && is_const(b, in->b, &k) && k > 0 && ub_of(b, in->a)) {
    *m = in->a, *r = -1, *mulc = k;
    return k % c == 0;
  }
  if (in->op == KI_ADD) {
    const KInstr *l = &b->k->ins[in->a];
    if (l->op == KI_MUL && is_const(b, l->b, &k) && k > 0 && k % c == 0 && ub_of(b, l->a) && ub_of(b, in->b)) {
      *m = l->a, *r = in->b, *mulc = k;
      return true;
    }
    /* (m2*k2 + r2)*k + r == m2*(k2*k) + (r2*k + r): a linearised index split at a
     * coarser dim (a reshape merging heads back into rows) */
    const KInstr *l2 = l->op == KI_MUL ? &b->k->ins[l->a] : NULL;
    int64_t k2;
    if (l2 && l2->op == KI_ADD && is_const(b, l->b, &k) && k > 0 && k < (1 << 30) && ub_of(b, in->b)) {
      const KInstr *mm = &b->k->ins[l2->a];
      if (mm->op == KI_MUL && is_const(b, mm->b, &k2) && k2 > 0 && k2 < (1 << 30) && (k * k2) % c == 0 &&
          ub_of(b, mm->a) && ub_of(b, l2->b)) {
        int m2 = mm->a, r2 = l2->b, r0 = in->b, kc = kb_int(b, KT_I64, k);
        *m = m2, *mulc = k * k2;
        *r = kb_bin(b, KI_ADD, KT_I64, kb_bin(b, KI_MUL, KT_I64, r2, kc), r0);
        return true;
      }
    }
  }
  return false;
}

/* Index simplifications on non-negative i64 values; -1 when none applies. */
static int simplify(KBuilder *b, KiOp op, KType t, int x, int y) {
  int64_t cx = 0, cy = 0;
  bool kx = is_const(b, x, &cx), ky = is_const(b, y, &cy);
  if (t != KT_I64) return -1;
  if (kx && ky) {
    switch (op) {
    case KI_ADD: return kb_int(b, t, (int64_t)((uint64_t)cx + (uint64_t)cy));
    case KI_MUL: return kb_int(b, t, (int64_t)((uint64_t)cx * (uint64_t)cy));
    case KI_DIV: if (cy > 0 && cx >= 0) return kb_int(b, t, cx / cy); break;
    case KI_REM: if (cy > 0 && cx >= 0) return kb_int(b, t, cx % cy); break;
    default: break;
    }
  }
  if ((op == KI_ADD || op == KI_SUB) && ky && cy == 0) return x;
  if (op == KI_ADD) {
    /* (z / c) * c + z % c == z: re-linearising a delinearised index */
    const KInstr *m = &b->k->ins[x], *r = &b->k->ins[y];
    if (m->op == KI_MUL && r->op == KI_REM && b->k->ins[m->a].op == KI_DIV && b->k->ins[m->a].a == r->a &&
        b->k->ins[m->a].b == m->b && r->b == m->b && ub_of(b, r->a))
      return r->a;
  }
  if (op == KI_ADD && kx && cx == 0) return y;
  if (op == KI_MUL && ky && cy == 1) return x;
  if (op == KI_MUL && ky && cy == 0 && ub_of(b, x)) return y;
  if (op == KI_DIV && ky && cy == 1) return x;
  if (op == KI_REM && ky && cy == 1 && ub_of(b, x)) return kb_int(b, t, 0);
  if ((op == KI_DIV || op == KI_REM) && ky && cy > 1 && ub_of(b, x)) {
    if (ub_of(b, x) <= cy) return op == KI_DIV ? kb_int(b, t, 0) : x;
    int m, r;
    int64_t k;
    if (split_mul_add(b, x, cy, &m, &r, &k)) {
      /* (m*k + r) / c == m*(k/c) + r/c and (m*k + r) % c == r % c, as m*k % c == 0 */
      if (op == KI_REM) return r >= 0 ? kb_bin(b, KI_REM, t, r, y) : kb_int(b, t, 0);
      int q = k == cy ? m : kb_bin(b, KI_MUL, t, m, kb_int(b, t, k / cy));
      return r >= 0 ? kb_bin(b, KI_ADD, t, q, kb_bin(b, KI_DIV, t, r, y)) : q;
    }
  }
  return -1;
}

int kb_un(KBuilder *b, KiOp op, KType t, int x) {
  if (op == KI_CAST && b->k->ins[x].type == t) return x;
  return pure(b, mk(op, t, x, -1, -1));
}

/* Clamps and bounds checks that a known range decides; -1 when none applies. */
static int simplify_bounds(KBuilder *b, KiOp op, int x, int y) {
  int64_t c;
  if (op == KI_AND && b->k->ins[x].type == KT_BOOL) {
    if (is_const(b, x, &c) && c) return y;
    if (is_const(b, y, &c) && c) return x;
  }
  if (b->k->ins[x].type != KT_I64 || !is_const(b, y, &c)) return -1;
  if (op == KI_MAX && c == 0 && nonneg(b, x)) return x;                        /* max(i, 0) */
  if (op == KI_MIN && ub_of(b, x) && c >= 0 && ub_of(b, x) <= c + 1) return x; /* min(i, n - 1) */
  if (op == KI_GE && c == 0 && nonneg(b, x)) return kb_int(b, KT_BOOL, 1);     /* i >= 0 */
  if (op == KI_LT && ub_of(b, x) && ub_of(b, x) <= c) return kb_int(b, KT_BOOL, 1); /* i < n */
  return -1;
}

int kb_bin(KBuilder *b, KiOp op, KType t, int x, int y) {
  int s = simplify_bounds(b, op, x, y);
  if (s >= 0) return s;
  s = simplify(b, op, t, x, y);
  if (s >= 0) return s;
  KInstr in = mk(op, t, x, y, -1);
  if (t == KT_I64) in.ub = range_of(b, op, x, y);
  return pure(b, in);
}

int kb_select(KBuilder *b, int c, int x, int y) {
  int64_t k;
  if (x == y) return x;
  if (is_const(b, c, &k)) return k ? x : y;
  KInstr in = mk(KI_SELECT, b->k->ins[x].type, c, x, y);
  if (in.type == KT_I64 && ub_of(b, x) && ub_of(b, y))
    in.ub = ub_of(b, x) > ub_of(b, y) ? ub_of(b, x) : ub_of(b, y);
  return pure(b, in);
}

int kb_load(KBuilder *b, int arg, int idx) {
  const KArg *ka = &b->k->args[arg];
  KInstr in = mk(KI_LOAD, kt_of_dtype(ka->dtype), idx, -1, -1);
  in.arg = arg;
  if (ka->mode == KA_IN) return pure(b, in);
  int id = new_instr(b, in); /* reads a buffer this kernel writes: stays in order */
  place(b, id, b->sp);
  return id;
}

void kb_store(KBuilder *b, int arg, int idx, int val) {
  KInstr in = mk(KI_STORE, KT_VOID, idx, val, -1);
  in.arg = arg;
  int id = new_instr(b, in);
  place(b, id, b->sp);
}

int kb_loop_begin(KBuilder *b, int64_t n, KRed red, KType t, int init, int depth) {
  if (depth > b->sp || depth + 1 >= KB_MAXDEPTH) die("kernels: loop depth %d (top %d)", depth, b->sp);
  if (init >= 0 && dep(b, init) > depth) die("kernels: loop init deeper than the loop");
  KInstr in = mk(KI_LOOP, red == KR_NONE ? KT_VOID : t, init, -1, -1);
  in.imm = n;
  in.red = red;
  int id = new_instr(b, in);
  place(b, id, depth);
  b->st[depth].pos--; /* further insertions at this level go before the loop */
  int nd = depth + 1, f = b->nframes++;
  if (f >= KB_MAXDEPTH) die("kernels: too many open loops");
  b->saved_sp[f] = b->sp;
  for (int i = nd; i <= b->sp; i++) b->saved[f][i] = b->st[i];
  b->st[nd] = (KLevel){id, 0};
  b->sp = nd;
  return id;
}

int kb_loopvar(KBuilder *b, int loop) {
  KInstr in = mk(KI_LOOPVAR, KT_I64, -1, -1, -1);
  in.imm = loop;
  in.ub = b->k->ins[loop].imm;
  return pure(b, in);
}

void kb_loop_end(KBuilder *b, int loop, int yield) {
  int nd = b->sp;
  if (b->st[nd].owner != loop) die("kernels: closing loop %d, open is %d", loop, b->st[nd].owner);
  b->k->ins[loop].b = yield;
  int f = --b->nframes, ssp = b->saved_sp[f];
  for (int i = nd; i <= ssp; i++) b->st[i] = b->saved[f][i];
  b->sp = ssp;
  b->st[nd - 1].pos++; /* step over the closed loop */
}

/* ---- verifier ----------------------------------------------------------------- */

typedef struct VerifyCtx {
  const Kernel *k;
  char *seen; /* defined and visible */
} VerifyCtx;

static void verify_block(VerifyCtx *v, const KBlock *bl) {
  const Kernel *k = v->k;
  for (int i = 0; i < bl->n; i++) {
    int id = bl->ins[i];
    if (id < 0 || id >= k->ninstr || v->seen[id]) die("kir: %s: bad or repeated instruction %d", k->name, id);
    const KInstr *in = &k->ins[id];
    int ops[3] = {in->a, in->b, in->c};
    int nops = ki_nops[in->op];
    if (in->op == KI_LOOP) nops = in->red == KR_NONE ? 0 : 1;
    for (int j = 0; j < nops; j++)
      if (ops[j] < 0 || ops[j] >= k->ninstr || !v->seen[ops[j]])
        die("kir: %s: %%%d %s uses %%%d before it is visible", k->name, id, ki_name(in->op), ops[j]);
    if ((in->op == KI_LOAD || in->op == KI_STORE) && (in->arg < 0 || in->arg >= k->nargs))
      die("kir: %s: %%%d bad argument %d", k->name, id, in->arg);
    if (in->op == KI_LOOP) {
      verify_block(v, &in->body);
      if (in->red != KR_NONE && (in->b < 0 || !v->seen[in->b])) die("kir: %s: loop %%%d yields nothing visible", k->name, id);
      for (int j = 0; j < in->body.n; j++) v->seen[in->body.ins[j]] = 0; /* body is out of scope */
    }
    v->seen[id] = 1;
  }
}

/* Does block bl (with its nested loops) store anything? */
static bool block_stores(const Kernel *k, const KBlock *bl) {
  for (int i = 0; i < bl->n; i++) {
    const KInstr *in = &k->ins[bl->ins[i]];
    if (in->op == KI_STORE || (in->op == KI_LOOP && block_stores(k, &in->body))) return true;
  }
  return false;
}

/* A reduction directly in block 0, 64 or more long, that stores nothing itself (its
 * iterations then depend on nothing but their k, so the lanes may take them in any
 * interleaving). */
bool kir_lane_loop(const Kernel *k, int id) {
  const KInstr *in = &k->ins[id];
  if (in->op != KI_LOOP || in->red == KR_NONE || in->imm < KIR_LANES_MIN || block_stores(k, &in->body)) return false;
  for (int i = 0; i < k->body.n; i++)
    if (k->body.ins[i] == id) return true;
  return false;
}

bool kir_has_lane_loop(const Kernel *k) {
  for (int i = 0; i < k->body.n; i++)
    if (kir_lane_loop(k, k->body.ins[i])) return true;
  return false;
}

void kir_verify(const Kernel *k) {
  VerifyCtx v = {k, calloc((size_t)k->ninstr + 1, 1)};
  if (!v.seen) die("out of memory");
  verify_block(&v, &k->body);
  free(v.seen);
}

/* ---- dump ------------------------------------------------------------------------ */

typedef struct DumpCtx {
  FILE *out;
  const Kernel *k;
  int *num; /* instruction id -> printed number */
  int next;
} DumpCtx;

static const char *const mode_names[] = {"in", "out", "inout"};
static const char *const red_names[] = {"", ".sum", ".max"};

static void dump_block(DumpCtx *c, const KBlock *bl, int indent);

static void dump_instr(DumpCtx *c, int id, int indent) {
  const KInstr *in = &c->k->ins[id];
  FILE *o = c->out;
  c->num[id] = c->next++;
  fprintf(o, "%*s", indent, "");
  if (in->op != KI_STORE && !(in->op == KI_LOOP && in->red == KR_NONE))
    fprintf(o, "%%%d = ", c->num[id]);
  switch (in->op) {
  case KI_CONST:
    if (in->type == KT_F32) fprintf(o, "const.f32 %.9g", (double)in->fimm);
    else fprintf(o, "const.%s %lld", kt_name(in->type), (long long)in->imm);
    break;
  case KI_SCALAR: fprintf(o, "scalar %lld", (long long)in->imm); break;
  case KI_OUTER: fprintf(o, "outer"); break;
  case KI_LOOPVAR: fprintf(o, "loopvar %%%d", c->num[in->imm]); break;
  case KI_LOAD: fprintf(o, "load.%s a%d[%%%d]", kt_name(in->type), in->arg, c->num[in->a]); break;
  case KI_STORE: fprintf(o, "store a%d[%%%d] = %%%d", in->arg, c->num[in->a], c->num[in->b]); break;
  case KI_LOOP:
    fprintf(o, "loop%s", red_names[in->red]);
    if (in->red != KR_NONE) fprintf(o, ".%s init %%%d", kt_name(in->type), c->num[in->a]);
    fprintf(o, " n=%lld {\n", (long long)in->imm);
    dump_block(c, &in->body, indent + 2);
    fprintf(o, "%*s}", indent, "");
    if (in->red != KR_NONE) fprintf(o, " yield %%%d", c->num[in->b]);
    break;
  default: {
    fprintf(o, "%s.%s", ki_name(in->op), kt_name(in->type));
    int ops[3] = {in->a, in->b, in->c};
    for (int j = 0; j < ki_nops[in->op]; j++) fprintf(o, "%s%%%d", j ? ", " : " ", c->num[ops[j]]);
  }
  }
  fputc('\n', o);
}

static void dump_block(DumpCtx *c, const KBlock *bl, int indent) {
  for (int i = 0; i < bl->n; i++) dump_instr(c, bl->ins[i], indent);
}

static void dump_kernel_body(FILE *out, const Kernel *k) {
  DumpCtx c = {out, k, calloc((size_t)k->ninstr + 1, sizeof(int)), 0};
  if (!c.num) die("out of memory");
  fprintf(out, "(");
  for (int i = 0; i < k->nargs; i++)
    fprintf(out, "%sa%d: %s %s[%lld]", i ? ", " : "", i, dtype_name(k->args[i].dtype), mode_names[k->args[i].mode],
            (long long)k->args[i].numel);
  fprintf(out, ") outer=%lld", (long long)k->n_outer);
  if (k->inner) fprintf(out, " inner=%lld", (long long)k->inner);
  fprintf(out, " {\n");
  dump_block(&c, &k->body, 2);
  fprintf(out, "}\n");
  free(c.num);
}

void kir_dump_kernel(FILE *out, const Kernel *k) {
  fprintf(out, "kernel %s", k->name);
  dump_kernel_body(out, k);
}

/* ---- the kernel set -------------------------------------------------------------- */

KernelSet *kset_new(Arena *a) {
  KernelSet *ks = arena_alloc(a, sizeof *ks);
  ks->arena = a;
  return ks;
}

struct KernelKey {
  uint64_t hash; /* FNV-1a of text */
  size_t len;
  char *text;    /* in the set's arena */
};

/* k's args and body as text (its name left out), in ks's arena: two kernels with the
 * same key are the same kernel. Rendered once per kernel, when it is added. */
static KernelKey kernel_key(Arena *a, const Kernel *k) {
  char *buf = NULL;
  KernelKey key = {.hash = 1469598103934665603ull};
  FILE *f = open_memstream(&buf, &key.len);
  if (!f) die("open_memstream failed");
  dump_kernel_body(f, k);
  fclose(f);
  key.text = arena_alloc(a, key.len + 1);
  memcpy(key.text, buf, key.len);
  free(buf);
  for (size_t i = 0; i < key.len; i++) key.hash = (key.hash ^ (unsigned char)key.text[i]) * 1099511628211ull;
  return key;
}

static bool same_key(const KernelKey *x, const KernelKey *y) {
  return x->hash == y->hash && x->len == y->len && memcmp(x->text, y->text, x->len) == 0;
}

int kset_add(KernelSet *ks, Kernel *k) {
  KernelKey key = {0};
  if (!ks->no_dedup) {
    key = kernel_key(ks->arena, k);
    for (int i = 0; i < ks->n; i++) {
      if (!ks->key[i].text) ks->key[i] = kernel_key(ks->arena, ks->k[i]); /* added with no_dedup */
      if (same_key(&key, &ks->key[i])) return i;
    }
  }
  if (ks->n == ks->cap) {
    int cap = ks->cap ? ks->cap * 2 : 16;
    Kernel **v = arena_alloc(ks->arena, sizeof(Kernel *) * (size_t)cap);
    KernelKey *kv = arena_alloc(ks->arena, sizeof(KernelKey) * (size_t)cap);
    if (ks->n) memcpy(v, ks->k, sizeof(Kernel *) * (size_t)ks->n);
    if (ks->n) memcpy(kv, ks->key, sizeof(KernelKey) * (size_t)ks->n);
    ks->k = v;
    ks->key = kv;
    ks->cap = cap;
  }
  ks->key[ks->n] = key;
  ks->k[ks->n] = k;
  return ks->n++;
}

static const char *const step_names[] = {"kernel", "gemm",     "alias", "accum",   "comm",
                                         "sdpa",   "sdpa_bwd", "ce",    "emb_grad"}; /* ORDER: StepKind */

void kir_dump_program(FILE *out, const KernelSet *ks, const Program *p) {
  for (int i = 0; i < p->nsteps; i++) {
    const Step *s = &p->steps[i];
    fprintf(out, "step %d: %s", i, step_names[s->kind]);
    switch (s->kind) {
    case STEP_KERNEL:
      fprintf(out, " %s(", ks->k[s->kernel]->name);
      for (int j = 0; j < s->nargs; j++) fprintf(out, "%s%%%d", j ? ", " : "", s->args[j]);
      fprintf(out, ") outer=%lld", (long long)s->n_outer);
      break;
    case STEP_GEMM:
      fprintf(out, " %%%d = %%%d%s @ %%%d%s m=%lld n=%lld k=%lld batch=%lld strides=%lld,%lld,%lld", s->c, s->a,
              s->ta ? "^T" : "", s->b, s->tb ? "^T" : "", (long long)s->m, (long long)s->n, (long long)s->k,
              (long long)s->batch, (long long)s->stride_a, (long long)s->stride_b, (long long)s->stride_c);
      if (s->off_a || s->off_b || s->off_c)
        fprintf(out, " offsets=%lld,%lld,%lld", (long long)s->off_a, (long long)s->off_b, (long long)s->off_c);
      fprintf(out, " alpha=%g beta=%g", s->alpha, s->beta);
      if (s->prec != PREC_F32) fprintf(out, " %s", mpl_prec_name(s->prec));
      break;
    case STEP_ALIAS: fprintf(out, " %%%d = %%%d", s->a, s->b); break;
    case STEP_COMM: fprintf(out, " %%%d", s->op); break;
    case STEP_ACCUM: fprintf(out, " %%%d += %%%d [%lld]", s->a, s->b, (long long)s->numel); break;
    case STEP_SDPA: case STEP_SDPA_BWD:
      fprintf(out, " (");
      for (int j = 0; j < s->nargs; j++) fprintf(out, "%s%%%d", j ? ", " : "", s->args[j]);
      fprintf(out, ") B=%lld H=%lld Hkv=%lld T=%lld S=%lld hs=%lld hv=%lld scale=%g%s", (long long)s->batch,
              (long long)s->heads, (long long)s->kv_heads, (long long)s->m, (long long)s->n, (long long)s->k,
              (long long)s->hv, s->alpha, s->causal ? " causal" : "");
      if (s->prec != PREC_F32) fprintf(out, " %s", mpl_prec_name(s->prec));
      break;
    case STEP_CE:
      fprintf(out, " (");
      for (int j = 0; j < s->nargs; j++) fprintf(out, "%s%%%d", j ? ", " : "", s->args[j]);
      fprintf(out, ") N=%lld K=%lld V=%lld%s rows=%lld", (long long)s->m, (long long)s->k, (long long)s->n,
              s->tb ? " tb" : "", (long long)s->chunk);
      if (s->prec != PREC_F32) fprintf(out, " %s", mpl_prec_name(s->prec));
      break;
    case STEP_EMB_GRAD:
      fprintf(out, " %%%d = rows of %%%d at %%%d positions=%lld rows=%lld cols=%lld", s->args[2], s->args[1],
              s->args[0], (long long)s->m, (long long)s->k, (long long)s->n);
      break;
    }
    fputc('\n', out);
  }
}

void kir_dump(FILE *out, const KernelSet *ks, const Program *p) {
  for (int i = 0; i < ks->n; i++) kir_dump_kernel(out, ks->k[i]);
  if (p) kir_dump_program(out, ks, p);
}
