/*
 * mpl.h — the runtime library's one public header, in sections named after the
 * files that define them:
 *   alloc.c        status codes, error messages, the host allocator, atomic file writes
 *   json.c         a tiny JSON reader (safetensors headers, profiles, tests of the trace output)
 *   profile.c      the profile file: mplrun --profile writes it, mplc --profile reads it
 *   safetensors.c  reading and writing .safetensors files (params, checkpoints)
 *   data.c         llm.c token files, the token loader, synthetic(n) examples
 *   jobfile.c      the byte-level container of the job file (header, sections, cursors)
 *   kcache.c       the compile cache on disk (what LLVM made of a job's kernels)
 *   gemm.c         the CPU matrix product (oneDNN's sgemm)
 *   trace.c        the Chrome trace writer and the JSON-lines metrics writer
 * and, included at the end, comm.h: the communicators (threads, MPI, CUDA) and their
 * interface.
 *
 * Conventions (every section): functions return MPL_OK or MPL_ERR and fill an MplErr
 * with a message naming the file and the problem; the library never exits; every host
 * allocation goes through mpl_malloc and friends; objects have _init/_free (or
 * _open/_free) pairs, and _free of a zeroed or half-initialised object is safe.
 */
#ifndef MPL_RUNTIME_H
#define MPL_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ==== alloc.c ========================================================= */

typedef enum MplStatus { MPL_OK = 0, MPL_ERR = -1 } MplStatus;

/* An error message; functions that can fail take an MplErr * (NULL: no message wanted). */
typedef struct MplErr {
  char msg[512];
} MplErr;

/* Formats the message into e (if non-NULL); returns MPL_ERR so callers can `return mpl_errf(...)`. */
int mpl_errf(MplErr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The host allocator: every block is 64-byte aligned and counted. n = 0 is allowed. */
void *mpl_malloc(size_t n);
void *mpl_calloc(size_t count, size_t size);
void *mpl_realloc(void *p, size_t n);
void mpl_free(void *p);
/* The bytes asked for when p was allocated (mpl_malloc's n; 0 for NULL). */
size_t mpl_alloc_size(const void *p);
/* A kB figure of a /proc file's line "KEY: N kB" (or of statm's first field, in pages,
 * when key is NULL); -1 when it cannot be read. */
int64_t mpl_proc_kb(const char *path, const char *key);
/* The bytes a run may plan to hold: 95% of the kernel's MemAvailable; -1 when it cannot be
 * read or MPL_NO_MEMORY_CHECK=1 turns the checks off (a machine whose swap is meant to be
 * used). The cpu device's arenas and the synthetic data are checked against it. */
double mpl_mem_plannable(void);
bool mpl_memory_check_off(void);
char *mpl_strdup(const char *s);

typedef struct MplAllocStats {
  int64_t live_bytes, live_blocks; /* currently allocated */
  int64_t total_blocks;            /* ever allocated (successfully) */
} MplAllocStats;
void mpl_alloc_stats(MplAllocStats *out);
/* Test hook: the n-th allocation from now fails (1 = the next one); 0 turns it off. */
void mpl_alloc_fail_nth(int64_t n);

/* The CPUs this process may run on (its affinity mask: taskset, a container's cpuset), at
 * least 1; the online count where the mask cannot be read. */
int mpl_cpus_usable(void);

/* Reads a whole file into *data (mpl_malloc'd, one extra NUL byte after *len bytes). */
/* A regular file opened for reading (a fifo, a device or a folder is refused at once,
 * never waited on): the fd or -1, the FILE or NULL, with the message in err. */
int mpl_open_regular(const char *path, MplErr *err);
FILE *mpl_fopen_regular(const char *path, MplErr *err);
int mpl_file_read_all(const char *path, uint8_t **data, size_t *len, MplErr *err);

/* An atomic file write: a temp file in the target's directory, then fflush, fsync,
 * rename over the target and fsync of the directory. Until commit, the target is
 * untouched; after an error the temp file is removed. */
typedef struct MplAtomicFile {
  char *path, *tmp;
  FILE *f;
} MplAtomicFile;
int mpl_afile_open(MplAtomicFile *af, const char *path, MplErr *err);
int mpl_afile_write(MplAtomicFile *af, const void *data, size_t n, MplErr *err);
int mpl_afile_commit(MplAtomicFile *af, MplErr *err); /* also frees af */
void mpl_afile_abort(MplAtomicFile *af);              /* removes the temp file, frees af */
/* fsync of the directory holding path (a rename into it made durable); -1 if it fails. */
int mpl_fsync_dir(const char *path);
/* The folder holding path ("." for a bare name, "/" for one at the root) into out. */
void mpl_path_folder(const char *path, char *out, size_t n);
/* Opens /dev/null on any of descriptors 0, 1 and 2 that is closed, so that no file the
 * program opens becomes its standard output (a metrics file taking the progress lines). */
void mpl_std_fds_open(void);
/* At the end of a program: if anything written to stdout was lost (a full disk, /dev/full, a
 * closed pipe), says so on stderr ("PROG: error: ...") and returns 1; else 0. */
int mpl_stdout_check(const char *prog);

/* ==== kcache.c ======================================================== */

/* The compile cache (kcache.c): the output a compiler of KIND ("jit", "opt", "ptx") made from
 * input `in` in context `ctx` (a string naming the compiler's version, target and
 * options). get: the output (mpl_malloc'd, *outlen bytes) or NULL on a miss; put: keeps
 * it. Neither ever fails a caller: a cache that is off or cannot be used is a miss. */
uint8_t *mpl_kcache_get(const char *kind, const char *ctx, const void *in, size_t inlen, size_t *outlen);
/* get, and on a miss the entry's lock (*lock, -1 when none): one process compiles an entry
 * that several need at once (an mpirun's, or its threads'); the others wait for it (up to
 * MPL_CACHE_WAIT seconds, default 600) and take its entry. The caller puts the output,
 * then gives the lock to mpl_kcache_unlock. */
uint8_t *mpl_kcache_get_locked(const char *kind, const char *ctx, const void *in, size_t inlen, size_t *outlen,
                               int *lock);
void mpl_kcache_unlock(int lock);
void mpl_kcache_put(const char *kind, const char *ctx, const void *in, size_t inlen, const void *out, size_t outlen);
/* For a context: the file that holds the code at addr (a library, or the executable it is
 * linked into) with its size and time, so that an update of a compiler's library (a patch
 * release of NVRTC or of a shared LLVM) is another context. */
void mpl_kcache_lib_id(const void *addr, char *out, size_t n);
/* This process's hits, misses and entries written. */
void mpl_kcache_stats(int64_t *hits, int64_t *misses, int64_t *puts);

/* ==== json.c ========================================================== */

typedef enum MplJsonType {
  MPL_JSON_NULL, MPL_JSON_BOOL, MPL_JSON_NUM, MPL_JSON_STR, MPL_JSON_ARR, MPL_JSON_OBJ
} MplJsonType;

typedef struct MplJson {
  MplJsonType type;
  bool b;
  double num;
  bool is_int;          /* a number written as an integer that fits int64 */
  int64_t i;            /* its exact value */
  char *str;            /* STR: the decoded string (NUL-terminated, may contain \0 escapes) */
  size_t len;           /* STR: its length */
  int n;                /* ARR, OBJ: element count */
  struct MplJson *items; /* ARR, OBJ: the elements, in file order */
  char **keys;          /* OBJ: the keys, in file order */
} MplJson;

/* Parses exactly one JSON value (surrounding whitespace allowed); nesting is limited to 64. */
int mpl_json_parse(const char *text, size_t len, MplJson *out, MplErr *err);
/* The same, refusing more than max_values values in all (0: no limit): a value costs a
 * tree node of tens of bytes, 2 bytes of text ("0,") can ask for one. */
int mpl_json_parse_max(const char *text, size_t len, size_t max_values, MplJson *out, MplErr *err);
void mpl_json_free(MplJson *v);
/* The value of key in obj (the first one), or NULL. */
const MplJson *mpl_json_get(const MplJson *obj, const char *key);

/* ==== profile.c ======================================================= */

/* A profile: what mplrun --profile measured of a job, per pipeline rank and per forward op
 * of the graph (by the identities of the job's OPID section), averaged over the steps after
 * the first; mplc --profile reads it back. A JSON file (MPL_PROFILE_FORMAT):
 *   {"format": "mpl-profile 1", "model": ..., "source": ..., "mesh": {"dp", "pp", "tp"},
 *    "schedule", "precision", "microbatches", "steps", "ranks": [...], "ops": [...]}
 * Times are seconds per micro-batch (ops) or per step (ranks), each at most
 * MPL_PROFILE_MAX_S; a rank's speed in [1e-6, 1e6] as --device-speed's; "precision" (the
 * job's: f32, tf32, bf16) may be missing (a profile written before 2026-12-06's fourteenth
 * session). */
#define MPL_PROFILE_FORMAT "mpl-profile 1"
#define MPL_PROFILE_MAX_S 1e6 /* (11 days: past it a time is damage, and sums of them overflow) */

typedef struct MplProfileRank {
  char *device;         /* the device kind it ran on: "cpu", "cuda" */
  int threads;          /* cpu: --threads */
  double speed;         /* the device speed the job was compiled for (mplc --device-speed; 1) */
  double gemm_gflops;   /* measured GEMM rate: its products' FLOPs over their time (0: none) */
  double busy_s, wall_s, compute_s, msg_s, update_s; /* per step, as the closing report */
  double update_elems;  /* param elements its update phase updates per step; -1: not in the
                           file (a profile written before 2026-12-05's sixth session) */
} MplProfileRank;

typedef struct MplProfileOp {
  char *key, *label;    /* the op's identity and where it is (JobOpId) */
  int rank;             /* the pipeline rank that ran it */
  double fwd_s, bwd_b_s, bwd_w_s; /* its forward, and the input- and weight-gradient work derived
                                     from it, per micro-batch */
} MplProfileOp;

typedef struct MplProfile {
  char *model, *source, *schedule;
  char *precision;      /* "" when the file has none */
  int dp, pp, tp, microbatches, steps;
  int nranks;           /* pp */
  MplProfileRank *ranks;
  int nops;
  MplProfileOp *ops;
} MplProfile;

/* Writes p as JSON, atomically. */
int mpl_profile_write(const MplProfile *p, const char *path, MplErr *err);
/* Reads and checks a profile (format, counts, every time finite and >= 0, ranks in range). */
int mpl_profile_read(const char *path, MplProfile *p, MplErr *err);
void mpl_profile_free(MplProfile *p);

/* ==== safetensors.c =================================================== */

#define MPL_ST_MAX_DIM 8
#define MPL_ST_MAX_HEADER (100u << 20) /* 100 MB, as the reference implementation */

/* The float types a param is read from, then the file format's other types, whose tensors
 * are validated and skipped (a checkpoint's integer buffers). */
typedef enum MplStDtype {
  MPL_ST_F32, MPL_ST_F16, MPL_ST_BF16,
  MPL_ST_F64, MPL_ST_I64, MPL_ST_U64, MPL_ST_I32, MPL_ST_U32, MPL_ST_I16, MPL_ST_U16,
  MPL_ST_I8, MPL_ST_U8, MPL_ST_BOOL, MPL_ST_F8_E4M3, MPL_ST_F8_E5M2,
  MPL_ST_OTHER, /* a type the format gained after this reader (F8_E8M0, F4, C64, ...): its
                   bytes are not checked against its shape, and it is never read */
  MPL_ST__COUNT
} MplStDtype;

typedef struct MplStTensor {
  char *name;
  MplStDtype dtype;
  char dtype_str[16];  /* the header's dtype, as written (the first 15 bytes) */
  int ndim;
  int64_t shape[MPL_ST_MAX_DIM];
  int64_t numel;
  uint64_t begin, end; /* byte offsets in the data section */
} MplStTensor;

typedef struct MplSafetensors {
  char *path;
  FILE *f;
  uint64_t data_start; /* 8 + header length */
  int n;
  MplStTensor *tensors; /* sorted by name */
  int nmeta;
  char **meta_keys, **meta_values; /* __metadata__, sorted by key */
} MplSafetensors;

int mpl_st_open(MplSafetensors *st, const char *path, MplErr *err);
void mpl_st_free(MplSafetensors *st);
const MplStTensor *mpl_st_find(const MplSafetensors *st, const char *name);
const char *mpl_st_meta(const MplSafetensors *st, const char *key); /* NULL if absent */
/* Reads t's data converted to f32 into out (t->numel floats); an error for a tensor not of
 * F32, F16 or BF16. */
int mpl_st_read_f32(const MplSafetensors *st, const MplStTensor *t, float *out, MplErr *err);

typedef struct MplStEntry {
  const char *name;
  int ndim;
  const int64_t *shape;
  const float *data;
  /* data NULL: fill(ctx, index, err) gives the tensor's values when the writer comes to it
     (in name order; the pointer need stay good only until the next call), NULL on an error */
  const float *(*fill)(void *ctx, int index, MplErr *err);
  void *ctx;
  int index;
} MplStEntry;
/* Writes an F32 file atomically; entries are written in name order (any input order);
 * duplicate names are an error. meta: nmeta key/value string pairs for __metadata__. */
int mpl_st_write_f32(const char *path, const MplStEntry *entries, int n,
                     const char *const *meta_keys, const char *const *meta_values, int nmeta,
                     MplErr *err);

/* ==== data.c ========================================================== */

#define MPL_TOKENS_MAGIC 20240520
#define MPL_TOKENS_VERSION 1

typedef struct MplTokens {
  char *path;
  const uint16_t *tokens; /* in the file's read-only mapping (map, map_len) */
  void *map;
  size_t map_len;
  int64_t ntok;
  int max_token; /* the largest token id in the file (-1 if empty) */
} MplTokens;

int mpl_tokens_open(MplTokens *t, const char *path, MplErr *err);
void mpl_tokens_free(MplTokens *t);
/* Writes an llm.c token file (for tests and examples). */
int mpl_tokens_write(const char *path, const uint16_t *tokens, int64_t ntok, MplErr *err);

/* The loader: a position in the token stream, advanced by batch*seq per step. */
typedef struct MplLoader {
  const MplTokens *tok;
  int64_t batch, seq;
  int64_t pos;   /* where the next step's batch starts */
  int64_t align; /* a divisor of every position this loader has been at since its start (or
                    its last wrap): batch*seq, or its gcd with a checkpoint's where it resumed
                    one of another batch; state.json keeps it beside the position */
} MplLoader;

/* Fails (with a message) if the file holds fewer than batch*seq + 1 tokens. */
int mpl_loader_init(MplLoader *l, const MplTokens *t, int64_t batch, int64_t seq, MplErr *err);
/* The position at which step `step` (0-based) starts, from position 0 at step 0. */
int64_t mpl_loader_pos_at_step(const MplLoader *l, int64_t step);
/* Sets the position (a value from mpl_loader_tell or _pos_at_step of a loader whose positions
 * were multiples of pos_align, its mpl_loader_align; 0: this one's batch*seq); fails if it
 * is no such position within this file. A batch of this loader that does not fit from there
 * starts at the file's beginning. */
int mpl_loader_seek(MplLoader *l, int64_t pos, int64_t pos_align, MplErr *err);
int64_t mpl_loader_tell(const MplLoader *l);
int64_t mpl_loader_align(const MplLoader *l);
/* Rows [row0, row0+nrows) of the current step's [batch, seq] idx and targets (either may be
 * NULL), as int32; does not advance. Micro-batch j of size r is row0 = j*r, nrows = r. */
void mpl_loader_rows(const MplLoader *l, int64_t row0, int64_t nrows, int32_t *idx, int32_t *targets);
/* Moves to the next step's position (wrapping to 0 when fewer than batch*seq+1 remain). */
void mpl_loader_advance(MplLoader *l);

/* synthetic(n): n examples of the model's inputs, drawn once from the seed. */
typedef enum MplSynthKind { MPL_SYNTH_F32, MPL_SYNTH_I32, MPL_SYNTH_BOOL } MplSynthKind;
typedef struct MplSynthInput {
  MplSynthKind kind;
  int64_t row_elems; /* elements of one example (the input's shape without the batch dim) */
  int32_t hi;        /* I32: values uniform in [0, hi) (hi >= 1) */
} MplSynthInput;

typedef struct MplSynth {
  int64_t n;
  int ninputs;
  MplSynthInput *inputs;
  void **data; /* per input: n * row_elems values (float, int32, or one byte for a bool) */
} MplSynth;

/* F32 inputs are normal(0, 1), I32 inputs uniform in [0, hi), BOOL inputs 0 or 1 with
 * probability 1/2; input i uses its own stream. */
int mpl_synth_init(MplSynth *s, int64_t n, const MplSynthInput *inputs, int ninputs,
                   uint64_t seed, MplErr *err);
void mpl_synth_free(MplSynth *s);
/* Rows [row0, row0+nrows) of input `input` at step `step`, with rows_per_step rows per step:
 * row k is example (step*rows_per_step + k) mod n. out: nrows*row_elems floats, int32 or bytes. */
void mpl_synth_rows(const MplSynth *s, int input, int64_t step, int64_t rows_per_step,
                    int64_t row0, int64_t nrows, void *out);

/* ==== jobfile.c ======================================================= */

#define MPL_JOB_MAGIC "MPLJOB\0\1"
#define MPL_JOB_VERSION 2u /* 2: kernels take a fourth scalar, the tp index (CUDA: before n_outer) */
#define MPL_JOB_HEADER 32         /* magic 8, version 4, flags 4, size 8, checksum 8 */
#define MPL_JOB_MAX_STR (1u << 24) /* the longest string a cursor accepts */
#define MPL_JOB_TAG(a, b, c, d) \
  ((uint32_t)(uint8_t)(a) | (uint32_t)(uint8_t)(b) << 8 | (uint32_t)(uint8_t)(c) << 16 | (uint32_t)(uint8_t)(d) << 24)

uint64_t mpl_fnv1a64(const void *data, size_t n);
/* FNV-1a over 8-byte words (a GiB in about a second), then the bytes left, continuing h
 * (MPL_FNV_OFFSET to start): file digests; not mpl_fnv1a64's values. */
#define MPL_FNV_OFFSET 0xCBF29CE484222325ull
uint64_t mpl_fnv1a64_words(uint64_t h, const void *data, size_t n);

/* The writer: a growable little-endian byte buffer. Errors (out of memory, unbalanced
 * sections) are sticky and reported by mpl_jw_save. */
typedef struct MplJobWriter {
  uint8_t *buf;
  size_t len, cap;
  size_t section; /* offset of the open section's header, or 0 if none */
  bool failed;
  MplErr err;
} MplJobWriter;

void mpl_jw_init(MplJobWriter *w);
void mpl_jw_free(MplJobWriter *w);
void mpl_jw_u8(MplJobWriter *w, uint8_t v);
void mpl_jw_u32(MplJobWriter *w, uint32_t v);
void mpl_jw_u64(MplJobWriter *w, uint64_t v);
void mpl_jw_i64(MplJobWriter *w, int64_t v);
void mpl_jw_f64(MplJobWriter *w, double v);
void mpl_jw_bytes(MplJobWriter *w, const void *p, size_t n);
void mpl_jw_str(MplJobWriter *w, const char *s); /* u32 length, bytes, NUL */
void mpl_jw_begin(MplJobWriter *w, uint32_t tag);
void mpl_jw_end(MplJobWriter *w);
/* Fills in the header (flags, size, checksum); afterwards w->buf[0..len) is the file. */
int mpl_jw_finish(MplJobWriter *w, uint32_t flags, MplErr *err);
int mpl_jw_save(MplJobWriter *w, const char *path, uint32_t flags, MplErr *err); /* finish + atomic write */

typedef struct MplJobSection {
  uint32_t tag;
  const uint8_t *data;
  uint64_t len;
} MplJobSection;

typedef struct MplJob {
  uint8_t *bytes; /* the whole file */
  size_t len;
  uint32_t version, flags;
  int nsections;
  MplJobSection *sections;
} MplJob;

/* Validates magic, version, size, checksum and the section framing. parse copies `data`. */
int mpl_job_load(MplJob *job, const char *path, MplErr *err);
int mpl_job_parse(MplJob *job, const void *data, size_t len, const char *what, MplErr *err);
void mpl_job_free(MplJob *job);
/* The first section with this tag, or NULL. */
const MplJobSection *mpl_job_section(const MplJob *job, uint32_t tag);
/* "ABCD" from a tag (buf of at least 5 bytes; unprintable bytes as '?'). */
char *mpl_job_tag_str(uint32_t tag, char *buf);

/* A cursor over one section: reading past the end, or a malformed value, sets `failed`
 * and a message (the first one is kept) and returns 0 / NULL from then on. */
typedef struct MplCursor {
  const uint8_t *p;
  uint64_t len, pos;
  uint32_t tag;
  bool failed;
  MplErr err;
} MplCursor;

void mpl_cur_init(MplCursor *c, const MplJobSection *s);
uint8_t mpl_cur_u8(MplCursor *c);
uint32_t mpl_cur_u32(MplCursor *c);
uint64_t mpl_cur_u64(MplCursor *c);
int64_t mpl_cur_i64(MplCursor *c);
double mpl_cur_f64(MplCursor *c);
/* A NUL-terminated string inside the job's bytes (valid while the job lives). */
const char *mpl_cur_str(MplCursor *c);
const void *mpl_cur_bytes(MplCursor *c, uint64_t n);
/* A u32 count that must be <= max and leave at least count*min_elem_bytes bytes to read. */
uint32_t mpl_cur_count(MplCursor *c, uint32_t max, uint32_t min_elem_bytes, const char *what);
/* Marks the cursor failed with a message (for the parser on top: "bad op kind 77"). */
void mpl_cur_fail(MplCursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool mpl_cur_at_end(const MplCursor *c);

/* ==== gemm.c ========================================================== */

/* Row-major C = alpha * op(A) * op(B) + beta * C, op(A) [M, K], op(B) [K, N] (like dnnl_sgemm).
 * beta = 0 ignores C's old contents (NaN included). Deterministic: the same call with the
 * same thread count gives the same bits. */
int mpl_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc);
/* batch products; matrix i uses A + i*sa, B + i*sb, C + i*sc (sa or sb = 0: broadcast). */
int mpl_gemm_f32_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                         const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb,
                         int64_t sb, float beta, float *C, int64_t ldc, int64_t sc, int64_t batch);
/* The number of threads GEMMs called from this thread use (OpenMP's per-thread setting). */
void mpl_gemm_set_threads(int n);
/* precision = bf16's products (JobStep.prec PREC_BF16): A and B hold bf16 values in f32
 * arrays, C is f32. Where hw (a CPU with avx512_bf16 and oneDNN's bf16 GEMM, found at run
 * time; MPL_CPU_BF16=0 says no) and the shape pays for it, A and B are converted to bf16
 * (exactly) in buf and multiplied in bf16 units with f32 accumulation; otherwise
 * mpl_gemm_f32_batched, equal up to the order of the sums. Deterministic like it. */
typedef struct MplGemmBf16 {
  bool hw;
  uint16_t *buf; /* the converted operands, grown as needed */
  size_t cap;
  float *wide;   /* mpl_gemm_bf16s_batched without bf16 units: its operands widened to f32 */
  size_t wcap;
  uint64_t units; /* products run in bf16 units so far (MPL_CPU_PROFILE prints it) */
} MplGemmBf16;
bool mpl_gemm_bf16_hw(void);
void mpl_gemm_bf16_init(MplGemmBf16 *w);
void mpl_gemm_bf16_free(MplGemmBf16 *w);
int mpl_gemm_bf16_batched(MplGemmBf16 *w, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb,
                          float beta, float *C, int64_t ldc, int64_t sc, int64_t batch);
/* The same product of operands stored as bf16 (2 bytes each: JobStep.in16): in bf16 units
 * where mpl_gemm_bf16_batched would use them (hw, dense, a shape that pays), with nothing to
 * convert; else widened to f32 (exactly) and through mpl_gemm_f32_batched: bit for bit what
 * mpl_gemm_bf16_batched gives for the same values in f32 arrays. */
int mpl_gemm_bf16s_batched(MplGemmBf16 *w, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const uint16_t *A, int64_t lda, int64_t sa, const uint16_t *B, int64_t ldb, int64_t sb,
                           float beta, float *C, int64_t ldc, int64_t sc, int64_t batch);
/* n bf16 values as the f32 values they are (in sdpa_cpu.c, which every build has). */
void mpl_bf16_widen(const uint16_t *x, float *y, int64_t n);
/* The nearest bf16 value of x (as an f32), ties to even; a NaN stays a NaN (fuse_emit.c's
 * bits). */
static inline float mpl_bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if (x != x) u = (u | 0x00400000u) & 0xFFFF0000u;
  else u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  memcpy(&x, &u, 4);
  return x;
}

/* ==== trace.c ========================================================= */

typedef struct MplTraceEvent {
  char name[48];
  char cat[16];
  double ts, dur; /* microseconds */
} MplTraceEvent;

typedef struct MplTraceRank {
  MplTraceEvent *ev;
  int64_t n, cap;
  bool oom; /* an event was dropped for lack of memory */
} MplTraceRank;

/* A Chrome trace: each rank records into its own buffer (no locks; a rank is one thread),
 * and mpl_trace_write writes them all at the end, one row (tid) per rank. */
typedef struct MplTrace {
  int nranks;
  MplTraceRank *ranks;
  uint64_t t0_ns; /* the monotonic clock at init */
  int64_t real0_ns; /* the wall clock then: under mpirun, world rank 0 puts each process's
                       events on its own time base by the difference (one host's processes
                       share the wall clock; hosts, as far as their clocks agree) */
  int tp, pp;     /* the mesh, for the rows' names (0: unknown) */
} MplTrace;

int mpl_trace_init(MplTrace *t, int nranks, MplErr *err);
/* The ranks are a dp x tp x pp mesh (world rank = (dp * tp + tp index) * pp + pp index): when
 * it has more than one pipeline (dp * tp > 1) the rows are named "rank W (dp D, pp P, tp T)". */
void mpl_trace_set_mesh(MplTrace *t, int tp, int pp);
void mpl_trace_free(MplTrace *t);
/* Microseconds since mpl_trace_init, from a monotonic clock. */
double mpl_trace_now(const MplTrace *t);
/* Records a complete event ("ph":"X") of rank; name and cat are copied (truncated). */
void mpl_trace_event(MplTrace *t, int rank, const char *name, const char *cat, double ts, double dur);
int mpl_trace_write(const MplTrace *t, const char *path, MplErr *err);

/* JSON-lines metrics: one object per line, flushed per line. */
typedef struct MplMetrics {
  FILE *f;
  char *path;
} MplMetrics;

/* keep > 0 (a resumed run, at step keep): an existing file keeps its lines of steps 1 ..
 * keep, and the run's lines follow them; else the file starts afresh. */
int mpl_metrics_open(MplMetrics *m, const char *path, int64_t keep, MplErr *err);
/* {"k0": v0, ...}; integral values print without a fraction, non-finite ones as null. */
int mpl_metrics_line(MplMetrics *m, const char *const *keys, const double *vals, int n, MplErr *err);
void mpl_metrics_close(MplMetrics *m);

#include "comm.h" /* the communicators: after MplErr, which they use */

#endif
