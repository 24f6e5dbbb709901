/*
 * test_comm.c — unit tests of the in-process communicator (comm_local.c), with one pthread
 * per rank: ping-pong, many messages in FIFO order, tag and size mismatches, allreduce
 * determinism over 2-4 ranks and over disjoint groups at once, barrier, and abort waking
 * blocked ranks. Every wait in these tests is bounded by Check's timeout, so a hang fails.
 */
#include "runtime/mpl.h"

#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct RankArg {
  MplCommWorld *w;
  int rank, nranks, iter;
  int rc;
  float *out;
  MplErr err;
} RankArg;

/* Runs fn on nranks threads; returns the number of ranks whose fn returned non-zero. */
static int run_ranks(int nranks, MplCommWorld *w, void *(*fn)(void *), RankArg *args) {
  pthread_t th[8];
  for (int r = 0; r < nranks; r++) {
    args[r].w = w;
    args[r].rank = r;
    args[r].nranks = nranks;
    ck_assert_int_eq(pthread_create(&th[r], NULL, fn, &args[r]), 0);
  }
  int bad = 0;
  for (int r = 0; r < nranks; r++) {
    pthread_join(th[r], NULL);
    bad += args[r].rc != 0;
  }
  return bad;
}

static void *pingpong(void *p) {
  RankArg *a = p;
  MplComm *c = mpl_comm_world_rank(a->w, a->rank);
  for (int i = 0; i < 1000 && !a->rc; i++) {
    int v = i, got = -1;
    if (a->rank == 0) {
      a->rc = c->ops->send(c, 1, 7, &v, sizeof v) || c->ops->recv(c, 1, 8, &got, sizeof got);
      if (!a->rc && got != i + 1) a->rc = 1;
    } else {
      a->rc = c->ops->recv(c, 0, 7, &got, sizeof got);
      got++;
      if (!a->rc) a->rc = c->ops->send(c, 0, 8, &got, sizeof got);
    }
  }
  return NULL;
}

START_TEST(test_pingpong) {
  MplCommWorld *w;
  MplErr err;
  ck_assert_int_eq(mpl_comm_world_init(&w, 2, &err), MPL_OK);
  RankArg args[2] = {0};
  ck_assert_int_eq(run_ranks(2, w, pingpong, args), 0);
  mpl_comm_world_free(w);
}
END_TEST

/* Every rank sends 300 messages of varying size to every other rank, then receives them:
 * sends never block, and each pair's messages arrive in order. */
static void *many(void *p) {
  RankArg *a = p;
  MplComm *c = mpl_comm_world_rank(a->w, a->rank);
  for (int i = 0; i < 300; i++)
    for (int d = 0; d < a->nranks; d++) {
      int buf[64];
      for (int k = 0; k < 64; k++) buf[k] = a->rank * 100000 + i * 64 + k;
      if (c->ops->send(c, d, (uint64_t)i, buf, (size_t)(1 + i % 64) * sizeof(int))) a->rc = 1;
    }
  for (int s = 0; s < a->nranks; s++)
    for (int i = 0; i < 300; i++) {
      int buf[64];
      if (c->ops->recv(c, s, (uint64_t)i, buf, (size_t)(1 + i % 64) * sizeof(int))) { a->rc = 1; return NULL; }
      for (int k = 0; k < 1 + i % 64; k++)
        if (buf[k] != s * 100000 + i * 64 + k) a->rc = 1;
    }
  return NULL;
}

START_TEST(test_many_messages) {
  MplCommWorld *w;
  MplErr err;
  ck_assert_int_eq(mpl_comm_world_init(&w, 4, &err), MPL_OK);
  RankArg args[4] = {0};
  ck_assert_int_eq(run_ranks(4, w, many, args), 0);
  mpl_comm_world_free(w);
}
END_TEST

/* Rank 1 expects tag 2 (or 8 bytes) but rank 0 sends tag 1 (4 bytes): an error and an abort. */
static void *mismatch(void *p) {
  RankArg *a = p;
  MplComm *c = mpl_comm_world_rank(a->w, a->rank);
  int v = 5;
  double d;
  if (a->rank == 0) {
    c->ops->send(c, 1, 1, &v, sizeof v);
    a->rc = c->ops->recv(c, 1, 3, &v, sizeof v); /* never sent: must be woken by the abort */
  } else {
    a->rc = a->iter == 0 ? c->ops->recv(c, 0, 2, &v, sizeof v) : c->ops->recv(c, 0, 1, &d, sizeof d);
  }
  a->err = c->err;
  return NULL;
}

START_TEST(test_mismatch_aborts) {
  for (int iter = 0; iter < 2; iter++) {
    MplCommWorld *w;
    MplErr err;
    ck_assert_int_eq(mpl_comm_world_init(&w, 2, &err), MPL_OK);
    RankArg args[2] = {{.iter = iter}, {.iter = iter}};
    ck_assert_int_eq(run_ranks(2, w, mismatch, args), 2);
    const char *want = iter == 0 ? "expected tag 0x2 but the next message has tag 0x1" : "expected 8 bytes";
    ck_assert_msg(strstr(args[1].err.msg, want) != NULL, "%s", args[1].err.msg);
    ck_assert_msg(strstr(args[0].err.msg, "aborted") != NULL, "%s", args[0].err.msg);
    mpl_comm_world_free(w);
  }
}
END_TEST

/* The reference: members' buffers added in ascending rank order, in float. */
static float member_value(int rank, int iter, size_t i) {
  unsigned x = (unsigned)(rank * 7919 + iter * 104729) ^ (unsigned)i * 2654435761u;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  return (float)((int)(x % 20001) - 10000) * 1e-3f * (float)(1 + (x >> 24) % 1000);
}

enum { AR_N = 10007 };

static void *allreduce_rank(void *p) {
  RankArg *a = p;
  MplComm *c = mpl_comm_world_rank(a->w, a->rank);
  int ranks[8];
  for (int r = 0; r < a->nranks; r++) ranks[a->nranks - 1 - r] = r; /* any order is fine */
  for (int it = 0; it < 20 && !a->rc; it++) {
    for (size_t i = 0; i < AR_N; i++) a->out[i] = member_value(a->rank, it, i);
    if ((a->rank + it) % 3 == 0) usleep(200); /* vary the arrival order */
    a->rc = c->ops->allreduce_sum_f32(c, ranks, a->nranks, a->out, AR_N);
    for (size_t i = 0; i < AR_N && !a->rc; i++) {
      float s = member_value(0, it, i);
      for (int r = 1; r < a->nranks; r++) s += member_value(r, it, i);
      if (memcmp(&s, &a->out[i], 4) != 0) a->rc = 1;
    }
  }
  a->err = c->err;
  return NULL;
}

START_TEST(test_allreduce_deterministic) {
  for (int k = 2; k <= 4; k++) {
    MplCommWorld *w;
    MplErr err;
    ck_assert_int_eq(mpl_comm_world_init(&w, k, &err), MPL_OK);
    RankArg args[4] = {0};
    for (int r = 0; r < k; r++) args[r].out = malloc(AR_N * sizeof(float));
    ck_assert_msg(run_ranks(k, w, allreduce_rank, args) == 0, "%d ranks: %s", k, args[0].err.msg);
    for (int r = 1; r < k; r++) ck_assert_int_eq(memcmp(args[0].out, args[r].out, AR_N * sizeof(float)), 0);
    for (int r = 0; r < k; r++) free(args[r].out);
    mpl_comm_world_free(w);
  }
}
END_TEST

/* Groups {0, 2} and {1, 3} reduce at the same time, then all four barrier and reduce. */
static void *groups_rank(void *p) {
  RankArg *a = p;
  MplComm *c = mpl_comm_world_rank(a->w, a->rank);
  int g[2] = {a->rank % 2, a->rank % 2 + 2}, all[4] = {3, 1, 2, 0};
  for (int it = 0; it < 200 && !a->rc; it++) {
    float v[3] = {(float)a->rank, 1, (float)it};
    a->rc = c->ops->allreduce_sum_f32(c, g, 2, v, 3);
    if (!a->rc && (v[0] != (float)(2 * (a->rank % 2) + 2) || v[1] != 2 || v[2] != 2.0f * (float)it)) a->rc = 1;
    if (!a->rc) a->rc = c->ops->barrier(c);
    float one = 1;
    if (!a->rc) a->rc = c->ops->allreduce_sum_f32(c, all, 4, &one, 1);
    if (!a->rc && one != 4) a->rc = 1;
  }
  a->err = c->err;
  return NULL;
}

START_TEST(test_allreduce_groups) {
  MplCommWorld *w;
  MplErr err;
  ck_assert_int_eq(mpl_comm_world_init(&w, 4, &err), MPL_OK);
  RankArg args[4] = {0};
  ck_assert_msg(run_ranks(4, w, groups_rank, args) == 0, "%s", args[0].err.msg);
  mpl_comm_world_free(w);
}
END_TEST

/* Rank 2 fails and aborts while the others are blocked in recv, barrier and allreduce. */
static void *abort_rank(void *p) {
  RankArg *a = p;
  MplComm *c = mpl_comm_world_rank(a->w, a->rank);
  int v;
  float f[4] = {0};
  int grp[2] = {1, 3};
  switch (a->rank) {
  case 0: a->rc = c->ops->recv(c, 2, 1, &v, sizeof v); break;
  case 1: a->rc = c->ops->allreduce_sum_f32(c, grp, 2, f, 4); break; /* rank 3 never joins */
  case 2: usleep(20000); c->ops->abort(c, "out of memory in the executor"); a->rc = 1; break;
  default: a->rc = c->ops->barrier(c); break;
  }
  a->err = c->err;
  return NULL;
}

START_TEST(test_abort) {
  MplCommWorld *w;
  MplErr err;
  ck_assert_int_eq(mpl_comm_world_init(&w, 4, &err), MPL_OK);
  RankArg args[4] = {0};
  ck_assert_int_eq(run_ranks(4, w, abort_rank, args), 4);
  for (int r = 0; r < 4; r++)
    if (r != 2) ck_assert_msg(strstr(args[r].err.msg, "rank 2: out of memory in the executor"), "%s", args[r].err.msg);
  MplComm *c = mpl_comm_world_rank(w, 0);
  int v = 1;
  ck_assert_int_eq(c->ops->send(c, 1, 0, &v, sizeof v), MPL_ERR); /* later ops fail too */
  mpl_comm_world_free(w);
  /* bad arguments */
  ck_assert_int_eq(mpl_comm_world_init(&w, 0, &err), MPL_ERR);
  ck_assert_int_eq(mpl_comm_world_init(&w, 2, &err), MPL_OK);
  c = mpl_comm_world_rank(w, 0);
  ck_assert_int_eq(c->ops->send(c, 5, 0, &v, sizeof v), MPL_ERR);
  int bad[2] = {1, 1};
  float f = 0;
  ck_assert_int_eq(c->ops->allreduce_sum_f32(c, bad, 2, &f, 1), MPL_ERR);
  int notme[1] = {1};
  ck_assert_int_eq(c->ops->allreduce_sum_f32(c, notme, 1, &f, 1), MPL_ERR);
  int me[1] = {0};
  f = 3;
  ck_assert_int_eq(c->ops->allreduce_sum_f32(c, me, 1, &f, 1), MPL_OK);
  ck_assert(f == 3);
  ck_assert_ptr_null(mpl_comm_world_rank(w, 2));
  c->ops->send(c, 1, 0, &v, sizeof v); /* an undelivered message is freed with the world */
  c->ops->free(c);
  mpl_comm_world_free(w);
}
END_TEST

static Suite *comm_suite(void) {
  Suite *s = suite_create("comm");
  TCase *tc = tcase_create("local");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_pingpong);
  tcase_add_test(tc, test_many_messages);
  tcase_add_test(tc, test_mismatch_aborts);
  tcase_add_test(tc, test_allreduce_deterministic);
  tcase_add_test(tc, test_allreduce_groups);
  tcase_add_test(tc, test_abort);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(comm_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
