/*
 * checkpoint.c — params and training state on disk, by global name:
 *   --save FILE / --init FILE   one safetensors file of every param (f32, unsharded);
 *   --checkpoint DIR            DIR/model.safetensors, DIR/optim.safetensors
 *                               ("exp_avg.NAME", "exp_avg_sq.NAME" or "momentum.NAME"),
 *                               DIR/state.json (next step, data position, seed, identity,
 *                               the digests of the two tensor files, checked on --resume);
 *   --resume DIR                all of it back, so the run continues bit for bit.
 *
 * Invariants:
 *  - files are written atomically (temp file, fsync, rename); a checkpoint directory is
 *    written complete under DIR.tmp and then swapped with DIR in one rename (renameat2
 *    RENAME_EXCHANGE when DIR exists), so DIR is always a whole checkpoint; a DIR that is a
 *    link is followed (the link stays);
 *  - nothing but a checkpoint's three files is ever removed: a DIR (or DIR.tmp) holding
 *    anything else is refused before the run trains (mpl_ckpt_dir_check), and a file put
 *    into DIR during the run stays, in the old folder that is then kept;
 *  - loaded params and optimizer state are finite (a NaN in a file is refused, not
 *    trained on);
 *  - names and shapes are checked on every read: a missing name or a shape mismatch is
 *    an error naming the param; the mesh of the writer does not matter;
 *  - one run writes a checkpoint folder at a time: the writer holds an flock on DIR.lock,
 *    beside DIR, from before it trains until it ends (mpl_ckpt_lock); a second run given
 *    the folder is refused at its start, naming the first one's pid;
 *  - under MPI (one rank per process) writing is collective: every process gathers the
 *    tensors in the same order (mpl_run_get_param / _get_optim send the parts to world
 *    rank 0) and world rank 0 alone touches the file system; reading is local: each
 *    process reads the files itself (a file system every process sees) and sets its
 *    own rank's parts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "exec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The checkpoint's identity: the optimizer and every param's global name and whole shape.
 * A job's params hold this tp rank's part (split_dim has 1/tp of its size), so the split
 * dimension is scaled back to the whole: the identity, like the files, does not depend on
 * the mesh of the writer. */
uint64_t mpl_ckpt_identity(const Job *job) {
  uint64_t h = mpl_fnv1a64(&job->train.optimizer, 1);
  for (int i = 0; i < job->nparams; i++) {
    const JobParam *p = &job->params[i];
    int rank = p->rank > 0 ? (p->rank < 8 ? p->rank : 8) : 0;
    int64_t whole[8];
    memcpy(whole, p->dims, sizeof(int64_t) * (size_t)rank);
    if (p->split_dim >= 0 && p->split_dim < rank && job->mesh.tp > 1) whole[p->split_dim] *= job->mesh.tp;
    h ^= mpl_fnv1a64(p->name, strlen(p->name) + 1) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= mpl_fnv1a64(whole, sizeof(int64_t) * (size_t)rank) + (h << 6) + (h >> 2);
  }
  return h;
}

static void shape_str(char *buf, size_t n, int rank, const int64_t *d) {
  size_t k = (size_t)snprintf(buf, n, "[");
  if (rank > MPL_ST_MAX_DIM) { /* a file's tensor of more dims: its dims are not kept */
    snprintf(buf, n, "of %d dims", rank);
    return;
  }
  for (int i = 0; i < rank && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)d[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
}

/* Gathers numbered tensors (params, or one optimizer slot of each) and writes them. */
typedef int (*GetFn)(const MplRun *r, int p, int slot, float *out, MplErr *err);

static int get_param(const MplRun *r, int p, int slot, float *out, MplErr *err) {
  return mpl_run_get_param(r, p, out, err);
}

/* Nothing non-finite is ever written: a diverged run keeps its last good checkpoint. */
static int check_finite(const char *path, const char *name, const float *x, int64_t n, MplErr *err) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return mpl_errf(err, "%s: not written: %s[%lld] is %s (the run diverged: nothing non-finite is written; a "
                      "checkpoint or file written before stays as it was)", path, name,
                      (long long)i, isnan(x[i]) ? "nan" : "inf");
  return MPL_OK;
}

/* The writer's callback: tensor k (slot k / nparams of param k % nparams), gathered when the
 * writer reaches it, so a file of the params takes one tensor's memory, not all of them
 * (a model that trained in its memory failed to save after training); `done` counts the
 * tensors gathered, in name order. */
typedef struct WriteCtx {
  const MplRun *r;
  const char *path;
  GetFn get;
  const MplStEntry *e;
  float *buf;  /* the run's write buffer (taken before training), or one of this call's */
  int done;
} WriteCtx;

static const float *fill_tensor(void *ctx, int k, MplErr *err) {
  WriteCtx *w = ctx;
  int np = mpl_run_job(w->r)->nparams;
  w->done++;
  int st = w->get(w->r, k % np, k / np, w->buf, err);
  if (st == MPL_OK) st = check_finite(w->path, w->e[k].name, w->buf, mpl_run_param(w->r, k % np)->numel, err);
  return st == MPL_OK ? w->buf : NULL;
}

static int cmp_entry_index(const void *a, const void *b, void *e) {
  const MplStEntry *x = &((const MplStEntry *)e)[*(const int *)a], *y = &((const MplStEntry *)e)[*(const int *)b];
  return strcmp(x->name, y->name);
}

/* "PREFIX.NAME", or NAME without a prefix, allocated (a param's name has no length bound);
 * NULL when out of memory. */
static char *slot_name(const char *prefix, const char *name) {
  size_t len = strlen(name) + (prefix ? strlen(prefix) + 2 : 1);
  char *s = mpl_malloc(len);
  if (s) snprintf(s, len, "%s%s%s", prefix ? prefix : "", prefix ? "." : "", name);
  return s;
}

static int write_tensors(const MplRun *r, const char *path, const char *const *prefixes, int nslots, GetFn get,
                         MplErr *err) {
  const Job *job = mpl_run_job(r);
  int n = job->nparams * nslots;
  MplStEntry *e = mpl_calloc((size_t)n + 1, sizeof *e);
  char **names = mpl_calloc((size_t)n + 1, sizeof *names);
  int *order = mpl_calloc((size_t)n + 1, sizeof *order);
  int st = e && names && order ? MPL_OK : mpl_errf(err, "%s: out of memory", path);
  WriteCtx w = {r, path, get, e, NULL, 0};
  int64_t most = 0;
  for (int s = 0; s < nslots && st == MPL_OK; s++)
    for (int p = 0; p < job->nparams && st == MPL_OK; p++) {
      const JobParam *jp = mpl_run_param(r, p);
      int k = s * job->nparams + p;
      if (!(names[k] = slot_name(prefixes ? prefixes[s] : NULL, jp->name))) {
        st = mpl_errf(err, "%s: out of memory", path);
        break;
      }
      e[k] = (MplStEntry){.name = names[k], .ndim = jp->rank, .shape = jp->dims, .fill = fill_tensor, .ctx = &w,
                          .index = k};
      order[k] = k;
      if (jp->numel > most) most = jp->numel;
    }
  /* the tensors are gathered in name order, the order the writer writes them in: under mpirun
     every process takes part in each gather, in that order */
  if (st == MPL_OK) qsort_r(order, (size_t)n, sizeof *order, cmp_entry_index, e);
  float *own = NULL; /* (a run without --save or --checkpoint has no write buffer) */
  w.buf = mpl_run_write_buf(r);
  if (st == MPL_OK && !w.buf && !(w.buf = own = mpl_malloc((size_t)most * 4 + 4)))
    st = mpl_errf(err, "%s: out of memory", path);
  /* "pt", as PyTorch's safetensors writer says: Hugging Face's loaders refuse any format but
     pt, tf, flax and mlx, and the tensors are PyTorch's (row-major, by state-dict name) */
  const char *mk[] = {"format"}, *mv[] = {"pt"};
  if (st == MPL_OK && mpl_run_is_lead(r)) st = mpl_st_write_f32(path, e, n, mk, mv, 1, err);
  /* the gathers the writer did not reach (another process's, or after a write failed): every
     process makes all of them, so that none waits for a part that never comes */
  for (int i = w.done; i < n && order && w.buf; i++) {
    MplErr ignore;
    int k = order[i];
    int gs = get(r, k % job->nparams, k / job->nparams, w.buf, st == MPL_OK ? err : &ignore);
    if (st == MPL_OK) st = gs;
  }
  mpl_free(own);
  for (int k = 0; k < n && names; k++) mpl_free(names[k]);
  mpl_free(e);
  mpl_free(names);
  mpl_free(order);
  return st;
}

int mpl_ckpt_save_params(const MplRun *r, const char *path, MplErr *err) {
  return write_tensors(r, path, NULL, 1, get_param, err);
}

/* Reads tensor `name` (shape of param p) from st into buf. */
static int read_tensor(const MplSafetensors *st, const char *name, const JobParam *jp, float *buf, MplErr *err) {
  const MplStTensor *t = mpl_st_find(st, name);
  if (!t) return mpl_errf(err, "%s: no tensor '%s' (param %s)", st->path, name, jp->name);
  bool same = t->ndim == jp->rank; /* (a param's rank is at most MPL_ST_MAX_DIM) */
  for (int i = 0; same && i < jp->rank; i++) same = t->shape[i] == jp->dims[i];
  if (!same) {
    char a[160], b[160];
    shape_str(a, sizeof a, t->ndim, t->shape);
    shape_str(b, sizeof b, jp->rank, jp->dims);
    return mpl_errf(err, "%s: tensor '%s' has shape %s but param %s is %s", st->path, name, a, jp->name, b);
  }
  if (mpl_st_read_f32(st, t, buf, err) != MPL_OK) return MPL_ERR;
  for (int64_t i = 0; i < t->numel; i++)
    if (!isfinite(buf[i]))
      return mpl_errf(err, "%s: tensor '%s' holds %s at element %lld: a run cannot start from it", st->path, name,
                      isnan(buf[i]) ? "a NaN" : "an infinity", (long long)i);
  return MPL_OK;
}

typedef int (*SetFn)(MplRun *r, int p, int slot, const float *in, MplErr *err);

static int set_param(MplRun *r, int p, int slot, const float *in, MplErr *err) {
  return mpl_run_set_param(r, p, in, err);
}

static int read_tensors(MplRun *r, const char *path, const char *const *prefixes, int nslots, SetFn set, MplErr *err) {
  const Job *job = mpl_run_job(r);
  MplSafetensors st = {0};
  if (mpl_st_open(&st, path, err) != MPL_OK) return MPL_ERR;
  int rc = MPL_OK;
  for (int s = 0; s < nslots && rc == MPL_OK; s++)
    for (int p = 0; p < job->nparams && rc == MPL_OK; p++) {
      const JobParam *jp = mpl_run_param(r, p);
      char *name = slot_name(prefixes ? prefixes[s] : NULL, jp->name);
      float *buf = mpl_malloc((size_t)jp->numel * 4 + 4);
      if (!buf || !name) rc = mpl_errf(err, "%s: out of memory", path);
      else if ((rc = read_tensor(&st, name, jp, buf, err)) == MPL_OK) {
        MplErr past;
        if (!prefixes && mpl_run_is_lead(r) && mpl_param_check_values(jp, buf, &past) != MPL_OK)
          fprintf(stderr, "mplrun: warning: %s: %s: its forward reads an infinity\n", path, past.msg);
        rc = set(r, p, s, buf, err);
      }
      mpl_free(buf);
      mpl_free(name);
    }
  mpl_st_free(&st);
  return rc;
}

int mpl_ckpt_load_params(MplRun *r, const char *path, MplErr *err) {
  return read_tensors(r, path, NULL, 1, set_param, err);
}

/* ---- checkpoint directories ------------------------------------------------------------ */

static int join(char *buf, size_t n, const char *dir, const char *file, MplErr *err) {
  if ((size_t)snprintf(buf, n, "%s/%s", dir, file) >= n) return mpl_errf(err, "%s: path too long", dir);
  return MPL_OK;
}

/* A file's digest: FNV-1a over its length and its 8-byte words (the tail bytes one by one),
 * read in 1 MiB blocks. state.json keeps the two tensor files' digests, so a resume refuses
 * a checkpoint whose bytes changed after it was written (the safetensors format has no
 * check of its own: a flipped bit in a tensor reads as a value). */
static int file_digest(const char *path, uint64_t *out, MplErr *err) {
  FILE *f = mpl_fopen_regular(path, err);
  if (!f) return MPL_ERR;
  enum { BLOCK = 1 << 20 };
  uint8_t *buf = mpl_malloc(BLOCK);
  if (!buf) {
    fclose(f);
    return mpl_errf(err, "out of memory");
  }
  uint64_t h = MPL_FNV_OFFSET, total = 0;
  size_t n;
  while ((n = fread(buf, 1, BLOCK, f)) > 0) {
    h = mpl_fnv1a64_words(h, buf, n);
    total += n;
  }
  int bad = ferror(f);
  fclose(f);
  mpl_free(buf);
  if (bad) return mpl_errf(err, "%s: read error", path);
  *out = (h ^ total) * 0x100000001B3ull;
  return MPL_OK;
}

static const char *const digest_keys[2] = {"model_digest", "optim_digest"};
static const char *const digest_files[2] = {"model.safetensors", "optim.safetensors"};

static int write_state(const MplRun *r, const char *dir, int64_t next_step, MplErr *err) {
  const Job *job = mpl_run_job(r);
  char path[4096];
  uint64_t dig[2];
  for (int i = 0; i < 2; i++)
    if (join(path, sizeof path, dir, digest_files[i], err) != MPL_OK || file_digest(path, &dig[i], err) != MPL_OK)
      return MPL_ERR;
  if (join(path, sizeof path, dir, "state.json", err) != MPL_OK) return MPL_ERR;
  /* the text's length has no bound: a model's name is an identifier of any length */
  char *text = NULL;
  size_t n = 0;
  FILE *m = open_memstream(&text, &n);
  if (!m) return mpl_errf(err, "out of memory");
  fprintf(m,
          "{\n  \"format\": 1,\n  \"step\": %" PRId64 ",\n  \"data_pos\": %" PRId64 ",\n"
          "  \"data_align\": %" PRId64 ",\n  \"total_steps\": %" PRId64 ",\n"
          "  \"seed\": \"%" PRIu64 "\",\n  \"identity\": \"%016" PRIx64 "\",\n"
          "  \"job_checksum\": \"%016" PRIx64 "\",\n  \"model\": \"%s\",\n"
          "  \"%s\": \"%016" PRIx64 "\",\n  \"%s\": \"%016" PRIx64 "\"\n}\n",
          next_step, mpl_run_data_pos(r), mpl_run_data_align(r), mpl_run_total_steps(r), job->train.seed,
          mpl_ckpt_identity(job),
          mpl_run_opts(r)->job_checksum, job->model_name ? job->model_name : "", digest_keys[0], dig[0],
          digest_keys[1], dig[1]);
  if (fclose(m) != 0 || !text) {
    free(text);
    return mpl_errf(err, "out of memory");
  }
  MplAtomicFile af;
  int rc = mpl_afile_open(&af, path, err);
  if (rc == MPL_OK && (rc = mpl_afile_write(&af, text, n, err)) != MPL_OK) mpl_afile_abort(&af);
  else if (rc == MPL_OK) rc = mpl_afile_commit(&af, err);
  free(text);
  return rc;
}

/* The files of a checkpoint folder: nothing else is ever written to or removed from one. */
static const char *const ckpt_files[] = {"model.safetensors", "optim.safetensors", "state.json"};

/* A checkpoint's file half written by a run that was killed: NAME.tmp.XXXXXX (mpl_afile_open's). */
static bool is_ckpt_temp(const char *name) {
  for (size_t i = 0; i < sizeof ckpt_files / sizeof *ckpt_files; i++) {
    size_t n = strlen(ckpt_files[i]);
    if (!strncmp(name, ckpt_files[i], n) && !strncmp(name + n, ".tmp.", 5) && strlen(name + n + 5) == 6) return true;
  }
  return false;
}

static bool is_ckpt_file(const char *name) {
  for (size_t i = 0; i < sizeof ckpt_files / sizeof *ckpt_files; i++)
    if (!strcmp(name, ckpt_files[i])) return true;
  return is_ckpt_temp(name);
}

/* A checkpoint folder we wrote: its files (and the temp files of a write that was killed),
 * then the folder itself. Anything else in it (a user's file) stays, and so does the
 * folder; false then. */
static bool remove_dir(const char *dir) {
  char p[4200];
  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d)))
    if (is_ckpt_temp(de->d_name) && (size_t)snprintf(p, sizeof p, "%s/%s", dir, de->d_name) < sizeof p) unlink(p);
  if (d) closedir(d);
  for (size_t i = 0; i < sizeof ckpt_files / sizeof *ckpt_files; i++)
    if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, ckpt_files[i]) < sizeof p) unlink(p);
  return rmdir(dir) == 0 || errno == ENOENT;
}

/* The first entry of folder dir that is not a checkpoint's file (into name), or false. */
static bool foreign_entry(const char *dir, char *name, size_t n) {
  DIR *d = opendir(dir);
  if (!d) return false;
  struct dirent *de;
  bool found = false;
  while (!found && (de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && !is_ckpt_file(de->d_name)) {
      snprintf(name, n, "%s", de->d_name);
      found = true;
    }
  closedir(d);
  return found;
}

/* Puts tmp in place of dir: an atomic exchange if dir exists, else a rename. */
static int swap_into_place(const char *tmp, const char *dir, MplErr *err) {
  struct stat sb;
  if (stat(dir, &sb) == 0) {
    if (!S_ISDIR(sb.st_mode)) return mpl_errf(err, "%s: exists and is not a directory", dir);
#ifdef SYS_renameat2
    if (syscall(SYS_renameat2, AT_FDCWD, tmp, AT_FDCWD, dir, 2 /* RENAME_EXCHANGE */) == 0) {
      if (!remove_dir(tmp)) /* now the old checkpoint: a file put there during the run stays */
        fprintf(stderr, "mplrun: warning: %s: kept, with the files put in %s during the run\n", tmp, dir);
      mpl_fsync_dir(dir); /* best effort, as mpl_afile_commit */
      return MPL_OK;
    }
#endif
    /* no exchange on this file system: move the old one aside first */
    char old[4200];
    snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
    if (rename(dir, old) != 0) return mpl_errf(err, "%s: cannot replace: %s", dir, strerror(errno));
    if (rename(tmp, dir) != 0) {
      int e = errno;
      rename(old, dir);
      return mpl_errf(err, "%s: cannot replace: %s", dir, strerror(e));
    }
    if (!remove_dir(old)) fprintf(stderr, "mplrun: warning: %s: kept, with the files put in %s during the run\n", old, dir);
  } else if (rename(tmp, dir) != 0) {
    return mpl_errf(err, "%s: cannot create: %s", dir, strerror(errno));
  }
  mpl_fsync_dir(dir); /* best effort, as mpl_afile_commit */
  return MPL_OK;
}

static int get_optim(const MplRun *r, int p, int slot, float *out, MplErr *err) {
  return mpl_run_get_optim(r, p, slot, out, err);
}

/* The folder a checkpoint goes to (dir, or where dir links to: the link stays; dir's real
 * path when it ends in "." or "..") and its
 * temp folder beside it, "<folder>.tmp" (one name, so a run killed while writing leaves at
 * most one, which the next write removes). */
static int ckpt_target(const char *dir, char *target, size_t tn, char *tmp, size_t mn, MplErr *err) {
  size_t dl = strlen(dir);
  while (dl > 1 && dir[dl - 1] == '/') dl--;
  if (dl >= tn) return mpl_errf(err, "%s: path too long", dir);
  snprintf(target, tn, "%.*s", (int)dl, dir);
  /* a last part "." or ".." names a folder that cannot be renamed by that name (".", "DIR/.":
     the swap would fail after training, a run resumed inside its checkpoint folder with
     --checkpoint .): its real path instead */
  const char *last = strrchr(target, '/');
  last = last ? last + 1 : target;
  bool dots = !strcmp(last, ".") || !strcmp(last, "..");
  struct stat lb;
  if (lstat(target, &lb) == 0 && (S_ISLNK(lb.st_mode) || dots)) {
    char real[PATH_MAX];
    if (!realpath(target, real)) return mpl_errf(err, "%s: a link to nowhere: %s", target, strerror(errno));
    if (strlen(real) >= tn) return mpl_errf(err, "%s: path too long", real);
    snprintf(target, tn, "%s", real);
  }
  if (!strcmp(target, "/")) return mpl_errf(err, "%s: the root folder cannot be a checkpoint folder", dir);
  if ((size_t)snprintf(tmp, mn, "%s.tmp", target) >= mn) return mpl_errf(err, "%s: path too long", target);
  return MPL_OK;
}

/* A folder that exists and that this process may create files in. */
static int writable_folder(const char *folder, const char *flag, const char *path, MplErr *err) {
  struct stat sb;
  if (stat(folder, &sb) != 0) return mpl_errf(err, "%s %s: no folder %s: %s", flag, path, folder, strerror(errno));
  if (!S_ISDIR(sb.st_mode)) return mpl_errf(err, "%s %s: %s is not a folder", flag, path, folder);
  if (access(folder, W_OK | X_OK) != 0)
    return mpl_errf(err, "%s %s: cannot write in %s: %s", flag, path, folder, strerror(errno));
  return MPL_OK;
}

int mpl_out_file_check(const char *path, const char *flag, MplErr *err) {
  struct stat sb;
  if (!*path) return mpl_errf(err, "%s '': the path is empty", flag);
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return mpl_errf(err, "%s %s: is a folder, not a file", flag, path);
  char folder[4096];
  mpl_path_folder(path, folder, sizeof folder);
  return writable_folder(folder, flag, path, err);
}

/* ---- outputs that would overwrite inputs --------------------------------------------- */

/* Where path is or would be: "FOLDER/NAME" with the folder's real path; false if the
 * folder does not resolve (the output checks say so). */
static bool canonical(const char *path, char *out, size_t n) {
  char folder[4096], real[PATH_MAX];
  mpl_path_folder(path, folder, sizeof folder);
  if (!realpath(folder, real)) return false;
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  return (size_t)snprintf(out, n, "%s/%s", real, base) < n;
}

/* Do a and b name one file: the same file if both exist, else the same place. */
static bool same_file(const char *a, const char *b) {
  struct stat sa, sb;
  bool ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
  if (ea && eb) /* (two outputs may both be /dev/null) */
    return S_ISREG(sa.st_mode) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  if (ea || eb) return false;
  char ca[4400], cb[4400];
  return canonical(a, ca, sizeof ca) && canonical(b, cb, sizeof cb) && !strcmp(ca, cb);
}

/* Is path (a file) directly in folder dir? */
static bool in_folder(const char *path, const char *dir) {
  char folder[4096];
  struct stat sf, sd;
  mpl_path_folder(path, folder, sizeof folder);
  return stat(folder, &sf) == 0 && stat(dir, &sd) == 0 && S_ISDIR(sd.st_mode) && sf.st_dev == sd.st_dev &&
         sf.st_ino == sd.st_ino;
}

typedef struct NamedPath {
  const char *what, *path;
} NamedPath;

int mpl_paths_check(const MplRunOpts *o, const Job *job, const char *job_path, const char *comm_stats, MplErr *err) {
  const char *data = o->data_path ? o->data_path : job->train.data_kind == DATA_TOKENS ? job->train.data_path : NULL;
  const char *val = o->val_path ? o->val_path : job->train.val_path && *job->train.val_path ? job->train.val_path : NULL;
  char rfile[3][4200];
  NamedPath in[8] = {{"the job", job_path}, {o->data_path ? "--data" : "the job's data", data},
                     {o->val_path ? "--val" : "the job's val data", val}, {"--init", o->init_path}};
  int nin = 4;
  for (int i = 0; i < 3 && o->resume_dir; i++)
    if (join(rfile[i], sizeof rfile[i], o->resume_dir, ckpt_files[i], err) == MPL_OK)
      in[nin++] = (NamedPath){"a --resume file", rfile[i]};
  NamedPath out[5] = {{"--save", o->save_path}, {"--metrics", o->metrics_path}, {"--trace", o->trace_path},
                      {"--profile", o->profile_path}, {"--comm-stats", comm_stats}};
  for (int k = 0; k < 5; k++) {
    if (!out[k].path || !*out[k].path) continue;
    for (int i = 0; i < nin; i++) {
      if (!in[i].path || !*in[i].path || !same_file(out[k].path, in[i].path)) continue;
      if (k == 0 && in[i].path == o->init_path) continue; /* read whole at the start, replaced at the end */
      return mpl_errf(err, "%s %s is %s (%s) too: writing it would destroy what the run reads (give another path)",
                      out[k].what, out[k].path, in[i].what, in[i].path);
    }
    for (int j = 0; j < k; j++)
      if (out[j].path && *out[j].path && same_file(out[k].path, out[j].path))
        return mpl_errf(err, "%s and %s name the same file, %s: one would overwrite the other", out[j].what,
                        out[k].what, out[k].path);
    const char *dirs[2] = {o->ckpt_dir, o->resume_dir};
    for (int d = 0; d < 2; d++)
      if (dirs[d] && *dirs[d] && in_folder(out[k].path, dirs[d]))
        return mpl_errf(err, "%s %s is inside the checkpoint folder %s, which holds a checkpoint's files alone "
                        "(give a path outside it)", out[k].what, out[k].path, dirs[d]);
    /* the files beside the checkpoint folder: DIR.lock (removed at the end) and DIR.tmp */
    char target[4096], tmp[4200], lock[4200], cl[4400], co[4400];
    MplErr ignored;
    if (o->ckpt_dir && *o->ckpt_dir &&
        ckpt_target(o->ckpt_dir, target, sizeof target, tmp, sizeof tmp, &ignored) == MPL_OK &&
        (size_t)snprintf(lock, sizeof lock, "%s.lock", target) < sizeof lock) {
      if (same_file(out[k].path, lock) ||
          (canonical(out[k].path, co, sizeof co) && canonical(lock, cl, sizeof cl) && !strcmp(co, cl)))
        return mpl_errf(err, "%s %s is the lock file of --checkpoint %s, which the run removes at its end (give "
                        "another path)", out[k].what, out[k].path, o->ckpt_dir);
      if (in_folder(out[k].path, tmp))
        return mpl_errf(err, "%s %s is inside %s, where the checkpoint is written first (give a path outside it)",
                        out[k].what, out[k].path, tmp);
      char ct[4400]; /* DIR.tmp itself: a file there blocked every later --checkpoint DIR (pass 69) */
      if (same_file(out[k].path, tmp) ||
          (canonical(out[k].path, co, sizeof co) && canonical(tmp, ct, sizeof ct) && !strcmp(co, ct)))
        return mpl_errf(err, "%s %s is %s, the folder where --checkpoint %s is written first (give another path)",
                        out[k].what, out[k].path, tmp, o->ckpt_dir);
    }
  }
  return MPL_OK;
}

/* A swap stopped between its two renames (a file system without RENAME_EXCHANGE, NFS; a
 * kill in between): no DIR, the newer checkpoint whole in DIR.tmp, the one before it in
 * DIR.old.PID. Refused naming both (pass 65: "cannot open DIR/state.json"), the user
 * choosing which to keep. */
static int stopped_swap(const char *flag, const char *dir, MplErr *err) {
  char target[4096], tmp[4200], folder[4096], st_path[4300];
  struct stat sb;
  MplErr ignored;
  if (ckpt_target(dir, target, sizeof target, tmp, sizeof tmp, &ignored) != MPL_OK || stat(target, &sb) == 0 ||
      (size_t)snprintf(st_path, sizeof st_path, "%s/state.json", tmp) >= sizeof st_path || stat(st_path, &sb) != 0)
    return MPL_OK;
  const char *base = strrchr(target, '/');
  base = base ? base + 1 : target;
  mpl_path_folder(target, folder, sizeof folder);
  DIR *d = opendir(folder);
  if (!d) return MPL_OK;
  char old[300] = "";
  size_t bl = strlen(base);
  for (struct dirent *de; !old[0] && (de = readdir(d));)
    if (!strncmp(de->d_name, base, bl) && !strncmp(de->d_name + bl, ".old.", 5) && de->d_name[bl + 5] &&
        strspn(de->d_name + bl + 5, "0123456789") == strlen(de->d_name + bl + 5)) /* DIR.old.PID, not a user's */
      snprintf(old, sizeof old, "%s", de->d_name);
  closedir(d);
  if (!old[0]) return MPL_OK;
  return mpl_errf(err, "%s %s: a run stopped while moving its checkpoint in place: %s holds the newer checkpoint and "
                  "%.*s%s the one before it; rename %s to %s (or the older one to it), then run again", flag, dir, tmp,
                  (int)(base - target), target, old, tmp, target);
}

int mpl_ckpt_dir_check(const char *dir, const char *resume, MplErr *err) {
  if (stopped_swap("--checkpoint", dir, err) != MPL_OK) return MPL_ERR;
  char target[4096], tmp[4200], name[256], folder[4096];
  if (!*dir) return mpl_errf(err, "--checkpoint '': the path is empty");
  if (ckpt_target(dir, target, sizeof target, tmp, sizeof tmp, err) != MPL_OK) return MPL_ERR;
  struct stat rs, ts;
  if (resume && stat(resume, &rs) == 0 && stat(tmp, &ts) == 0 && rs.st_dev == ts.st_dev && rs.st_ino == ts.st_ino)
    return mpl_errf(err, "--checkpoint %s: --resume %s is %s, where this run writes each checkpoint first (it is "
                    "cleared at every write): give --checkpoint another folder", dir, resume, tmp);
  const char *base = strrchr(target, '/');
  base = base ? base + 1 : target;
  if (strlen(base) + 5 > NAME_MAX)
    return mpl_errf(err, "--checkpoint %s: the folder's name has %zu bytes, too many for %s.lock and .tmp, which go "
                    "beside it (at most %d)", dir, strlen(base), base[0] ? "NAME" : dir, NAME_MAX - 5);
  struct stat sb, pb;
  if (stat(target, &sb) == 0) {
    if (!S_ISDIR(sb.st_mode)) return mpl_errf(err, "--checkpoint %s: exists and is not a folder", dir);
    mpl_path_folder(target, folder, sizeof folder);
    if (stat(folder, &pb) == 0 && pb.st_dev != sb.st_dev)
      return mpl_errf(err, "--checkpoint %s: is a mount point, which a checkpoint cannot replace (it is written "
                      "beside as %s.tmp, then swapped in): give a folder inside it", dir, base);
    if (foreign_entry(target, name, sizeof name))
      return mpl_errf(err, "--checkpoint %s: the folder holds '%s', which is not a checkpoint's file; a checkpoint "
                      "folder holds model.safetensors, optim.safetensors and state.json alone (give a new folder)",
                      dir, name);
  }
  if (stat(tmp, &sb) == 0 && (!S_ISDIR(sb.st_mode) || foreign_entry(tmp, name, sizeof name)))
    return mpl_errf(err, "--checkpoint %s: %s, where the checkpoint is written first, holds files that are not a "
                    "checkpoint's: move it away", dir, tmp);
  /* a whole checkpoint in DIR.tmp with no DIR: not what a killed write leaves (but in the
     moment between its last file and the rename), rather a folder someone named so */
  char st_path[4300];
  if (stat(target, &sb) != 0 && (size_t)snprintf(st_path, sizeof st_path, "%s/state.json", tmp) < sizeof st_path &&
      stat(st_path, &sb) == 0)
    return mpl_errf(err, "--checkpoint %s: %s holds a checkpoint (state.json), which this run would clear before "
                    "its first write: move it away, or remove it if it is a killed run's", dir, tmp);
  mpl_path_folder(target, folder, sizeof folder);
  return writable_folder(folder, "--checkpoint", dir, err);
}

/* Does a live run hold the lock file `path` (a run whose --checkpoint it guards)? */
static bool lock_held(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);
  return held;
}

/* Two runs given one --checkpoint folder would remove each other's DIR.tmp while it is
 * written and swap their checkpoints in turn: the writer takes an flock on DIR.lock (the
 * folder itself is swapped away at each write, so the lock is a file beside it) and writes
 * its pid there for the other run's message. The lock goes with the process (a killed run
 * leaves the file, unlocked: the next run takes it); mpl_ckpt_unlock removes it while
 * still held, and a run that locked a file so removed tries again on the new one. */
int mpl_ckpt_lock(const char *dir, MplCkptLock *lk, MplErr *err) {
  char target[4096], tmp[4200], other[4300];
  lk->fd = -1;
  if (ckpt_target(dir, target, sizeof target, tmp, sizeof tmp, err) != MPL_OK) return MPL_ERR;
  /* a run writing --checkpoint DIR.tmp, or (this one being X.tmp) --checkpoint X, clears or
     swaps this run's folders at its every write */
  size_t tl = strlen(target);
  if ((size_t)snprintf(other, sizeof other, "%s.lock", tmp) < sizeof other && lock_held(other))
    return mpl_errf(err, "--checkpoint %s: another run writes its checkpoints into %s (it holds %s), where this run "
                    "writes each checkpoint first: give this run another folder, or let that one end first", dir, tmp,
                    other);
  if (tl > 4 && !strcmp(target + tl - 4, ".tmp") && (size_t)snprintf(other, sizeof other, "%.*s.lock", (int)(tl - 4), target) < sizeof other &&
      lock_held(other))
    return mpl_errf(err, "--checkpoint %s: another run writes --checkpoint %.*s (it holds %s), whose checkpoints are "
                    "written first into this folder: give this run another folder, or let that one end first", dir,
                    (int)(tl - 4), target, other);
  if ((size_t)snprintf(lk->path, sizeof lk->path, "%s.lock", target) >= sizeof lk->path)
    return mpl_errf(err, "%s: path too long", target);
  for (int tries = 0; tries < 8; tries++) {
    bool rw = true;
    int fd = open(lk->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 && errno == EACCES) { /* another user's lock file: a read-only one locks too */
      rw = false;
      fd = open(lk->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0)
      return mpl_errf(err, "--checkpoint %s: cannot open %s, the lock that keeps two runs from writing one "
                      "checkpoint folder: %s", dir, lk->path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      char pid[32] = "";
      ssize_t n = e == EWOULDBLOCK ? pread(fd, pid, sizeof pid - 1, 0) : -1;
      close(fd);
      if (e != EWOULDBLOCK) return mpl_errf(err, "--checkpoint %s: cannot lock %s: %s", dir, lk->path, strerror(e));
      pid[n > 0 ? n : 0] = 0;
      pid[strcspn(pid, "\n")] = 0;
      return mpl_errf(err, "--checkpoint %s: another run%s%s%s writes its checkpoints there (it holds %s): give "
                      "this run another folder, or let that one end first", dir, pid[0] ? " (pid " : "", pid,
                      pid[0] ? ")" : "", lk->path);
    }
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(lk->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      if (rw) {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) { /* the pid is for messages only */
        }
      }
      lk->fd = fd;
      lk->owned = rw;
      return MPL_OK;
    }
    close(fd); /* removed or replaced by its holder as this run opened it: once more */
  }
  return mpl_errf(err, "--checkpoint %s: %s keeps being replaced; is another run starting and stopping there?", dir,
                  lk->path);
}

void mpl_ckpt_unlock(MplCkptLock *lk) {
  if (lk->fd < 0) return;
  if (lk->owned) unlink(lk->path); /* while held: a run waiting on this file retries on a new one */
  close(lk->fd);
  lk->fd = -1;
}

/* The new checkpoint keeps the permissions of the one it replaces: its folder's and each
 * file's (a private 0700 folder of 0600 files stays private). */
static void keep_modes(const char *tmp, const char *target) {
  struct stat sb;
  char a[4400], b[4400];
  if (stat(target, &sb) != 0 || !S_ISDIR(sb.st_mode)) return;
  (void)chmod(tmp, sb.st_mode & 07777);
  for (int i = 0; i < 3; i++) {
    snprintf(a, sizeof a, "%s/%s", target, ckpt_files[i]);
    snprintf(b, sizeof b, "%s/%s", tmp, ckpt_files[i]);
    if (stat(a, &sb) == 0 && S_ISREG(sb.st_mode)) (void)chmod(b, sb.st_mode & 07777);
  }
}

int mpl_ckpt_write_dir(const MplRun *r, const char *dir, int64_t next_step, MplErr *err) {
  char tmp[4096], path[4096];
  if (!mpl_run_is_lead(r)) { /* MPI: this process's parts go to world rank 0, which writes */
    const char *const *slots;
    int nslots = mpl_run_optim_slots(r, &slots);
    if (mpl_ckpt_save_params(r, dir, err) != MPL_OK) return MPL_ERR;
    return write_tensors(r, dir, slots, nslots, get_optim, err);
  }
  char target[4096];
  if (ckpt_target(dir, target, sizeof target, tmp, sizeof tmp, err) != MPL_OK) return MPL_ERR;
  if (!remove_dir(tmp)) return mpl_errf(err, "%s: holds files that are not a checkpoint's: not removed", tmp);
  if (mkdir(tmp, 0777) != 0) return mpl_errf(err, "%s: cannot create: %s", tmp, strerror(errno));
  const char *const *slots;
  int nslots = mpl_run_optim_slots(r, &slots);
  int st = join(path, sizeof path, tmp, "model.safetensors", err);
  if (st == MPL_OK) st = mpl_ckpt_save_params(r, path, err);
  if (st == MPL_OK) st = join(path, sizeof path, tmp, "optim.safetensors", err);
  if (st == MPL_OK) st = write_tensors(r, path, slots, nslots, get_optim, err);
  if (st == MPL_OK) st = write_state(r, tmp, next_step, err);
  if (st == MPL_OK) keep_modes(tmp, target);
  if (st == MPL_OK) st = swap_into_place(tmp, target, err);
  if (st != MPL_OK) remove_dir(tmp);
  return st;
}

static int set_optim(MplRun *r, int p, int slot, const float *in, MplErr *err) {
  return mpl_run_set_optim(r, p, slot, in, err);
}

/* A string field of state.json as an unsigned number (decimal or, with hex, base 16). */
static int state_u64(const MplJson *j, const char *key, bool hex, const char *path, uint64_t *out, MplErr *err) {
  const MplJson *v = mpl_json_get(j, key);
  if (!v || v->type != MPL_JSON_STR) return mpl_errf(err, "%s: missing \"%s\"", path, key);
  char *end;
  errno = 0;
  *out = strtoull(v->str, &end, hex ? 16 : 10);
  if (errno || *end || end == v->str) return mpl_errf(err, "%s: bad \"%s\"", path, key);
  return MPL_OK;
}

static int state_i64(const MplJson *j, const char *key, const char *path, int64_t *out, MplErr *err) {
  const MplJson *v = mpl_json_get(j, key);
  if (!v || v->type != MPL_JSON_NUM || !v->is_int || v->i < 0) return mpl_errf(err, "%s: missing or bad \"%s\"", path, key);
  *out = v->i;
  return MPL_OK;
}

/* What differs between a checkpoint of another identity and the job (pass 65: the refusal
 * named nothing): a param missing on either side or of another shape, from the checkpoint's
 * model.safetensors (whole shapes, as the job's wparams), else the optimizer, from the slots
 * optim.safetensors holds. Empty when the files say nothing more. */
static void identity_diff(const MplRun *r, const char *state_path, char *out, size_t n) {
  const Job *job = mpl_run_job(r);
  char dir[4096], path[4200], a[160], b[160];
  out[0] = 0;
  mpl_path_folder(state_path, dir, sizeof dir);
  MplSafetensors st = {0};
  MplErr ignored;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (mpl_st_open(&st, path, &ignored) != MPL_OK) return;
  int ndiff = 0, nfound = 0;
  for (int p = 0; p < job->nparams; p++) {
    const JobParam *jp = mpl_run_param(r, p);
    const MplStTensor *t = mpl_st_find(&st, jp->name);
    nfound += t != NULL;
    bool same = t && t->ndim == jp->rank;
    for (int i = 0; same && i < jp->rank; i++) same = t->shape[i] == jp->dims[i];
    if (same || ndiff++) continue;
    shape_str(b, sizeof b, jp->rank, jp->dims);
    if (!t) snprintf(out, n, "the job's param %s %s is not in the checkpoint", jp->name, b);
    else {
      shape_str(a, sizeof a, t->ndim, t->shape);
      snprintf(out, n, "param %s is %s in the job, %s in the checkpoint", jp->name, b, a);
    }
  }
  for (int i = 0; i < st.n && nfound < st.n; i++) {
    bool in_job = false;
    for (int p = 0; p < job->nparams && !in_job; p++) in_job = !strcmp(st.tensors[i].name, job->params[p].name);
    if (in_job || ndiff++) continue;
    shape_str(a, sizeof a, st.tensors[i].ndim, st.tensors[i].shape);
    snprintf(out, n, "the checkpoint's param %s %s is not in the job", st.tensors[i].name, a);
  }
  mpl_st_free(&st);
  if (ndiff > 1) {
    size_t k = strlen(out);
    snprintf(out + k, n - k, "; %d more difference%s", ndiff - 1, ndiff > 2 ? "s" : "");
  }
  if (ndiff) return;
  snprintf(path, sizeof path, "%s/optim.safetensors", dir);
  if (mpl_st_open(&st, path, &ignored) != MPL_OK) return;
  bool adam = false;
  for (int i = 0; i < st.n && !adam; i++) adam = !strncmp(st.tensors[i].name, "exp_avg.", 8);
  mpl_st_free(&st);
  if (adam != (job->train.optimizer == OPT_ADAMW))
    snprintf(out, n, "the checkpoint was trained with %s, the job trains with %s", adam ? "adamw" : "sgd",
             job->train.optimizer == OPT_ADAMW ? "adamw" : "sgd");
}

static int read_state(const MplRun *r, const char *path, int64_t *step, int64_t *pos, int64_t *bt, int64_t *total,
                      bool has_dig[2], uint64_t dig[2], MplErr *err) {
  const Job *job = mpl_run_job(r);
  uint8_t *text;
  size_t len;
  if (mpl_file_read_all(path, &text, &len, err) != MPL_OK) return MPL_ERR;
  MplJson j = {0};
  int st = mpl_json_parse((const char *)text, len, &j, err);
  mpl_free(text);
  if (st != MPL_OK && err) { /* name the file: "JSON: ..." alone does not say which */
    char why[sizeof err->msg];
    snprintf(why, sizeof why, "%s", err ? err->msg : "");
    st = mpl_errf(err, "%s: %s", path, why);
  }
  uint64_t seed = 0, ident = 0;
  if (st == MPL_OK && j.type != MPL_JSON_OBJ) st = mpl_errf(err, "%s: not a JSON object", path);
  int64_t format = 0;
  if (st == MPL_OK) st = state_i64(&j, "format", path, &format, err);
  if (st == MPL_OK && format != 1)
    st = mpl_errf(err, "%s: checkpoint format %lld; this mplrun reads format 1", path, (long long)format);
  if (st == MPL_OK) st = state_i64(&j, "step", path, step, err);
  if (st == MPL_OK) st = state_i64(&j, "data_pos", path, pos, err);
  *bt = 0; /* a divisor of data_pos (the batch*seq of the runs that read to it): a run of
              another batch or seq goes on from the position (a checkpoint written before it
              was kept has none) */
  if (st == MPL_OK && mpl_json_get(&j, "data_align")) st = state_i64(&j, "data_align", path, bt, err);
  if (st == MPL_OK && mpl_json_get(&j, "data_align") && *bt == 0) st = mpl_errf(err, "%s: bad \"data_align\"", path);
  *total = -1; /* the checkpointed run's length (kept since data_align) */
  if (st == MPL_OK && mpl_json_get(&j, "total_steps")) st = state_i64(&j, "total_steps", path, total, err);
  if (st == MPL_OK) st = state_u64(&j, "seed", false, path, &seed, err);
  if (st == MPL_OK) st = state_u64(&j, "identity", true, path, &ident, err);
  if (st == MPL_OK && ident != mpl_ckpt_identity(job)) {
    char why[600];
    identity_diff(r, path, why, sizeof why);
    st = mpl_errf(err, "%s: the checkpoint is of another model or optimizer (%s)", path,
                  why[0] ? why : "its params or optimizer differ");
  }
  if (st == MPL_OK && seed != job->train.seed)
    st = mpl_errf(err, "%s: the checkpoint was trained with seed %llu, the job has seed %llu", path,
                  (unsigned long long)seed, (unsigned long long)job->train.seed);
  for (int i = 0; i < 2 && st == MPL_OK; i++) /* (a checkpoint written before they were kept has none) */
    if ((has_dig[i] = mpl_json_get(&j, digest_keys[i]) != NULL)) st = state_u64(&j, digest_keys[i], true, path, &dig[i], err);
  mpl_json_free(&j);
  return st;
}

/* An sgd job with momentum resumed from a checkpoint of sgd without it (no momentum
 * tensor at all): *none is set, and the buffers start from the next gradient, as PyTorch's
 * SGD starts a momentum_buffer that its state lacks. Some momentum tensors but not all is
 * a damaged checkpoint, which read_tensors then refuses. */
static int no_momentum(MplRun *r, const char *path, bool *none, MplErr *err) {
  const Job *job = mpl_run_job(r);
  MplSafetensors st = {0};
  if (mpl_st_open(&st, path, err) != MPL_OK) return MPL_ERR;
  *none = true;
  for (int p = 0; p < job->nparams && *none; p++) {
    char *name = slot_name("momentum", mpl_run_param(r, p)->name);
    if (!name) {
      mpl_st_free(&st);
      return mpl_errf(err, "out of memory");
    }
    *none = !mpl_st_find(&st, name);
    mpl_free(name);
  }
  mpl_st_free(&st);
  return MPL_OK;
}

static int resume_from(MplRun *r, const char *dir, uint64_t *id, MplErr *err);

/* Under mpirun every process reads DIR itself: do they hold one checkpoint (state.json's
 * digest, which covers the tensor files' digests and the step)? A folder swapped between two
 * processes' reads, or a relative DIR under processes started in different folders, gave
 * them different steps, and the pipeline waited forever. Every process learns every digest,
 * so they stop together. */
static int agree_resumed(MplRun *r, const char *dir, uint64_t id, MplErr *err) {
  MplComm *c = mpl_run_opts(r)->comm;
  uint64_t *all = mpl_malloc(sizeof *all * (size_t)c->size);
  if (!all) return mpl_errf(err, "out of memory");
  int st = mpl_comm_mpi_allgather(c, &id, all, sizeof id), other = -1;
  for (int p = 1; st == MPL_OK && p < c->size && other < 0; p++)
    if (all[p] != all[0]) other = p;
  mpl_free(all);
  if (st != MPL_OK) return mpl_errf(err, "--resume %s: %s", dir, c->err.msg);
  if (other >= 0)
    return mpl_errf(err, "--resume %s: process %d read another checkpoint than process 0 (the folder was replaced "
                    "while they read it, or the path names other folders for them): not resumed; run again",
                    dir, other);
  return MPL_OK;
}

/* --resume DIR while another run may swap a new checkpoint into DIR (renameat2 exchanges
 * whole folders): the files are read through one descriptor of the folder
 * (/proc/self/fd/N/FILE), so they are one checkpoint's; if the folder was swapped away and
 * removed while it was read (a file gone), once more from the new one. Messages name DIR. */
int mpl_ckpt_resume(MplRun *r, const char *dir, MplErr *err) {
  uint64_t id = 0;
  if (stopped_swap("--resume", dir, err) != MPL_OK) return MPL_ERR;
  for (int tries = 0;; tries++) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char via[64];
    struct stat a, b;
    int st;
    if (fd < 0 || snprintf(via, sizeof via, "/proc/self/fd/%d", fd) >= (int)sizeof via || stat(via, &b) != 0 ||
        fstat(fd, &a) != 0 || a.st_ino != b.st_ino) { /* no /proc: by name */
      if (fd >= 0) close(fd);
      st = resume_from(r, dir, &id, err);
      return st == MPL_OK && mpl_run_opts(r)->comm ? agree_resumed(r, dir, id, err) : st;
    }
    st = resume_from(r, via, &id, err);
    bool swapped = st != MPL_OK && (stat(dir, &b) != 0 || b.st_ino != a.st_ino || b.st_dev != a.st_dev);
    close(fd);
    if (st == MPL_OK || !swapped || tries == 2) {
      char *at = strstr(err->msg, via), msg[sizeof err->msg];
      if (st != MPL_OK && at) { /* the user's folder, not the descriptor */
        snprintf(msg, sizeof msg, "%.*s%s%s", (int)(at - err->msg), err->msg, dir, at + strlen(via));
        memcpy(err->msg, msg, sizeof msg);
      }
      return st == MPL_OK && mpl_run_opts(r)->comm ? agree_resumed(r, dir, id, err) : st;
    }
  }
}

static int resume_from(MplRun *r, const char *dir, uint64_t *id, MplErr *err) {
  char path[4096];
  int64_t step, pos, bt, total;
  if (join(path, sizeof path, dir, "state.json", err) != MPL_OK) return MPL_ERR;
  bool has_dig[2];
  uint64_t dig[2], got;
  if (read_state(r, path, &step, &pos, &bt, &total, has_dig, dig, err) != MPL_OK || file_digest(path, id, err) != MPL_OK)
    return MPL_ERR;
  for (int i = 0; i < 2; i++) {
    if (!has_dig[i]) continue;
    if (join(path, sizeof path, dir, digest_files[i], err) != MPL_OK || file_digest(path, &got, err) != MPL_OK)
      return MPL_ERR;
    if (got != dig[i])
      return mpl_errf(err, "%s: its bytes differ from those the checkpoint wrote (state.json's %s): the checkpoint "
                      "is damaged, not resumed", path, digest_keys[i]);
  }
  if (join(path, sizeof path, dir, "model.safetensors", err) != MPL_OK) return MPL_ERR;
  if (mpl_ckpt_load_params(r, path, err) != MPL_OK) return MPL_ERR;
  const char *const *slots;
  int nslots = mpl_run_optim_slots(r, &slots);
  if (join(path, sizeof path, dir, "optim.safetensors", err) != MPL_OK) return MPL_ERR;
  bool restart = false;
  if (nslots == 1 && !strcmp(slots[0], "momentum") && no_momentum(r, path, &restart, err) != MPL_OK) return MPL_ERR;
  if (!restart && read_tensors(r, path, slots, nslots, set_optim, err) != MPL_OK) return MPL_ERR;
  if (mpl_run_restore(r, step, pos, bt, err) != MPL_OK) return MPL_ERR;
  if (restart) mpl_run_optim_restart(r);
  /* a cosine spans the run's length: resumed with another --steps, its learning rate jumps
     (pass 65: documented, and silent); said, once under MPI */
  const TrainConfig *tc = &mpl_run_job(r)->train;
  int64_t now = mpl_run_total_steps(r);
  if (tc->lr_schedule == LR_COSINE && total > 0 && total != now && step > 0 && step < now &&
      mpl_lr_at(tc, now, step) != mpl_lr_at(tc, total, step) && mpl_run_is_lead(r)) {
    char as[80];
    if (step < total) snprintf(as, sizeof as, "--steps %lld goes on as before", (long long)total);
    else snprintf(as, sizeof as, "the checkpointed run had ended its schedule");
    fprintf(stderr, "mplrun: warning: the cosine learning rate spans the run's steps: %lld in the checkpointed run, %lld "
            "in this one, so it goes from %.4g at step %lld to %.4g at step %lld (%s)\n", (long long)total, (long long)now,
            mpl_lr_at(tc, total, step - 1), (long long)step, mpl_lr_at(tc, now, step), (long long)step + 1, as);
  }
  return MPL_OK;
}
