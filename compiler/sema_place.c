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
      sema_err(S, op->loc, "%s flows from stage %d back to stage %d", tensor_name(S, x), x->stage, op->stage);
      sema_note(S, x->loc, "it is made here, on stage %d", x->stage);
      if (x->stage_loc.line) sema_note(S, x->stage_loc, "stage %d was set here", x->stage);
      if (op->stage_loc.line) sema_note(S, op->stage_loc, "stage %d was set here", op->stage);
    }
  }
}

static void check_empty_stages(Sema *S) {
  Graph *g = S->g;
  int n = g->nstages;
  int *count = arena_alloc(S->a, sizeof(int) * (size_t)(n + 1));
  for (int i = 0; i < g->nops; i++)
    if (g->ops[i]->stage >= 0 && g->ops[i]->stage < n) count[g->ops[i]->stage]++;
  for (int s = 0; s < n; s++)
    if (!count[s]) sema_err(S, (Loc){0}, "stage %d has nothing on it (the mesh has %d stage%s; give each some work with @stage)", s, n, n == 1 ? "" : "s");
}

void sema_place_finish(Sema *S) {
  Graph *g = S->g;
  g->auto_stages = g->nstages > 1 && !S->any_stage_annot;
  resolve_pending(S);
  check_flow(S);
  if (!g->auto_stages) check_empty_stages(S);
}
