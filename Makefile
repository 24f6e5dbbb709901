# MPL — one top-level Makefile. Objects under build/, -MMD -MP dependency files.
#
#   make deps       install the Debian packages MPL needs (does nothing when they are there)
#   make            build mplc and mplrun (stops, naming it, when a package is missing)
#   make run        make deps, then compile an example and train it on CPU devices
#   make test       make deps, then build and run every test; ends with "N passed, N failed"
#   make bench      make deps, then speed against PyTorch (a benchmark, not a test)
#   make golden-update   rewrite tests/golden expectations (review the diff!)
#   make asan       everything built with AddressSanitizer + UBSan under build-asan/
#   make cuda-only  a CUDA-only mplrun (no LLVM, no oneDNN) for GPU machines

BUILD    ?= build
CC       ?= cc
OPT      ?= -O2 -g
SANFLAGS ?=
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter -Wno-sign-compare
CFLAGS   := -std=gnu11 $(OPT) $(WARN) $(SANFLAGS) -fno-fast-math -ffp-contract=off \
            -I. -I$(BUILD)/lang -I$(BUILD)/gen -pthread -MMD -MP
LDFLAGS  := $(SANFLAGS) -pthread
LDLIBS   := -lm

# ---- set-up: installing packages is the explicit `deps` step. `make run`, `make test` and
# `make bench` run it first and then build in a sub-make, so the tools below are looked up
# after the install. Every other goal only checks (dpkg-query, when the machine has it) and
# stops with the missing package's name. cuda-only, clean and the set-up goals check nothing.
DEB_PKGS := gcc libc6-dev flex bison check pkg-config llvm-14-dev libdnnl-dev clang libclang-rt-14-dev $(if $(NO_MPI),,libopenmpi-dev openmpi-bin)
# make test's scripts check results with Python's standard library (python3: not in a minimal
# Debian, and not needed to build)
TEST_PKGS := python3
NO_CHECK_GOALS := clean deps install-pkgs bench-deps test-deps cuda-only run test bench
ifneq ($(or $(MAKECMDGOALS),all),$(filter $(NO_CHECK_GOALS),$(or $(MAKECMDGOALS),all)))
MISSING_PKGS := $(shell command -v dpkg-query > /dev/null && for p in $(DEB_PKGS); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done)
ifneq ($(strip $(MISSING_PKGS)),)
$(error missing Debian packages: $(strip $(MISSING_PKGS)); run `make deps` (or `make run` / `make test`, which install them))
endif
endif

# ---- optional and required libraries ------------------------------------
LLVM_CONFIG := $(shell command -v llvm-config-14 || command -v llvm-config)
ifneq ($(LLVM_CONFIG),)
LLVM_CFLAGS := $(shell $(LLVM_CONFIG) --cflags 2>/dev/null | sed 's/-O[0-9s]//g')
LLVM_LIBS   := $(shell $(LLVM_CONFIG) --ldflags --libs core analysis passes orcjit mcjit native bitwriter bitreader target 2>/dev/null) \
               $(shell $(LLVM_CONFIG) --system-libs 2>/dev/null)
# mplc and mplrun link LLVM's static libraries where they are installed (llvm-14-dev has them),
# as position-dependent programs: against the shared libLLVM each start spent ~50 ms on its
# 366,000 relocations (a run of --emit=ast: 64 ms, now 16), and make test starts them
# thousands of times (under the sanitizers: 144 -> 85 ms). NO_STATIC_LLVM=1 links the shared one.
LLVM_STATIC := $(if $(NO_STATIC_LLVM),,$(wildcard $(shell $(LLVM_CONFIG) --libdir 2>/dev/null)/libLLVMCore.a))
endif
ifneq ($(LLVM_STATIC),)
LLVM_EXE_LIBS := -no-pie $(shell $(LLVM_CONFIG) --link-static --ldflags --libs core analysis passes orcjit mcjit native bitwriter bitreader target 2>/dev/null) \
                 $(shell $(LLVM_CONFIG) --link-static --system-libs 2>/dev/null) -lstdc++
else
LLVM_EXE_LIBS := $(LLVM_LIBS)
endif
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda))
ifneq ($(CUDA_HOME),)
ifneq ($(wildcard $(CUDA_HOME)/include/cuda.h),)
HAVE_CUDA   := 1
CUDA_CFLAGS := -DMPL_HAVE_CUDA -I$(CUDA_HOME)/include
# NVRTC and cuBLAS are opened at run time (runtime/cuda_dl.c, cublas_dl.c), found through the run path
NVRTC_LIBS  := -Wl,-rpath,$(CUDA_HOME)/lib64 -ldl
CUDA_LIBS   := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -ldl
# NCCL is not part of the toolkit: used where nccl.h and libnccl.so* are found (NCCL_INC and
# NCCL_LIB name other folders, e.g. a Python wheel's nvidia/nccl/{include,lib}; NO_NCCL=1: without)
NCCL_INC ?= $(patsubst %/nccl.h,%,$(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h /usr/local/include/nccl.h)))
NCCL_LIB ?= $(patsubst %/,%,$(dir $(firstword $(wildcard $(CUDA_HOME)/lib64/libnccl.so* /usr/lib/*/libnccl.so* /usr/local/lib/libnccl.so*))))
NCCL_SO  := $(firstword $(wildcard $(NCCL_LIB)/libnccl.so) $(wildcard $(NCCL_LIB)/libnccl.so.*))
ifeq ($(NO_NCCL)$(if $(wildcard $(NCCL_INC)/nccl.h),,n)$(if $(NCCL_SO),,n),)
CUDA_CFLAGS += -DMPL_HAVE_NCCL $(if $(filter /usr/include $(CUDA_HOME)/include,$(NCCL_INC)),,-I$(NCCL_INC))
CUDA_LIBS   += $(if $(filter /usr/lib /usr/lib/% /lib/% $(CUDA_HOME)/lib64,$(NCCL_LIB)),,-L$(NCCL_LIB) -Wl,-rpath,$(NCCL_LIB)) \
               $(if $(filter libnccl.so,$(notdir $(NCCL_SO))),-lnccl,-l:$(notdir $(NCCL_SO)))
endif
endif
endif
# MPI (one rank per process under mpirun): used where mpicc or pkg-config's ompi-c is found
# (NO_MPI=1 builds without it)
MPI_CC := $(if $(NO_MPI),,$(shell command -v mpicc 2>/dev/null))
ifneq ($(MPI_CC),)
MPI_CFLAGS := -DMPL_HAVE_MPI $(shell $(MPI_CC) --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell $(MPI_CC) --showme:link 2>/dev/null)
else ifeq ($(NO_MPI)$(shell pkg-config --exists ompi-c 2>/dev/null || echo n),)
MPI_CFLAGS := -DMPL_HAVE_MPI $(shell pkg-config --cflags ompi-c)
MPI_LIBS   := $(shell pkg-config --libs ompi-c)
endif
CHECK_LIBS  := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm)

# ---- sources ---------------------------------------------------------------
LANG_SRC    := $(wildcard lang/*.c) $(BUILD)/lang/lexer.c $(BUILD)/lang/parser.c
COMP_SRC    := $(filter-out compiler/main.c,$(wildcard compiler/*.c))
# the job contract, linked by both programs: the job format and its container, the
# allocator and error type they use, the compile cache, LLVM's view of the host (mplc optimises for it), and
# the profile file (mplrun --profile writes it, mplc --profile reads it) with its JSON reader
JOB_SRC     := runtime/job.c runtime/jobfile.c runtime/alloc.c runtime/kcache.c runtime/llvm_host.c runtime/json.c runtime/profile.c runtime/cuda_dl.c
RT_SRC      := $(filter-out runtime/mplrun.c runtime/mpltok.c runtime/cpu_none.c $(JOB_SRC),$(wildcard runtime/*.c))
LANG_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(filter-out $(BUILD)/%,$(LANG_SRC))) \
               $(BUILD)/lang/lexer.o $(BUILD)/lang/parser.o
COMP_OBJ    := $(COMP_SRC:%.c=$(BUILD)/%.o)
RT_OBJ      := $(RT_SRC:%.c=$(BUILD)/%.o)
JOB_OBJ     := $(JOB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

LIBCOMP     := $(BUILD)/libmplc.a
LIBRT       := $(BUILD)/libmplrt.a
LIBJOB      := $(BUILD)/libmpljob.a
MPLC        := $(BUILD)/mplc
MPLRUN      := $(BUILD)/mplrun
MPLTOK      := $(BUILD)/mpltok
TINY_DATA   := examples/data/tiny.bin

COMP_LIBS   := $(LLVM_EXE_LIBS) $(NVRTC_LIBS)      # mplc: no runtime backend (no oneDNN, cuBLAS, CUDA runtime, NCCL, MPI)
# device_cpu.c runs its kernels in OpenMP parallel regions, the team oneDNN threads with:
# GCC's libgomp, which libdnnl loads anyway, named by its path, as -fopenmp's -lgomp would
# find LLVM's libgomp.so (a link to LLVM's libomp) first in llvm-config's -L folder, and
# the process would run two OpenMP runtimes, each with its own spinning threads
GOMP        := $(shell $(CC) -print-file-name=libgomp.so)
RT_LIBS     := $(LLVM_LIBS) -ldnnl $(GOMP) $(CUDA_LIBS) $(MPI_LIBS)
RUN_LIBS    := $(LLVM_EXE_LIBS) -ldnnl $(GOMP) $(CUDA_LIBS) $(MPI_LIBS)   # mplrun (the tests: RT_LIBS)

.PHONY: all deps bench-deps test-deps install-pkgs run run-example test test-all bench bench-run golden-update asan clean unit golden fuzz cuda-only
all: $(MPLC) $(MPLRUN) $(MPLTOK) $(TINY_DATA)

# ---- set-up on a fresh machine: install what is missing, else do nothing ----
# make bench's baseline: PyTorch on Debian's OpenBLAS (the BLAS the issue's figures used)
BENCH_PKGS := python3-torch libopenblas0-pthread
deps:
	@$(MAKE) -s install-pkgs PKGS="$(DEB_PKGS)"
test-deps:
	@$(MAKE) -s install-pkgs PKGS="$(TEST_PKGS)"
bench-deps:
	@$(MAKE) -s install-pkgs PKGS="$(BENCH_PKGS)" || echo "bench: PyTorch is not available; MPL runs alone" >&2
install-pkgs:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "deps: could not install$$missing" >&2; exit 1; }; \
	fi

# ---- lexer and parser --------------------------------------------------------
$(BUILD)/lang/lexer.c $(BUILD)/lang/lexer.h &: lang/lexer.l | $(BUILD)/lang/.dir
	flex --header-file=$(BUILD)/lang/lexer.h -o $(BUILD)/lang/lexer.c $<
$(BUILD)/lang/parser.c $(BUILD)/lang/parser.h &: lang/parser.y | $(BUILD)/lang/.dir
	bison -Wall -Werror --defines=$(BUILD)/lang/parser.h -o $(BUILD)/lang/parser.c $<
$(BUILD)/lang/lexer.o: $(BUILD)/lang/lexer.c $(BUILD)/lang/parser.h
	$(CC) $(CFLAGS) -Wno-missing-prototypes -Wno-unused-function -c -o $@ $<
$(BUILD)/lang/parser.o: $(BUILD)/lang/parser.c $(BUILD)/lang/lexer.h
	$(CC) $(CFLAGS) -Wno-missing-prototypes -c -o $@ $<
$(patsubst %.c,$(BUILD)/%.o,$(wildcard lang/*.c)): $(BUILD)/lang/parser.h $(BUILD)/lang/lexer.h

%/.dir:
	@mkdir -p $(@D) && touch $@

# ---- CUDA sources embedded at build time: DIR/NAME.cu -> $(BUILD)/gen/DIR/NAME.cu.inc, the
# bytes of a C array (tools/embed.sh; tests/gpu/run.sh makes the same file when it builds by hand)
GEN := $(BUILD)/gen
$(GEN)/%.cu.inc: %.cu tools/embed.sh
	@mkdir -p $(@D)
	sh tools/embed.sh $< > $@.tmp && mv $@.tmp $@
$(BUILD)/runtime/device_cuda_progs.o: $(GEN)/runtime/cuda/optim.cu.inc $(GEN)/runtime/cuda/sdpa.cu.inc $(GEN)/runtime/cuda/ce.cu.inc $(GEN)/runtime/cuda/embed.cu.inc
$(BUILD)/compiler/cg_cuda.o: $(GEN)/compiler/cuda/prelude.cu.inc

# ---- objects -----------------------------------------------------------------
$(BUILD)/compiler/%.o: compiler/%.c | $(BUILD)/compiler/.dir $(BUILD)/lang/parser.h
	$(CC) $(CFLAGS) $(LLVM_CFLAGS) $(CUDA_CFLAGS) -c -o $@ $<
$(BUILD)/runtime/device_cpu.o: CFLAGS += -fopenmp
$(BUILD)/runtime/%.o: runtime/%.c | $(BUILD)/runtime/.dir
	$(CC) $(CFLAGS) $(LLVM_CFLAGS) $(CUDA_CFLAGS) $(MPI_CFLAGS) -c -o $@ $<
$(BUILD)/lang/%.o: lang/%.c | $(BUILD)/lang/.dir
	$(CC) $(CFLAGS) -c -o $@ $<
$(BUILD)/tests/%.o: tests/unit/%.c | $(BUILD)/tests/.dir $(BUILD)/lang/parser.h
	$(CC) $(CFLAGS) $(LLVM_CFLAGS) $(CUDA_CFLAGS) $(shell pkg-config --cflags check 2>/dev/null) -c -o $@ $<
# test_comm --mpi reads comm_mpi.c's messages off the wire (MPI_Probe) to see their pieces
$(BUILD)/tests/test_comm.o: CFLAGS += $(MPI_CFLAGS)

$(LIBCOMP): $(LANG_OBJ) $(COMP_OBJ)
	@rm -f $@; ar rcs $@ $^
$(LIBRT): $(RT_OBJ) $(BUILD)/lang/arena.o
	@rm -f $@; ar rcs $@ $^
$(LIBJOB): $(JOB_OBJ)
	@rm -f $@; ar rcs $@ $^

$(MPLC): $(BUILD)/compiler/main.o $(LIBCOMP) $(LIBJOB)
	$(CC) $(LDFLAGS) -o $@ $^ $(COMP_LIBS) $(LDLIBS)
$(MPLRUN): $(BUILD)/runtime/mplrun.o $(LIBRT) $(LIBJOB)
	$(CC) $(LDFLAGS) -o $@ $^ $(RUN_LIBS) $(LDLIBS)

$(MPLTOK): $(BUILD)/runtime/mpltok.o $(LIBRT) $(LIBJOB)
	$(CC) $(LDFLAGS) -o $@ $^ $(RT_LIBS) $(LDLIBS)
$(TINY_DATA): examples/data/tiny.txt $(MPLTOK)
	$(MPLTOK) $< $@

# make bench's GEMM peak (tests/bench/gemm_bench.c): built by make test too, so that a change
# to the GEMM's sources cannot break make bench unseen
GEMM_BENCH := $(BUILD)/gemm_bench
$(GEMM_BENCH): tests/bench/gemm_bench.c $(BUILD)/runtime/gemm.o $(BUILD)/runtime/alloc.o $(BUILD)/runtime/sdpa_cpu.o
	$(CC) $(CFLAGS) -o $@ $^ -ldnnl -lm

$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(LIBCOMP) $(LIBRT) $(LIBJOB)
	$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(RT_LIBS) $(LDLIBS)
# test_cuda_mock: the cuda device's host code on tests/unit/cuda_mock.c's CUDA runtime, driver and
# cuBLAS, linked instead of libcudart (without CUDA the rule above builds its note)
ifneq ($(HAVE_CUDA),)
$(BUILD)/tests/test_cuda_mock: $(addprefix $(BUILD)/tests/,test_cuda_mock.o cuda_mock.o cuda_mock_progs.o cuda_mock_sdpa.o) \
                               $(LIBCOMP) $(LIBRT) $(LIBJOB)
	$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(filter-out -lcudart,$(RT_LIBS)) $(LDLIBS)
# test_cuda_jobs: whole jobs on the same mock, their generated kernels built for the host at run
# time (tests/unit/cuda_gen_host.h) and opened with dlopen
$(BUILD)/tests/test_cuda_jobs: $(addprefix $(BUILD)/tests/,test_cuda_jobs.o cuda_mock.o cuda_mock_progs.o cuda_mock_sdpa.o) \
                               $(LIBCOMP) $(LIBRT) $(LIBJOB)
	$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(filter-out -lcudart,$(RT_LIBS)) -ldl $(LDLIBS)
# cuda_mock_run: one run of a job on the same mock, alone or one rank a process under mpirun
# (tests/e2e/cuda_mpi.sh)
CUDA_MOCK_RUN := $(BUILD)/tests/cuda_mock_run
$(CUDA_MOCK_RUN): $(addprefix $(BUILD)/tests/,cuda_mock_run.o cuda_mock.o cuda_mock_progs.o cuda_mock_sdpa.o) \
                  $(LIBCOMP) $(LIBRT) $(LIBJOB)
	$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(filter-out -lcudart,$(RT_LIBS)) -ldl $(LDLIBS)
endif

# ---- the user's commands ---------------------------------------------------------
# (run, test and bench: deps first, then the build in a sub-make that looks the tools up anew)
# (the build itself in a sub-make of its own, one compiler per core: the tests after it
# run side by side on their own, and the example's output stays in order)
JOBS := $(shell nproc 2> /dev/null || echo 2)
run: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@$(MAKE) --no-print-directory run-example
run-example: all
	BUILD=$(BUILD) ./tests/run_example.sh

test: deps test-deps
	@$(MAKE) --no-print-directory -j$(JOBS) all $(UNIT_BIN) $(CUDA_ONLY_TEST) $(CUDA_MOCK_RUN) $(GEMM_BENCH)
	@$(MAKE) --no-print-directory test-all
test-all: all $(UNIT_BIN)
	@BUILD=$(BUILD) ./tests/run.sh

unit: all $(UNIT_BIN)
	@BUILD=$(BUILD) ./tests/run.sh unit

golden: all
	@BUILD=$(BUILD) ./tests/run.sh golden

golden-update: all
	BUILD=$(BUILD) ./tests/golden/run.sh --update

bench: deps bench-deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@$(MAKE) --no-print-directory bench-run
bench-run: all $(GEMM_BENCH)
	BUILD=$(BUILD) ./tests/bench/bench.sh

asan: # (and test_comm, whose ranks are threads racing over shared buffers: sanitize.sh runs it)
	$(MAKE) BUILD=build-asan OPT="-O1 -g1" SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	  all build-asan/tests/test_comm

# ---- cuda-only: mplrun for a GPU machine with the CUDA toolkit and a C compiler only ----
# (no LLVM, oneDNN, flex, bison or Check): the runtime without jit_cpu.c, llvm_host.c and gemm.c,
# whose entry points cpu_none.c answers with an error. Objects under $(BUILD)/cuda-only/.
CO_DIR  := $(BUILD)/cuda-only
CO_SRC  := $(filter-out runtime/mpltok.c runtime/jit_cpu.c runtime/llvm_host.c runtime/gemm.c,$(wildcard runtime/*.c))
CO_OBJ  := $(CO_SRC:%.c=$(CO_DIR)/%.o)
ifneq ($(HAVE_CUDA),)
CUDA_ONLY_TEST := cuda-only
cuda-only: $(CO_DIR)/mplrun
$(CO_DIR)/runtime/%.o: runtime/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(CUDA_CFLAGS) $(MPI_CFLAGS) -DMPL_CUDA_ONLY -c -o $@ $<
$(CO_DIR)/mplrun: $(CO_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(CUDA_LIBS) $(MPI_LIBS) $(LDLIBS)
$(CO_DIR)/runtime/device_cuda_progs.o: $(GEN)/runtime/cuda/optim.cu.inc $(GEN)/runtime/cuda/sdpa.cu.inc $(GEN)/runtime/cuda/ce.cu.inc $(GEN)/runtime/cuda/embed.cu.inc
else
cuda-only:
	@echo "cuda-only: no CUDA toolkit (set CUDA_HOME)" >&2; exit 1
endif
# (a prerequisite list is expanded where it is read: so this comes after the definition;
# test_cuda runs the cuda-only mplrun, so every goal that runs the unit tests builds it)
test-all unit: $(CUDA_ONLY_TEST)
test-all: $(CUDA_MOCK_RUN)

# objects made through pattern chains are kept, not deleted as intermediates
.SECONDARY:

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
