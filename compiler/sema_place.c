/*
 * sema_place.c — pipeline placement after the model body has run: the stage of
 * ops no annotation reached, the backward-flow check, empty stages, and the
 * hand-off to the balancer when the program places nothing itself.
 *
 * Invariants (after sema_place_finish without errors):
 *  - leaves and creation ops (inputs, params, constants, arange, masks) have
 *    stage -1: they are made on each stage that uses them;
 *  - every other op has 0 <= stage < nstages, and no input of an op is on a
 *    later stage than the op;
 *  - unless auto_stages, every stage has at least one op.
 */
#include "sema_int.h"

#include <stdlib.h>
#include <string.h>

static bool is_leafish(const Op *op) {
  OpClass c = op_info[op->kind].cls;
  return c == OPC_L || c == OPC_C;
}

/* An op with no staged input runs on the stage of its earliest (lowest) use; 0 if unused. */
static void resolve_pending(Sema *S) {
  Graph *g = S->g;
  int *minuse = arena_alloc(S->a, sizeof(int) * (size_t)(g->nops + 1));
  Loc *minloc = arena_alloc(S->a, sizeof(Loc) * (size_t)(g->nops + 1));
  for (int i = 0; i < g->nops; i++) minuse[i] = -1;
  for (int i = g->nops - 1; i >= 0; i--) {
    Op *op = g->ops[i];
    if (!is_leafish(op) && op->stage < 0) {
      op->stage = minuse[i] >= 0 ? minuse[i] : 0;
      op->stage_loc = minuse[i] >= 0 ? minloc[i] : (Loc){0};
    }
    if (op->stage < 0) continue;
    for (int j = 0; j < op->nin; j++) {
      int x = op->in[j];
      if (minuse[x] < 0 || op->stage < minuse[x]) {
        minuse[x] = op->stage;
        minloc[x] = op->stage_loc;
      }
    }
  }
}

static const char *tensor_name(Sema *S, const Op *op) {
  const char *n = S->varname[op->id] ? S->varname[op->id] : op->name;
  if (n) return arena_printf(S->a, "tensor '%s'", n);
  return arena_printf(S->a, "the %s tensor", op_name(op->kind));
}

/* Data may flow only to the same or a later stage. */
static void check_flow(Sema *S) {
  Graph *g = S->g;
  bool *reported = arena_alloc(S->a, (size_t)g->nops + 1);
  for (int i = 0; i < g->nops; i++) {
    Op *op = g->ops[i];
    if (op->stage < 0) continue;
    for (int j = 0; j < op->nin; j++) {
      Op *x = g->ops[op->in[j]];
      if (x->stage <= op->stage || reported[x->id]) continue;
      reported[x->id] = true;
      sema_err_op(S, op, "%s flows from stage %d back to stage %d", tensor_name(S, x), x->stage, op->stage);
      sema_note(S, op_user_loc(x), "it is made here, on stage %d", x->stage);
      /* one @stage of a loop giving both (pass 71: two notes at one place, no iterations) */
      if (x->stage_loc.line && loc_same(x->stage_loc, op->stage_loc)) {
        sema_note(S, x->stage_loc, "this @stage gives stage %d to an earlier iteration and stage %d to a later one, "
                  "which reads it: a loop's stages must not decrease", x->stage, op->stage);
        continue;
      }
      if (x->stage_loc.line) sema_note(S, x->stage_loc, "stage %d was set here", x->stage);
      if (op->stage_loc.line) sema_note(S, op->stage_loc, "stage %d was set here", op->stage);
    }
  }
}

/* "a, b and c" */
static const char *join_and(Sema *S, const char **items, int n) {
  const char *s = items[0];
  for (int i = 1; i < n; i++) s = arena_printf(S->a, "%s%s%s", s, i == n - 1 ? " and " : ", ", items[i]);
  return s;
}

/* "1", "2 and 3", "1, 4 to 7 and 9": the stages with no ops (runs of three or more as
 * ranges), NULL if none; *nempty gets their count. */
static const char *empty_list(Sema *S, const int *count, int n, int *nempty) {
  const char **items = arena_alloc(S->a, sizeof(char *) * (size_t)(n + 1));
  int k = 0;
  *nempty = 0;
  for (int a = 0; a < n; a++) {
    if (count[a]) continue;
    int b = a;
    while (b + 1 < n && !count[b + 1]) b++;
    *nempty += b - a + 1;
    if (b - a >= 2) items[k++] = arena_printf(S->a, "%d to %d", a, b);
    else
      for (int s = a; s <= b; s++) items[k++] = arena_printf(S->a, "%d", s);
    a = b;
  }
  return k ? join_and(S, items, k) : NULL;
}

/* Where the stage count was overridden: --mesh over the mesh's pp, interleaved(v). */
void sema_note_stage_origin(Sema *S) {
  const Graph *g = S->g;
  if (S->opt->mesh_set && S->opt->mesh.pp > 0 && S->mesh_pp_loc.line)
    sema_note(S, S->mesh_pp_loc, "--mesh pp=%d replaces this pp", g->mesh.pp);
  int v = g->train.virtual_stages;
  if (v > 1 && !S->opt->schedule && S->sched_loc.line && !loc_same(S->sched_loc, g->stages_loc))
    sema_note(S, S->sched_loc, "%s puts %d stages on each pipeline rank", sema_chunks_text(S), v);
}

/* The used stages next to each run of empty ones, and the highest used one: the
 * @stage (or @device) that first gave each of them work. */
static void note_used_stages(Sema *S, const int *count, int n) {
  const Graph *g = S->g;
  bool *want = arena_alloc(S->a, (size_t)n + 1);
  for (int s = 0; s < n; s++)
    if (count[s] && ((s > 0 && !count[s - 1]) || (s + 1 < n && !count[s + 1]))) want[s] = true;
  for (int s = n - 1; s >= 0; s--)
    if (count[s]) { want[s] = true; break; }
  for (int s = 0; s < n; s++) {
    for (int i = 0; want[s] && i < g->nops; i++) {
      const Op *op = g->ops[i];
      if (op->stage != s || !op->stage_loc.line) continue;
      sema_note(S, op->stage_loc, "stage %d is given work here", s);
      break;
    }
  }
}

/* Every stage needs work: one error for all the empty ones, at what sets the stage count. */
static void check_empty_stages(Sema *S) {
  Graph *g = S->g;
  int n = g->nstages, nempty;
  int *count = arena_alloc(S->a, sizeof(int) * (size_t)(n + 1));
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->stage >= 0 && g->ops[i]->stage < n) count[g->ops[i]->stage]++;
  const char *list = empty_list(S, count, n, &nempty);
  if (list) {
    sema_err(S, g->stages_loc, "%s %s %s nothing on %s (%s gives %d stages; give each some work with @stage)",
             nempty == 1 ? "stage" : "stages", list, nempty == 1 ? "has" : "have", nempty == 1 ? "it" : "them",
             g->stages_from, n);
    sema_note_stage_origin(S);
    note_used_stages(S, count, n);
    return;
  }
  /* a stage whose work the loss does not need: its rank would receive every micro-batch's
     input and run nothing that counts (pass 72: accepted, and its rank idled) */
  if (g->loss < 0) return;
  bool *live = graph_live_from_loss(g);
  int *nlive = arena_alloc(S->a, sizeof(int) * (size_t)(n + 1));
  for (int i = 0; i <= g->loss; i++)
    if (live[i] && g->ops[i]->stage >= 0 && g->ops[i]->stage < n) nlive[g->ops[i]->stage]++;
  free(live);
  for (int s = 0; s < n; s++) {
    if (nlive[s]) continue;
    const Op *first = NULL;
    for (int i = 0; i < g->nops && !first; i++)
      if (g->ops[i]->stage == s) first = g->ops[i];
    sema_err(S, op_user_loc(first), "stage %d's work does not reach the loss: its rank would run nothing the loss "
             "needs (give the stage work the loss reads, or use fewer stages)", s);
    return;
  }
}

void sema_place_finish(Sema *S) {
  Graph *g = S->g;
  g->auto_stages = g->nstages > 1 && !S->any_stage_annot;
  resolve_pending(S);
  check_flow(S);
  if (!g->auto_stages) check_empty_stages(S);
}
