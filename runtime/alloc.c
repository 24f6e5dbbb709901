/*
 * alloc.c — the runtime's base: error messages, the one host allocator, whole-file
 * reads and atomic file writes, the CPUs the process may use.
 *
 * Invariants:
 *  - every host allocation of the runtime goes through mpl_malloc/_calloc/_realloc, so
 *    tests can count live blocks and make the n-th allocation fail;
 *  - a block carries a 64-byte header holding its size (and whether it is a mapping of
 *    its own, BIG), so the data is 64-byte aligned (AVX-512 loads) and mpl_free knows
 *    what to subtract and how to give it back;
 *  - the counters are the one piece of process-wide state, kept in C11 atomics (as Redis's
 *    zmalloc counter): they are statistics and a test hook, never behaviour.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mpl.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { HDR = 64 };

static _Atomic int64_t live_bytes, live_blocks, total_blocks, fail_countdown;

int mpl_errf(MplErr *e, const char *fmt, ...) {
  if (e) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
  }
  return MPL_ERR;
}

/* True if the failure hook says this allocation must fail. */
static bool should_fail(void) {
  if (atomic_load(&fail_countdown) <= 0) return false;
  return atomic_fetch_sub(&fail_countdown, 1) == 1;
}

/* A block of BIG bytes or more is its own anonymous mapping: its pages are zero until
 * written (mpl_calloc skips its memset), come in as the rank first touches them (in
 * parallel, on the thread that uses them, not all on the main thread at start-up), and
 * may be transparent huge pages (MADV_HUGEPAGE: 2 MiB per fault instead of 4 KiB; a
 * GPT-2 124M run at pp = 4 zeroed its 5.3 GB of arenas and optimizer state in 20 s of
 * page faults and memset before its first step). The header's second word says which. */
enum { BIG = 4 << 20 };

static size_t block_size(const void *p) { return *(const size_t *)((const char *)p - HDR); }
static bool block_mapped(const void *p) { return ((const size_t *)((const char *)p - HDR))[1] != 0; }

void *mpl_malloc(size_t n) {
  if (n > SIZE_MAX - HDR || should_fail()) return NULL;
  void *p = NULL;
  bool mapped = n >= BIG;
  if (mapped) {
    p = mmap(NULL, n + HDR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, n + HDR, MADV_HUGEPAGE); /* a hint: without THP the pages are 4 KiB */
  } else if (posix_memalign(&p, HDR, n + HDR) != 0) {
    return NULL;
  }
  ((size_t *)p)[0] = n, ((size_t *)p)[1] = mapped;
  atomic_fetch_add(&live_bytes, (int64_t)n);
  atomic_fetch_add(&live_blocks, 1);
  atomic_fetch_add(&total_blocks, 1);
  return (char *)p + HDR;
}

void *mpl_calloc(size_t count, size_t size) {
  if (size && count > SIZE_MAX / size) return NULL;
  void *p = mpl_malloc(count * size);
  if (p && !block_mapped(p)) memset(p, 0, count * size); /* a fresh mapping is zero */
  return p;
}

size_t mpl_alloc_size(const void *p) { return p ? block_size(p) : 0; }

void mpl_free(void *p) {
  if (!p) return;
  size_t n = block_size(p);
  atomic_fetch_sub(&live_bytes, (int64_t)n);
  atomic_fetch_sub(&live_blocks, 1);
  if (block_mapped(p)) munmap((char *)p - HDR, n + HDR);
  else free((char *)p - HDR);
}

/* Allocate, copy, free: keeps the alignment and the counts simple. On failure p is kept. */
void *mpl_realloc(void *p, size_t n) {
  if (!p) return mpl_malloc(n);
  void *q = mpl_malloc(n);
  if (!q) return NULL;
  size_t old = block_size(p);
  memcpy(q, p, old < n ? old : n);
  mpl_free(p);
  return q;
}

char *mpl_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = mpl_malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

void mpl_alloc_stats(MplAllocStats *out) {
  out->live_bytes = atomic_load(&live_bytes);
  out->live_blocks = atomic_load(&live_blocks);
  out->total_blocks = atomic_load(&total_blocks);
}

int mpl_cpus_usable(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

void mpl_alloc_fail_nth(int64_t n) { atomic_store(&fail_countdown, n > 0 ? n : 0); }

/* ---- files ------------------------------------------------------------- */

int mpl_open_regular(const char *path, MplErr *err) {
  /* O_NONBLOCK: opening a fifo for reading waits for a writer (a fifo in a checkpoint
     folder hung the resume); a regular file's reads do not heed the flag, cleared anyway */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return mpl_errf(err, "%s: cannot open: %s", path, strerror(errno)), -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return mpl_errf(err, "%s: not a regular file", path), -1;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

FILE *mpl_fopen_regular(const char *path, MplErr *err) {
  int fd = mpl_open_regular(path, err);
  if (fd < 0) return NULL;
  FILE *f = fdopen(fd, "rb");
  if (!f) {
    close(fd);
    mpl_errf(err, "%s: cannot open: %s", path, strerror(errno));
  }
  return f;
}

int mpl_file_read_all(const char *path, uint8_t **data, size_t *len, MplErr *err) {
  *data = NULL;
  *len = 0;
  FILE *f = mpl_fopen_regular(path, err);
  if (!f) return MPL_ERR;
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    fclose(f);
    return mpl_errf(err, "%s: not a regular file", path);
  }
  size_t n = (size_t)st.st_size;
  uint8_t *buf = mpl_malloc(n + 1);
  if (!buf) {
    fclose(f);
    return mpl_errf(err, "%s: out of memory reading %zu bytes", path, n);
  }
  size_t got = fread(buf, 1, n, f);
  fclose(f);
  if (got != n) {
    mpl_free(buf);
    return mpl_errf(err, "%s: read error (%zu of %zu bytes)", path, got, n);
  }
  buf[n] = 0;
  *data = buf;
  *len = n;
  return MPL_OK;
}

static void afile_release(MplAtomicFile *af) {
  mpl_free(af->path);
  mpl_free(af->tmp);
  af->path = af->tmp = NULL;
  af->f = NULL;
}

/* A link is written through, as open(2) writes through it: the rename replaces its target
 * (resolved: the link's folder joined with a relative target), not the link. */
static void link_target(const char *path, char *out, size_t n) {
  struct stat lb;
  char t[PATH_MAX];
  ssize_t k;
  snprintf(out, n, "%s", path);
  for (int hops = 0; hops < 40 && lstat(out, &lb) == 0 && S_ISLNK(lb.st_mode); hops++) {
    if ((k = readlink(out, t, sizeof t - 1)) <= 0) return;
    t[k] = 0;
    char folder[PATH_MAX], joined[2 * PATH_MAX + 2];
    mpl_path_folder(out, folder, sizeof folder);
    snprintf(joined, sizeof joined, "%s/%s", folder, t);
    if (strlen(t[0] == '/' ? t : joined) >= n) return;
    snprintf(out, n, "%s", t[0] == '/' ? t : joined);
  }
}

int mpl_afile_open(MplAtomicFile *af, const char *path, MplErr *err) {
  memset(af, 0, sizeof *af);
  char target[PATH_MAX];
  struct stat old;
  bool exists = stat(path, &old) == 0; /* what the path names, the kernel following its links */
  /* a device or a fifo (--save /dev/null, -o /dev/stdout): written into, never replaced by a
     regular file (a rename over /dev/null, as root, would take it from the system); opened by
     its own path: /dev/stdout's link, /proc/self/fd/1, reads "pipe:[...]" for a pipe (pass 69:
     --trace /dev/stdout | cat trained, then failed making a temp file under "pipe:[") */
  snprintf(target, sizeof target, "%s", path);
  if (!exists || S_ISREG(old.st_mode) || S_ISDIR(old.st_mode)) link_target(path, target, sizeof target);
  size_t n = strlen(target);
  exists = stat(target, &old) == 0;
  if (exists && !S_ISREG(old.st_mode) && !S_ISDIR(old.st_mode)) {
    af->path = mpl_strdup(target);
    int fd = af->path ? open(target, O_WRONLY | O_CLOEXEC) : -1;
    af->f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!af->f) {
      int e = errno;
      if (fd >= 0) close(fd);
      afile_release(af);
      return mpl_errf(err, "%s: cannot open for writing: %s", path, strerror(e));
    }
    return MPL_OK;
  }
  af->path = mpl_strdup(target);
  af->tmp = mpl_malloc(n + 16);
  if (!af->path || !af->tmp) {
    afile_release(af);
    return mpl_errf(err, "%s: out of memory", path);
  }
  /* FILE.tmp.XXXXXX beside it; a name too long for that (a file name has at most NAME_MAX
     bytes) gets a short one in the same folder */
  const char *base = strrchr(target, '/');
  base = base ? base + 1 : target;
  if (strlen(base) + 11 <= NAME_MAX) snprintf(af->tmp, n + 16, "%s.tmp.XXXXXX", target);
  else snprintf(af->tmp, n + 16, "%.*s.mpl.XXXXXX", (int)(base - target), target);
  int fd = mkstemp(af->tmp);
  if (fd < 0) {
    int e = errno;
    afile_release(af);
    return mpl_errf(err, "%s: cannot create a temp file next to it: %s", path, strerror(e));
  }
  mode_t mask = umask(0); /* mkstemp makes 0600; the file gets what open(2) would give, or the */
  umask(mask);             /* permissions of the file it replaces (a private 0600 file stays so) */
  (void)fchmod(fd, exists && S_ISREG(old.st_mode) ? old.st_mode & 07777 : 0666 & ~mask);
  af->f = fdopen(fd, "wb");
  if (!af->f) {
    close(fd);
    unlink(af->tmp);
    afile_release(af);
    return mpl_errf(err, "%s: fdopen failed", path);
  }
  return MPL_OK;
}

int mpl_afile_write(MplAtomicFile *af, const void *data, size_t n, MplErr *err) {
  if (n && fwrite(data, 1, n, af->f) != n)
    return mpl_errf(err, "%s: write error: %s", af->path, strerror(errno));
  return MPL_OK;
}

void mpl_afile_abort(MplAtomicFile *af) {
  if (af->f) fclose(af->f);
  if (af->tmp) unlink(af->tmp);
  afile_release(af);
}

void mpl_path_folder(const char *path, char *out, size_t n) {
  const char *slash = strrchr(path, '/');
  if (!slash) snprintf(out, n, ".");
  else if (slash == path) snprintf(out, n, "/");
  else snprintf(out, n, "%.*s", (int)(slash - path), path);
}

/* fsync of the directory holding path, so a rename into it is durable. */
int mpl_fsync_dir(const char *path) {
  char dir[4096];
  mpl_path_folder(path, dir, sizeof dir);
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int mpl_afile_commit(MplAtomicFile *af, MplErr *err) {
  int rc = fflush(af->f);
  if (rc == 0 && af->tmp) rc = fsync(fileno(af->f)); /* (a device written into: no fsync) */
  int e = errno;
  if (fclose(af->f) != 0 && rc == 0) rc = -1, e = errno;
  af->f = NULL;
  if (rc == 0 && af->tmp && rename(af->tmp, af->path) != 0) rc = -1, e = errno;
  if (rc != 0) {
    mpl_errf(err, "%s: cannot write: %s", af->path, strerror(e));
    mpl_afile_abort(af);
    return MPL_ERR;
  }
  if (af->tmp) mpl_fsync_dir(af->path); /* best effort: some file systems refuse fsync on directories */
  afile_release(af);
  return MPL_OK;
}

/* ---- the standard streams ---------------------------------------------------- */

void mpl_std_fds_open(void) {
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
      int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
      if (n >= 0 && n != fd) close(n); /* (open takes the lowest free descriptor: fd) */
    }
}

int mpl_stdout_check(const char *prog) {
  errno = 0;
  bool bad = fflush(stdout) != 0 || ferror(stdout);
  if (!bad) return 0;
  int e = errno;
  fprintf(stderr, "%s: error: writing the standard output failed%s%s\n", prog, e ? ": " : "", e ? strerror(e) : "");
  return 1;
}

/* A kB figure of a /proc file's line "KEY: N kB" (or of statm's first field, in pages,
 * when key is NULL); -1 when it cannot be read. */
int64_t mpl_proc_kb(const char *path, const char *key) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[256];
  int64_t v = -1;
  if (!key) {
    long long pages;
    if (fscanf(f, "%lld", &pages) == 1) v = pages * (sysconf(_SC_PAGESIZE) / 1024);
  } else {
    size_t kl = strlen(key);
    while (v < 0 && fgets(line, sizeof line, f))
      if (!strncmp(line, key, kl) && line[kl] == ':') v = strtoll(line + kl + 1, NULL, 10);
  }
  fclose(f);
  return v;
}

bool mpl_memory_check_off(void) {
  const char *skip = getenv("MPL_NO_MEMORY_CHECK");
  return skip && *skip && strcmp(skip, "0");
}

double mpl_mem_plannable(void) {
  int64_t kb = mpl_memory_check_off() ? -1 : mpl_proc_kb("/proc/meminfo", "MemAvailable");
  return kb < 0 ? -1 : (double)kb * 1024 * 0.95;
}
