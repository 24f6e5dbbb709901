/*
 * jit_cpu.c — loads a job's LLVM bitcode and compiles it for the host CPU (host CPU name
 * and features, aggressive code generation) into an object that ORC's LLJIT links into
 * the process. The object is kept in the compile cache (kcache.c), under the bitcode and
 * what else the code depends on (LLVM's version, the host's CPU and features, the
 * settings): a job loaded again takes it from there, without LLVM's code generation (for
 * tests/e2e/small_gpt.mpl, one step: 0.39 s without it, 0.08 s with it, on a 2-core Xeon).
 *
 * Invariants: LLVM's native target is initialised once per process (llvm_host.c);
 * each MplJit owns one LLJIT and the code it made; symbols the kernels call are
 * the libm functions defined below by address (so they resolve even where the
 * process does not export them), then anything else from the process (memset,
 * memcpy that the optimiser may introduce).
 */
#include <llvm-c/Analysis.h>
#include <llvm-c/BitReader.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/ErrorHandling.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jit_cpu.h" /* after LLVM's headers: it then declares mpl_llvm_host_machine */
#include "mpl.h"

struct MplJit {
  LLVMOrcLLJITRef jit;
};

/* The libm functions generated kernels may call. */
#define JIT_LIBM(X) X(expf) X(logf) X(tanhf) X(powf) X(sqrtf) X(fabsf) X(exp) X(log) X(tanh) X(pow) \
  X(sinf) X(cosf) X(floorf) X(fmodf)

static int take_error(LLVMErrorRef e, char *err, size_t errlen, const char *what) {
  char *m = LLVMGetErrorMessage(e);
  snprintf(err, errlen, "jit: %s: %s", what, m);
  LLVMDisposeErrorMessage(m);
  return -1;
}

static int define_libm(LLVMOrcLLJITRef j, char *err, size_t errlen) {
  static const struct { const char *name; void *addr; } syms[] = {
#define X(f) {#f, (void *)(uintptr_t)&f},
      JIT_LIBM(X)
#undef X
  };
  enum { N = sizeof syms / sizeof syms[0] };
  LLVMJITCSymbolMapPair pairs[N];
  for (int i = 0; i < N; i++) {
    pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j, syms[i].name);
    pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)syms[i].addr;
    pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
    pairs[i].Sym.Flags.TargetFlags = 0;
  }
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j);
  LLVMErrorRef e = LLVMOrcJITDylibDefine(jd, LLVMOrcAbsoluteSymbols(pairs, N));
  if (e) return take_error(e, err, errlen, "defining libm symbols");
  LLVMOrcDefinitionGeneratorRef gen;
  e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j), NULL, NULL);
  if (e) return take_error(e, err, errlen, "process symbols");
  LLVMOrcJITDylibAddGenerator(jd, gen);
  return 0;
}

static LLVMOrcLLJITRef make_jit(char *err, size_t errlen) {
  LLVMTargetMachineRef tm = mpl_llvm_host_machine(LLVMRelocDefault, LLVMCodeModelJITDefault, err, errlen);
  if (!tm) return NULL;
  LLVMOrcLLJITBuilderRef b = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(b, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
  LLVMOrcLLJITRef j = NULL;
  LLVMErrorRef e = LLVMOrcCreateLLJIT(&j, b); /* takes the builder */
  if (e) {
    take_error(e, err, errlen, "creating the JIT");
    return NULL;
  }
  if (define_libm(j, err, errlen)) {
    LLVMOrcDisposeLLJIT(j);
    return NULL;
  }
  return j;
}

/* LLVM's fatal errors while it reads a job's bitcode (a damaged job whose checksum was
 * made to match: "Invalid abbrev number", a type mismatch in a constant table) end the
 * process; this says so as every other error does, instead of LLVM's abort. */
static void bitcode_fatal(const char *reason) {
  fprintf(stderr, "mplrun: error: the job's CPU kernels cannot be read (LLVM: %s): the job file is damaged; "
                  "compile it again with mplc\n", reason ? reason : "?");
  fflush(stderr);
  _exit(1);
}

/* LLVM 14's bitcode reader trusts some records it reads: a flipped bit in a GEP's types
 * (found on an Intel host, whose target attributes moved the flips) makes it dereference
 * null. While it reads, a fault says what every other damaged job says and exits 1, on a
 * stack of its own so that a runaway recursion in the reader is caught too; the handlers
 * before are put back after. */
static const char fault_msg[] =
    "mplrun: error: the job's CPU kernels cannot be read (LLVM's bitcode reader faulted): the job file is "
    "damaged; compile it again with mplc\n";
static void bitcode_fault(int sig) {
  (void)sig;
  ssize_t w = write(2, fault_msg, sizeof fault_msg - 1);
  (void)w;
  _exit(1);
}

enum { N_FAULT_SIGS = 5 };
static const int fault_sigs[N_FAULT_SIGS] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
typedef struct {
  struct sigaction old[N_FAULT_SIGS];
  stack_t old_stack;
  void *stack;
} FaultGuard;

static void fault_guard_on(FaultGuard *g) {
  size_t sz = 1 << 16;
  g->stack = malloc(sz);
  stack_t st = {.ss_sp = g->stack, .ss_size = sz, .ss_flags = 0};
  if (!g->stack || sigaltstack(&st, &g->old_stack) != 0) {
    free(g->stack);
    g->stack = NULL;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = bitcode_fault;
  sa.sa_flags = g->stack ? SA_ONSTACK : 0;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < N_FAULT_SIGS; i++) sigaction(fault_sigs[i], &sa, &g->old[i]);
}

static void fault_guard_off(FaultGuard *g) {
  for (int i = 0; i < N_FAULT_SIGS; i++) sigaction(fault_sigs[i], &g->old[i], NULL);
  if (g->stack) {
    sigaltstack(&g->old_stack, NULL);
    free(g->stack);
  }
}

/* The reader's diagnostics ("Invalid record"), kept for the error message instead of
 * LLVM printing them to stderr. */
static void bitcode_diag(LLVMDiagnosticInfoRef di, void *ctx) {
  char *d = LLVMGetDiagInfoDescription(di), *buf = ctx;
  if (d && !buf[0]) snprintf(buf, 256, "%s", d);
  if (d) LLVMDisposeMessage(d);
}

/* Is a module's triple for this machine's architecture (its first component: x86_64,
 * aarch64, ...)? An empty triple (none given) is taken as the host's. */
static bool same_arch(const char *triple) {
  char *host = LLVMGetDefaultTargetTriple();
  size_t n = strcspn(host, "-");
  bool same = !*triple || (strncmp(triple, host, n) == 0 && (triple[n] == '-' || !triple[n]));
  LLVMDisposeMessage(host);
  return same;
}

/* Parses and verifies the bitcode into a module of context ctx; NULL and the message. */
static LLVMModuleRef parse_module(LLVMContextRef ctx, const void *bc, size_t len, char *err, size_t errlen) {
  LLVMInstallFatalErrorHandler(bitcode_fatal);
  char diag[256] = "";
  LLVMContextSetDiagnosticHandler(ctx, bitcode_diag, diag);
  LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRangeCopy(bc, len, "mpl_kernels");
  LLVMModuleRef mod = NULL;
  char *msg = NULL;
  FaultGuard guard;
  fault_guard_on(&guard);
  bool bad = LLVMParseBitcodeInContext2(ctx, mb, &mod);
  LLVMDisposeMemoryBuffer(mb);
  if (bad) {
    snprintf(err, errlen, "jit: the kernels' bitcode does not parse%s%s (the job file is damaged; compile it again)",
             diag[0] ? ": " : "", diag);
  } else if (!same_arch(LLVMGetTarget(mod))) { /* the JIT refuses its data layout (and code for another ISA) */
    char *host = LLVMGetDefaultTargetTriple();
    snprintf(err, errlen, "jit: the job's kernels were compiled for %s, and this machine is %s: compile the job "
             "again with mplc on a machine like this one", LLVMGetTarget(mod), host);
    LLVMDisposeMessage(host);
    bad = true;
  } else if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    snprintf(err, errlen, "jit: the kernels' module is invalid: %s", msg ? msg : "?");
    bad = true;
  }
  fault_guard_off(&guard);
  if (msg) LLVMDisposeMessage(msg);
  LLVMResetFatalErrorHandler();
  LLVMContextSetDiagnosticHandler(ctx, NULL, NULL);
  if (bad && mod) LLVMDisposeModule(mod);
  return bad ? NULL : mod;
}

/* The bitcode compiled to an object file for the host (the JIT's code model): mpl_malloc'd
 * bytes in *obj, or -1 and the message. */
static int compile_object(const void *bc, size_t len, void **obj, size_t *olen, char *err, size_t errlen) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = parse_module(ctx, bc, len, err, errlen);
  if (!mod) {
    LLVMContextDispose(ctx);
    return -1;
  }
  int rc = -1;
  LLVMTargetMachineRef tm = mpl_llvm_host_machine(LLVMRelocDefault, LLVMCodeModelJITDefault, err, errlen);
  LLVMMemoryBufferRef mb = NULL;
  char *msg = NULL;
  /* a data layout other than the host's (another machine's job: its pointers' width, its
     byte order) would be compiled as if it were the host's */
  LLVMTargetDataRef td = tm ? LLVMCreateTargetDataLayout(tm) : NULL;
  char *host_layout = td ? LLVMCopyStringRepOfTargetData(td) : NULL;
  if (td) LLVMDisposeTargetData(td);
  if (host_layout && strcmp(host_layout, LLVMGetDataLayoutStr(mod)) != 0) {
    snprintf(err, errlen, "jit: the job's kernels have the data layout %s, and this machine's is %s: compile the job "
             "again with mplc on a machine like this one", LLVMGetDataLayoutStr(mod), host_layout);
  } else if (tm && LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &msg, &mb)) {
    snprintf(err, errlen, "jit: code generation: %s", msg ? msg : "?");
  } else if (tm) {
    *olen = LLVMGetBufferSize(mb);
    *obj = mpl_malloc(*olen ? *olen : 1); /* (as the cache's) */
    if (*obj) memcpy(*obj, LLVMGetBufferStart(mb), *olen), rc = 0;
    else snprintf(err, errlen, "jit: out of memory");
    LLVMDisposeMemoryBuffer(mb);
  }
  if (msg) LLVMDisposeMessage(msg);
  if (host_layout) LLVMDisposeMessage(host_layout);
  if (tm) LLVMDisposeTargetMachine(tm);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  return rc;
}

MplJit *mpl_jit_load(const void *bc, size_t len, char *err, size_t errlen) {
  mpl_llvm_init_native();
  if (!bc || !len) {
    snprintf(err, errlen, "jit: empty bitcode");
    return NULL;
  }
  /* the machine code: the compile cache's, made from these very bytes before, or made now */
  char *ctx = mpl_llvm_cache_context("mpl jit 1: O3, reloc default, code model JIT"); /* make_jit's */
  size_t olen = 0;
  int lock = -1; /* (the processes of an mpirun: one compiles, the others take its entry) */
  void *obj = ctx ? mpl_kcache_get_locked("jit", ctx, bc, len, &olen, &lock) : NULL;
  if (!obj) {
    if (compile_object(bc, len, &obj, &olen, err, errlen)) {
      mpl_kcache_unlock(lock);
      free(ctx);
      return NULL;
    }
    if (ctx) mpl_kcache_put("jit", ctx, bc, len, obj, olen);
  }
  mpl_kcache_unlock(lock);
  free(ctx);
  LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRangeCopy(obj, olen, "mpl_kernels");
  mpl_free(obj);
  LLVMOrcLLJITRef j = make_jit(err, errlen);
  if (!j) {
    LLVMDisposeMemoryBuffer(mb);
    return NULL;
  }
  LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(j, LLVMOrcLLJITGetMainJITDylib(j), mb); /* takes mb */
  if (e) {
    take_error(e, err, errlen, "adding the kernels' object");
    LLVMOrcDisposeLLJIT(j);
    return NULL;
  }
  MplJit *m = calloc(1, sizeof *m);
  if (!m) {
    snprintf(err, errlen, "jit: out of memory");
    LLVMOrcDisposeLLJIT(j);
    return NULL;
  }
  m->jit = j;
  return m;
}

void *mpl_jit_lookup(MplJit *j, const char *name) {
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef e = LLVMOrcLLJITLookup(j->jit, &addr, name);
  if (e) {
    LLVMConsumeError(e);
    return NULL;
  }
  return (void *)(uintptr_t)addr;
}

void mpl_jit_free(MplJit *j) {
  if (!j) return;
  LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->jit);
  if (e) LLVMConsumeError(e);
  free(j);
}
