/*
 * test_kcache.c — the compile cache (runtime/kcache.c) through its API: a hit only for the
 * same kind, context and input; every flipped byte and every cut of an entry, a grown entry
 * and a link are misses, and a put writes the entry whole again; folders it must not use
 * (others may write it, the empty setting, one under a file); the size limit, least
 * recently used first, never removing files it did not write, and limits that are not a
 * size; the identity of the file a compiler's code is in; the lock under which processes that
 * miss one entry at once compile it once. (NVRTC's entries: test_nvrtc;
 * mplc and mplrun with the cache: tests/e2e/compile_cache.sh.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "runtime/mpl.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tmp_files.h"

/* The one entry file in dir (its path into out); the count of entries. */
static int cache_entries(const char *dir, char *out, size_t n) {
  char cmd[600], line[512] = "";
  snprintf(cmd, sizeof cmd, "ls '%s' | grep -v '^\\.' ", dir);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  int k = 0;
  for (char l[512]; fgets(l, sizeof l, p); k++) snprintf(line, sizeof line, "%s", l);
  pclose(p);
  line[strcspn(line, "\n")] = 0;
  if (out) snprintf(out, n, "%s/%s", dir, line);
  return k;
}

static bool cache_has(const char *kind, const char *ctx, const char *in, const char *want) {
  size_t n = 12345;
  uint8_t *got = mpl_kcache_get(kind, ctx, in, strlen(in), &n);
  bool same = got && n == strlen(want) && memcmp(got, want, n) == 0;
  ck_assert_msg(!got || same, "a hit with other bytes: %.*s", (int)n, got ? (const char *)got : "");
  mpl_free(got);
  return same;
}

START_TEST(test_kcache) {
  make_tmpdir("kcache");
  char *old_dir = getenv("MPL_CACHE_DIR") ? strdup(getenv("MPL_CACHE_DIR")) : NULL; /* (tests/run.sh's) */
  char *old_mb = getenv("MPL_CACHE_MB") ? strdup(getenv("MPL_CACHE_MB")) : NULL;
  char dir[600];
  snprintf(dir, sizeof dir, "%s", tmp_path("cache/a/b")); /* made with its parents */
  setenv("MPL_CACHE_DIR", dir, 1);
  int64_t h0, m0, p0, h, m, p;
  mpl_kcache_stats(&h0, &m0, &p0);
  ck_assert(!cache_has("jit", "ctx 1", "input bytes", "object"));
  mpl_kcache_put("jit", "ctx 1", "input bytes", 11, "object", 6);
  ck_assert(cache_has("jit", "ctx 1", "input bytes", "object"));
  mpl_kcache_stats(&h, &m, &p);
  ck_assert_int_eq(h - h0, 1);
  ck_assert_int_eq(m - m0, 1);
  ck_assert_int_eq(p - p0, 1);
  /* another context, another input, another kind: misses */
  ck_assert(!cache_has("jit", "ctx 2", "input bytes", "object"));
  ck_assert(!cache_has("jit", "ctx 1", "input byteS", "object"));
  ck_assert(!cache_has("opt", "ctx 1", "input bytes", "object"));
  ck_assert(!cache_has("jit", "ctx 1", "input byte", "object"));
  char entry[600];
  ck_assert_int_eq(cache_entries(dir, entry, sizeof entry), 1);
  struct stat st;
  ck_assert_int_eq(stat(dir, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0700);
  /* every flipped byte and every truncation of the entry is a miss (never other bytes), and
     a put writes it whole again */
  uint8_t *good;
  size_t len;
  ck_assert_int_eq(mpl_file_read_all(entry, &good, &len, NULL), MPL_OK);
  ck_assert_uint_eq(len, 40 + 5 + 11 + 6);
  for (size_t i = 0; i < len; i++) {
    good[i] ^= 0x20;
    write_bytes(entry, good, len);
    ck_assert_msg(!cache_has("jit", "ctx 1", "input bytes", "object"), "byte %zu flipped: a hit", i);
    good[i] ^= 0x20;
    write_bytes(entry, good, i);
    ck_assert_msg(!cache_has("jit", "ctx 1", "input bytes", "object"), "cut at %zu: a hit", i);
  }
  write_bytes(entry, good, len);
  ck_assert(cache_has("jit", "ctx 1", "input bytes", "object"));
  /* grown by a byte, or a link to a good entry: a miss */
  uint8_t *grown = malloc(len + 1);
  memcpy(grown, good, len);
  grown[len] = 0;
  write_bytes(entry, grown, len + 1);
  free(grown);
  ck_assert(!cache_has("jit", "ctx 1", "input bytes", "object"));
  write_bytes(tmp_path("good"), good, len);
  unlink(entry);
  ck_assert_int_eq(symlink(tmp_path("good"), entry), 0);
  ck_assert(!cache_has("jit", "ctx 1", "input bytes", "object"));
  unlink(entry);
  write_bytes(entry, "junk", 4);
  mpl_kcache_put("jit", "ctx 1", "input bytes", 11, "object", 6);
  ck_assert(cache_has("jit", "ctx 1", "input bytes", "object"));
  mpl_free(good);
  /* a folder others may write, or the empty setting: off (nothing read, nothing written) */
  ck_assert_int_eq(chmod(dir, 0777), 0);
  ck_assert(!cache_has("jit", "ctx 1", "input bytes", "object"));
  mpl_kcache_put("jit", "ctx 3", "x", 1, "y", 1);
  ck_assert_int_eq(chmod(dir, 0700), 0);
  ck_assert_int_eq(cache_entries(dir, NULL, 0), 1);
  setenv("MPL_CACHE_DIR", "", 1);
  ck_assert(!cache_has("jit", "ctx 1", "input bytes", "object"));
  mpl_kcache_put("jit", "ctx 4", "x", 1, "y", 1);
  /* a folder that cannot be made (under a file): a miss, no error */
  setenv("MPL_CACHE_DIR", tmp_path("cache/a/b/jit-x/c"), 1);
  write_bytes(tmp_path("cache/a/b/jit-x"), "f", 1);
  mpl_kcache_put("jit", "ctx 1", "input bytes", 11, "object", 6);
  ck_assert(!cache_has("jit", "ctx 1", "input bytes", "object"));
  unlink(tmp_path("cache/a/b/jit-x"));
  /* the size limit: the least recently used entries go first; files the cache did not
     write are never removed (a folder named by mistake); a limit that is not a positive
     number of MiB is the default 512 */
  setenv("MPL_CACHE_DIR", dir, 1);
  static char big[3000];
  memset(big, 'z', sizeof big - 1);
  static const char *const foreign[] = {"my-checkpoint.safetensors", "notes-0123456789abcdef0", "JIT-0123456789abcdef",
                                        "jit-0123456789abcdeg", ".tmp-12-x", "jit-", "-0123456789abcdef"};
  char fpath[7][700], stale[700];
  for (int i = 0; i < 7; i++) {
    snprintf(fpath[i], sizeof fpath[i], "%s/%s", dir, foreign[i]);
    write_bytes(fpath[i], big, sizeof big);
  }
  snprintf(stale, sizeof stale, "%s/.tmp-12-3", dir); /* a dead writer's, two hours old: removed */
  write_bytes(stale, "x", 1);
  struct timespec two_hours[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
  ck_assert_int_eq(utimensat(AT_FDCWD, stale, two_hours, 0), 0);
  static const char *const junk_mb[] = {"abc", "-5", "0", "1G", "nan", "1e400"};
  setenv("MPL_CACHE_MB", "0.01", 1); /* 10,485 bytes */
  for (int i = 0; i < 3; i++) {
    char in[8];
    snprintf(in, sizeof in, "in%d", i);
    mpl_kcache_put("jit", "ctx", in, strlen(in), big, strlen(big));
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL); /* distinct times of use */
  }
  ck_assert(cache_has("jit", "ctx 1", "input bytes", "object")); /* the oldest written, used now */
  mpl_kcache_put("jit", "ctx", "in3", 3, big, strlen(big));      /* 4 x 3 KB + 62 bytes: over */
  ck_assert(cache_has("jit", "ctx 1", "input bytes", "object"));
  ck_assert(!cache_has("jit", "ctx", "in0", big));
  ck_assert(!cache_has("jit", "ctx", "in1", big));
  ck_assert(cache_has("jit", "ctx", "in2", big));
  ck_assert(cache_has("jit", "ctx", "in3", big));
  for (int i = 0; i < 6; i++) {
    setenv("MPL_CACHE_MB", junk_mb[i], 1);
    mpl_kcache_put("jit", "ctx", "in9", 3, big, strlen(big));
    ck_assert_msg(cache_has("jit", "ctx 1", "input bytes", "object") && cache_has("jit", "ctx", "in3", big) &&
                      cache_has("jit", "ctx", "in9", big),
                  "MPL_CACHE_MB=%s: entries removed", junk_mb[i]);
  }
  ck_assert_int_eq(cache_entries(dir, NULL, 0), 4 + 6); /* four entries, six foreign files (one is hidden) */
  for (int i = 0; i < 7; i++) {
    struct stat fs;
    ck_assert_msg(stat(fpath[i], &fs) == 0 && fs.st_size == (off_t)sizeof big, "%s removed", foreign[i]);
  }
  ck_assert_msg(access(stale, F_OK) != 0, "a stale temp file kept");
  /* the identity of the file code lives in: its path and size */
  char id[PATH_MAX + 128], expect[64];
  mpl_kcache_lib_id((const void *)(uintptr_t)&mpl_kcache_put, id, sizeof id);
  struct stat self;
  ck_assert_int_eq(stat("/proc/self/exe", &self), 0);
  snprintf(expect, sizeof expect, ", %lld bytes, modified ", (long long)self.st_size);
  ck_assert_msg(id[0] == '/' && strstr(id, "test_kcache") && strstr(id, expect), "%s", id);
  if (old_mb) setenv("MPL_CACHE_MB", old_mb, 1);
  else unsetenv("MPL_CACHE_MB");
  if (old_dir) setenv("MPL_CACHE_DIR", old_dir, 1);
  else unsetenv("MPL_CACHE_DIR");
  free(old_dir), free(old_mb);
  remove_tmpdir();
}
END_TEST

/* A child that wants entry (jit, "ctx L", "in"): on a hit exits 10, on a miss (holding the
 * lock) "compiles" for 300 ms, puts the entry, lets the lock go and exits 20; 1 when this
 * process's counts are not one hit, or one miss and one put. */
static void child_wants_entry(void) {
  int64_t h0, m0, p0, h, m, p;
  mpl_kcache_stats(&h0, &m0, &p0);
  int lock;
  size_t n = 0;
  uint8_t *got = mpl_kcache_get_locked("jit", "ctx L", "in", 2, &n, &lock);
  if (got) {
    mpl_kcache_stats(&h, &m, &p);
    _exit(n == 6 && !memcmp(got, "object", 6) && lock == -1 && h - h0 == 1 && m == m0 ? 10 : 1);
  }
  if (lock < 0) _exit(1);
  usleep(300 * 1000);
  mpl_kcache_put("jit", "ctx L", "in", 2, "object", 6);
  mpl_kcache_unlock(lock);
  mpl_kcache_stats(&h, &m, &p);
  _exit(h == h0 && m - m0 == 1 && p - p0 == 1 ? 20 : 1);
}

static double seconds_since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* A child that waits on a holder that writes no entry: exits 30 when it gets no entry and no
 * lock (it compiles at once, as the other waiters do), 20 when it holds the lock, 10 on a hit. */
static void child_after_failed_holder(void) {
  int lock;
  size_t n;
  uint8_t *got = mpl_kcache_get_locked("jit", "ctx L", "in", 2, &n, &lock);
  _exit(got ? 10 : lock < 0 ? 30 : 20);
}

/* This process's open descriptors (the listing's own among them: only differences matter) */
static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  ck_assert_ptr_nonnull(d);
  int n = 0;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

/* A child that takes the entry's lock (a miss), says so on fd w, and holds it until killed. */
static pid_t child_holding_lock(void) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int lock;
    size_t n;
    uint8_t *got = mpl_kcache_get_locked("jit", "ctx L", "in", 2, &n, &lock);
    char c = got || lock < 0 ? 'x' : 'L';
    if (write(fds[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(fds[1]);
  char c = 0;
  ck_assert_int_eq(read(fds[0], &c, 1), 1);
  close(fds[0]);
  ck_assert_msg(c == 'L', "the child did not get the lock");
  return pid;
}

/* mpl_kcache_get_locked: processes that miss one entry at once compile it once (one takes
 * the lock and compiles, the others wait and read its entry); a holder that dies lets the
 * lock go; one that takes longer than MPL_CACHE_WAIT is not waited for; stale lock files go. */
START_TEST(test_kcache_lock) {
  make_tmpdir("kcache_lock");
  char *old_dir = getenv("MPL_CACHE_DIR") ? strdup(getenv("MPL_CACHE_DIR")) : NULL;
  char dir[600];
  snprintf(dir, sizeof dir, "%s", tmp_path("cache"));
  setenv("MPL_CACHE_DIR", dir, 1);
  unsetenv("MPL_CACHE_WAIT");
  /* four at once: one compiles, three read its entry */
  pid_t kids[4];
  for (int i = 0; i < 4; i++) {
    kids[i] = fork();
    ck_assert_int_ge(kids[i], 0);
    if (kids[i] == 0) child_wants_entry();
  }
  int compiled = 0, read_it = 0;
  for (int i = 0; i < 4; i++) {
    int st;
    ck_assert_int_eq(waitpid(kids[i], &st, 0), kids[i]);
    ck_assert_msg(WIFEXITED(st) && (WEXITSTATUS(st) == 10 || WEXITSTATUS(st) == 20), "child %d: status %d", i, st);
    compiled += WEXITSTATUS(st) == 20, read_it += WEXITSTATUS(st) == 10;
  }
  ck_assert_int_eq(compiled, 1);
  ck_assert_int_eq(read_it, 3);
  /* a holder killed while compiling: the next one takes the lock at once (and compiles) */
  ck_assert_int_eq(system("rm -f \"$MPL_CACHE_DIR\"/jit-*"), 0);
  pid_t holder = child_holding_lock();
  kill(holder, SIGKILL);
  ck_assert_int_eq(waitpid(holder, NULL, 0), holder);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int lock;
  size_t n;
  ck_assert_ptr_null(mpl_kcache_get_locked("jit", "ctx L", "in", 2, &n, &lock));
  ck_assert_msg(lock >= 0 && seconds_since(&t0) < 2.0, "lock %d after %.2f s", lock, seconds_since(&t0));
  mpl_kcache_unlock(lock);
  /* a holder that takes too long: waited for MPL_CACHE_WAIT seconds, then compiled without the lock */
  holder = child_holding_lock();
  setenv("MPL_CACHE_WAIT", "0.3", 1);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ck_assert_ptr_null(mpl_kcache_get_locked("jit", "ctx L", "in", 2, &n, &lock));
  double waited = seconds_since(&t0);
  kill(holder, SIGKILL);
  waitpid(holder, NULL, 0);
  ck_assert_msg(lock == -1 && waited >= 0.29 && waited < 5.0, "lock %d after %.2f s", lock, waited);
  unsetenv("MPL_CACHE_WAIT");
  /* a holder that ends without writing the entry (a failed compile, a full disk): the three
     waiting then compile at once, none of them holding the lock (review pass 94: one after
     another, each holding it) */
  holder = child_holding_lock();
  for (int i = 0; i < 3; i++) {
    kids[i] = fork();
    ck_assert_int_ge(kids[i], 0);
    if (kids[i] == 0) child_after_failed_holder();
  }
  usleep(200 * 1000);
  kill(holder, SIGKILL);
  waitpid(holder, NULL, 0);
  for (int i = 0; i < 3; i++) {
    int st;
    ck_assert_int_eq(waitpid(kids[i], &st, 0), kids[i]);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 30, "waiter %d: status %d (30: no entry, no lock)", i, st);
  }
  /* no descriptor left open after a lock and its unlock; a lock file that is a link is not
     followed (nor its target made): no lock, compile */
  int fds = open_fds();
  ck_assert_ptr_null(mpl_kcache_get_locked("jit", "ctx L", "in", 2, &n, &lock));
  ck_assert_int_ge(lock, 0);
  mpl_kcache_unlock(lock);
  ck_assert_int_eq(open_fds(), fds);
  char lockfile[700], target[700];
  mpl_kcache_put("jit", "ctx L", "in", 2, "object", 6);
  ck_assert_int_eq(cache_entries(dir, lockfile, sizeof lockfile), 1);
  char *slash = strrchr(lockfile, '/');
  snprintf(target, sizeof target, "%s", lockfile);
  snprintf(target + (slash - lockfile), sizeof target - (size_t)(slash - lockfile), "/.lock-%s", slash + 1);
  ck_assert_int_eq(unlink(lockfile), 0); /* (the entry: a miss again) */
  ck_assert_int_eq(unlink(target), 0);   /* (its lock file, made above) */
  char *dest = strdup(tmp_path("link_target"));
  ck_assert_int_eq(symlink(dest, target), 0);
  ck_assert_ptr_null(mpl_kcache_get_locked("jit", "ctx L", "in", 2, &n, &lock));
  ck_assert_msg(lock == -1 && access(dest, F_OK) != 0, "a linked lock file followed (lock %d)", lock);
  ck_assert_int_eq(unlink(target), 0);
  free(dest);
  /* lock files an hour old go at the next write, as stale temp files do; a fresh one stays */
  char stale[700], fresh[700], entry[700];
  snprintf(stale, sizeof stale, "%s/.lock-jit-0123456789abcdef", dir);
  snprintf(fresh, sizeof fresh, "%s/.lock-jit-fedcba9876543210", dir);
  write_bytes(stale, "", 0), write_bytes(fresh, "", 0);
  struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
  ck_assert_int_eq(utimensat(AT_FDCWD, stale, old, 0), 0);
  mpl_kcache_put("jit", "ctx M", "in", 2, "object", 6);
  ck_assert_msg(access(stale, F_OK) != 0 && access(fresh, F_OK) == 0, "stale lock kept or fresh one removed");
  ck_assert_int_eq(cache_entries(dir, entry, sizeof entry), 1); /* (ctx M's: ctx L's was removed above) */
  if (old_dir) setenv("MPL_CACHE_DIR", old_dir, 1);
  else unsetenv("MPL_CACHE_DIR");
  free(old_dir);
  remove_tmpdir();
}
END_TEST

int main(void) {
  Suite *s = suite_create("kcache");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_kcache);
  tcase_add_test(tc, test_kcache_lock);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
