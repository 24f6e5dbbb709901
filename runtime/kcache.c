/*
 * kcache.c — the compile cache: what LLVM made of a job's kernels, kept on disk so that
 * the same bytes are not compiled twice. mplrun's JIT (jit_cpu.c) keeps the machine code it
 * made from a job's bitcode; mplc (cg_llvm_module.c) keeps the optimised bitcode it made from the
 * kernels' unoptimised module; both keep NVRTC's PTX (cuda_dl.c: a log and the PTX). A job run again, resumed, run by each process of an
 * mpirun, or sampled from after training, starts without compiling its kernels again.
 *
 * The folder: $MPL_CACHE_DIR, else $XDG_CACHE_HOME/mpl, else $HOME/.cache/mpl (made when
 * missing, 0700); MPL_CACHE_DIR set to the empty string turns the cache off. A folder
 * that is not the user's own, or that others may write, is not used (its files would be
 * run as code). The cache never fails a compile or a run: a folder that cannot be made or
 * written, or an entry that cannot be read, is a miss, and the caller compiles.
 *
 * An entry, KIND-HASH (HASH: 64-bit FNV-1a of the kind, the context and the input):
 *   "MPLKC1\n\0", u64 context length, u64 input length, u64 output length,
 *   u64 FNV-1a of the output, the context, the input, the output.
 * A hit needs the context (the compiler's version, the target, the options) and the input
 * equal byte for byte, and the output's checksum right: a collision of names or a damaged
 * file (truncated, a flipped bit) is a miss, and the entry is written again. Entries are
 * written to a temp file in the folder and renamed over their name, so a reader sees a
 * whole entry or none; there is no fsync (a file lost in a crash is a miss).
 *
 * Waiting: a miss through mpl_kcache_get_locked takes the entry's lock (flock on .lock-KIND-HASH,
 * which the kernel lets go when its holder exits, however it ends) before it compiles;
 * another process (or thread) missing the same entry meanwhile waits for the lock, then
 * reads the entry the holder wrote: the processes of one mpirun compile a job's kernels
 * once, not once each. A holder that takes longer than MPL_CACHE_WAIT seconds (default 600)
 * is not waited for past that: the waiter compiles too; so does every waiter that finds no
 * entry once it has the lock (the holder failed, or its entry was not kept), each at once,
 * without holding the lock.
 *
 * Size: after each write (or failed write: a full disk), entries beyond $MPL_CACHE_MB
 * (default 512 MiB; a value that is not a positive number of MiB is taken as the default)
 * in all go, least recently used first (a hit touches its entry's time); temp files of
 * writers that died go once an hour old. Only names the cache writes are ever removed, so
 * a folder named by mistake (MPL_CACHE_DIR=~) keeps the user's files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mpl.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char MAGIC[8] = "MPLKC1\n";
enum { HEADER = 8 + 4 * 8 };

static _Atomic int64_t n_hits, n_misses, n_puts;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
#define FNV0 1469598103934665603ull

/* The cache's folder into dir (made if missing); false when the cache is off or the
 * folder cannot be used. */
static bool cache_dir(char *dir, size_t n) {
  const char *env = getenv("MPL_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  int w;
  if (env) w = snprintf(dir, n, "%s", env);
  else if (xdg && xdg[0] == '/') w = snprintf(dir, n, "%s/mpl", xdg);
  else if (home && home[0] == '/') w = snprintf(dir, n, "%s/.cache/mpl", home);
  else return false;
  if (w <= 0 || (size_t)w >= n) return false;
  struct stat st;
  if (stat(dir, &st) != 0) {
    if (errno != ENOENT) return false;
    /* the parents too (~/.cache may be missing) */
    for (char *s = dir + 1; *s; s++)
      if (*s == '/') {
        *s = 0;
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) return false;
        *s = '/';
      }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return false;
    if (stat(dir, &st) != 0) return false;
  }
  return S_ISDIR(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 022) == 0;
}

/* The entry's path; false when the cache is off. */
static bool entry_path(const char *kind, const char *ctx, const void *in, size_t inlen, char *path, size_t n) {
  char dir[PATH_MAX];
  if (!cache_dir(dir, sizeof dir)) return false;
  uint64_t h = fnv(fnv(fnv(FNV0, kind, strlen(kind) + 1), ctx, strlen(ctx) + 1), in, inlen);
  int w = snprintf(path, n, "%s/%s-%016llx", dir, kind, (unsigned long long)h);
  return w > 0 && (size_t)w < n;
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* Reads n bytes at the fd's position; false on a short read or an error. */
static bool read_full(int fd, void *p, size_t n) {
  for (uint8_t *b = p; n;) {
    ssize_t r = read(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    b += r, n -= (size_t)r;
  }
  return true;
}

uint8_t *mpl_kcache_get(const char *kind, const char *ctx, const void *in, size_t inlen, size_t *outlen) {
  char path[PATH_MAX];
  uint8_t *body = NULL, *out, h[HEADER];
  if (!entry_path(kind, ctx, in, inlen, path, sizeof path)) return NULL;
  /* the header first: a file of another size than it says (cut, grown, not an entry) is a
     miss before anything else is read */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  struct stat st;
  size_t clen = strlen(ctx);
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || !read_full(fd, h, HEADER) || memcmp(h, MAGIC, 8) != 0)
    goto miss;
  uint64_t c = get_u64(h + 8), i = get_u64(h + 16), o = get_u64(h + 24), sum = get_u64(h + 32);
  if (c != clen || i != inlen || (uint64_t)st.st_size - HEADER < c + i || (uint64_t)st.st_size - HEADER - c - i != o)
    goto miss;
  if (!(body = mpl_malloc(c + i + (o ? o : 1))) || !read_full(fd, body, c + i + o)) goto miss;
  if (memcmp(body, ctx, clen) != 0 || memcmp(body + clen, in, inlen) != 0 || fnv(FNV0, body + c + i, o) != sum)
    goto miss;
  out = memmove(body, body + c + i, o); /* (the block's start: what mpl_free takes) */
  *outlen = o;
  (void)futimens(fd, NULL); /* recently used (a read-only cache keeps its times) */
  close(fd);
  atomic_fetch_add(&n_hits, 1);
  return out;
miss:
  mpl_free(body);
  if (fd >= 0) close(fd);
  atomic_fetch_add(&n_misses, 1);
  return NULL;
}

typedef struct {
  char name[NAME_MAX + 1];
  off_t size;
  struct timespec used;
} Entry;

static int by_use(const void *a, const void *b) {
  const Entry *x = a, *y = b;
  if (x->used.tv_sec != y->used.tv_sec) return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
  if (x->used.tv_nsec != y->used.tv_nsec) return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Names the cache writes: KIND-HASH (a kind of lower-case letters, 16 hex digits), and
 * .tmp-PID-N; a folder shared with other files loses none of them. */
static bool is_entry_name(const char *n) {
  size_t k = 0;
  while (n[k] >= 'a' && n[k] <= 'z') k++;
  if (k == 0 || k > 8 || n[k] != '-') return false;
  n += k + 1;
  for (k = 0; (n[k] >= '0' && n[k] <= '9') || (n[k] >= 'a' && n[k] <= 'f'); k++) {}
  return k == 16 && !n[k];
}

/* .lock-KIND-HASH: an entry's lock file (mpl_kcache_get_locked) */
static bool is_lock_name(const char *n) { return strncmp(n, ".lock-", 6) == 0 && is_entry_name(n + 6); }

static bool is_temp_name(const char *n) {
  if (strncmp(n, ".tmp-", 5) != 0) return false;
  int dashes = 0;
  for (n += 5; *n; n++)
    if (*n == '-') dashes++;
    else if (*n < '0' || *n > '9') return false;
  return dashes == 1;
}

/* Entries beyond the size limit go, the least recently used first (down to 3/4 of it, so
 * the next writes do not scan again at once); stale temp files go. */
static void trim(const char *dir) {
  const char *mb = getenv("MPL_CACHE_MB");
  char *end = NULL;
  double limit = mb && *mb ? strtod(mb, &end) : 512;
  if (mb && *mb && (*end || !(limit > 0 && limit < 1e9))) limit = 512; /* not a size in MiB: the default */
  limit *= 1048576.0;
  DIR *d = opendir(dir);
  if (!d) return;
  Entry *es = NULL;
  size_t n = 0, cap = 0;
  double total = 0;
  time_t now = time(NULL);
  char path[PATH_MAX + NAME_MAX + 2];
  for (struct dirent *e; (e = readdir(d));) {
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    bool temp = is_temp_name(e->d_name) || is_lock_name(e->d_name);
    if (!temp && !is_entry_name(e->d_name)) continue; /* not ours: never touched */
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (temp) {
      if (now - st.st_mtime > 3600) unlink(path);
      continue;
    }
    if (n == cap) {
      Entry *g = realloc(es, (cap = cap ? 2 * cap : 64) * sizeof *es);
      if (!g) break;
      es = g;
    }
    snprintf(es[n].name, sizeof es[n].name, "%s", e->d_name);
    es[n].size = st.st_size, es[n].used = st.st_mtim;
    total += (double)st.st_size;
    n++;
  }
  closedir(d);
  if (total > limit) {
    qsort(es, n, sizeof *es, by_use);
    for (size_t i = 0; i < n && total > 0.75 * limit; i++) {
      snprintf(path, sizeof path, "%s/%s", dir, es[i].name);
      if (unlink(path) == 0) total -= (double)es[i].size;
    }
  }
  free(es);
}

void mpl_kcache_put(const char *kind, const char *ctx, const void *in, size_t inlen, const void *out, size_t outlen) {
  char path[PATH_MAX], tmp[PATH_MAX + 64], dir[PATH_MAX];
  if (!entry_path(kind, ctx, in, inlen, path, sizeof path)) return;
  mpl_path_folder(path, dir, sizeof dir);
  static _Atomic unsigned seq;
  snprintf(tmp, sizeof tmp, "%s/.tmp-%ld-%u", dir, (long)getpid(), atomic_fetch_add(&seq, 1));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return;
  uint8_t h[HEADER];
  uint64_t f[4] = {strlen(ctx), inlen, outlen, fnv(FNV0, out, outlen)};
  memcpy(h, MAGIC, 8);
  memcpy(h + 8, f, sizeof f);
  FILE *fp = fdopen(fd, "wb");
  bool ok = fp && fwrite(h, 1, HEADER, fp) == HEADER && fwrite(ctx, 1, f[0], fp) == f[0] &&
            (!inlen || fwrite(in, 1, inlen, fp) == inlen) && (!outlen || fwrite(out, 1, outlen, fp) == outlen);
  if (fp) ok = fclose(fp) == 0 && ok;
  else close(fd);
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    trim(dir); /* a full disk: room for the next write, if this cache is what filled it */
    return;
  }
  atomic_fetch_add(&n_puts, 1);
  trim(dir);
}

uint8_t *mpl_kcache_get_locked(const char *kind, const char *ctx, const void *in, size_t inlen, size_t *outlen,
                               int *lock) {
  *lock = -1;
  uint8_t *out = mpl_kcache_get(kind, ctx, in, inlen, outlen);
  char path[PATH_MAX], lpath[PATH_MAX + 8], dir[PATH_MAX];
  if (out || !entry_path(kind, ctx, in, inlen, path, sizeof path)) return out;
  mpl_path_folder(path, dir, sizeof dir);
  snprintf(lpath, sizeof lpath, "%s/.lock-%s", dir, path + strlen(dir) + 1);
  int fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
  struct stat st;
  if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) close(fd), fd = -1; /* (a fifo, a device: not ours) */
  if (fd < 0) return NULL; /* (no lock: compile) */
  const char *w = getenv("MPL_CACHE_WAIT");
  char *end = NULL;
  double wait = w && *w ? strtod(w, &end) : 600;
  if (w && *w && (*end || !(wait >= 0 && wait < 1e7))) wait = 600;
  struct timespec t0, now, nap = {0, 10 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  bool held = false, waited = false;
  for (;; waited = true) { /* polled (a blocking flock could wait on a stuck holder for ever) */
    if ((held = flock(fd, LOCK_EX | LOCK_NB) == 0)) break;
    if (errno != EWOULDBLOCK && errno != EINTR) break; /* (no locks on this file system) */
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec) >= wait) break;
    nanosleep(&nap, NULL);
  }
  if (!held) { /* waited long enough, or cannot lock: compile */
    close(fd);
    return NULL;
  }
  (void)futimens(fd, NULL); /* (trim takes lock files an hour old) */
  /* a holder before us may have written it: a hit (not a miss), else one miss, not two */
  out = mpl_kcache_get(kind, ctx, in, inlen, outlen);
  atomic_fetch_sub(&n_misses, 1);
  if (out || waited) { /* waited and still a miss (the holder failed, or its entry is gone: a full
                          disk, a small MPL_CACHE_MB): compile without the lock, so that the other
                          waiters do too at once, not one after another (review pass 94) */
    mpl_kcache_unlock(fd);
    return out;
  }
  *lock = fd;
  return NULL;
}

void mpl_kcache_unlock(int lock) {
  if (lock < 0) return;
  flock(lock, LOCK_UN);
  close(lock);
}

void mpl_kcache_lib_id(const void *addr, char *out, size_t n) {
  Dl_info info;
  struct stat st;
  char real[PATH_MAX];
  const char *file = dladdr(addr, &info) && info.dli_fname && *info.dli_fname ? info.dli_fname : "/proc/self/exe";
  if (realpath(file, real)) file = real; /* (an executable's name is as it was started: build/mplrun) */
  else if (realpath("/proc/self/exe", real)) file = real;
  if (stat(file, &st) != 0) memset(&st, 0, sizeof st);
  snprintf(n ? out : NULL, n, "%s, %lld bytes, modified %lld.%09ld", file, (long long)st.st_size,
           (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
}

void mpl_kcache_stats(int64_t *hits, int64_t *misses, int64_t *puts) {
  *hits = atomic_load(&n_hits), *misses = atomic_load(&n_misses), *puts = atomic_load(&n_puts);
}
