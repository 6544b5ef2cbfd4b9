# ShiftViT-MPI build. `make` builds build/shiftvit; `make test` runs the suite.
# Dependencies are Debian 12 packages (scripts/install-deps.sh installs them).

CC      := mpicc
ARCH    ?= native
TRIPLET := $(shell gcc -print-multiarch)
# Debian ships BLIS without pkg-config; the OpenMP flavour lives in its own
# multiarch subdirectory (libblis-openmp-dev). Override BLIS_INC/BLIS_LIB for
# another installation.
BLIS_INC ?= /usr/include/$(TRIPLET)/blis-openmp
BLIS_LIB ?= /usr/lib/$(TRIPLET)/blis-openmp
PKGS    := hdf5 inih stb libpng libjpeg

WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-sign-compare
CFLAGS  ?= -O3 -march=$(ARCH)
# -std=c11 alone turns off FMA contraction (ISO C mode); the polynomial
# kernels (erf, exp) and LayerNorm ran 1.3-1.5x slower without it.
# GCC keeps to 256-bit vectors on AVX-512 CPUs unless told otherwise; the
# element-wise kernels (GELU, dropout RNG, LayerNorm) ran 1.3-1.5x faster with
# 512 (measured on this 2-core machine). Only x86 compilers know the flag.
VEC512  := $(shell $(CC) -march=$(ARCH) -dM -E - </dev/null 2>/dev/null | grep -q __AVX512F__ && echo -mprefer-vector-width=512)
CFLAGS  += $(VEC512)
CFLAGS  += -std=c11 -ffp-contract=fast -D_GNU_SOURCE -fopenmp $(WARN) -Iinclude -isystem $(BLIS_INC) \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := -L$(BLIS_LIB) -Wl,-rpath,$(BLIS_LIB) -lblis \
           $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldnnl -lm
LDFLAGS += -fopenmp

ifeq ($(SANITIZE),1)
CFLAGS  := $(filter-out -O3,$(CFLAGS)) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
LDFLAGS += -fsanitize=address,undefined
BUILD   := build-sanitize
else
BUILD   := build
endif

LIB_SRC := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC))
# tests/test_util.c holds the helpers every test program links with; it is not
# a test program itself.
TEST_SRC := $(filter-out tests/test_util.c,$(wildcard tests/test_*.c))
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_UTIL := $(BUILD)/tests/test_util.o

.PHONY: all test deps clean demo train train-fast bench gemm-shapes test-slurm test-multinode fuzz check-shape
all: $(BUILD)/shiftvit

deps:
	@scripts/install-deps.sh

$(BUILD)/obj/%.o: src/%.c $(wildcard include/shiftvit/*.h src/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@

# GCC turns the shift's 8-float channel-group copies into memmove calls,
# whose call overhead made the shift 2% of a training step.
$(BUILD)/obj/shift.o: CFLAGS += -fno-tree-loop-distribute-patterns

# Rebuilt from scratch so that the object of a removed source file goes too.
$(BUILD)/libshiftvit.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/shiftvit: $(BUILD)/obj/main.o $(BUILD)/libshiftvit.a
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(TEST_UTIL): tests/test_util.c tests/test_util.h | $(BUILD)/tests
	$(CC) $(CFLAGS) -Itests -c $< -o $@

# A glob over tests/test_*.c also names test_util: that builds the object only.
.PHONY: $(BUILD)/tests/test_util
$(BUILD)/tests/test_util: $(TEST_UTIL)
	@:

$(BUILD)/tests/%: tests/%.c tests/test_util.h $(TEST_UTIL) $(BUILD)/libshiftvit.a | $(BUILD)/tests
	$(CC) $(CFLAGS) -Itests $< $(TEST_UTIL) -o $@ $(BUILD)/libshiftvit.a $(LDFLAGS) $(LDLIBS) \
	    $(shell pkg-config --libs cmocka 2>/dev/null)

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

# One command on a fresh Debian 12 machine: installs what is missing, builds,
# runs every test and ends with the summary line.
test: deps
	$(MAKE) all $(TEST_BIN)
	@BUILD=$(BUILD) tests/run_tests.sh

# README quick start, first command: installs what is missing, builds, trains the
# recipe on the real data for one epoch with one rank per core, predicts on the
# sample photos and plots the curves.
demo: deps
	$(MAKE) all
	scripts/demo.sh

# The full recipe (100 epochs with early stopping), one rank per core.
train: deps
	$(MAKE) all
	scripts/train.sh

# The time-to-accuracy recipe (configs/cifar10_fast.ini): the same model and
# augmentation, test top-1 >= 76.38% in under 30 minutes on 2 cores.
train-fast: deps
	$(MAKE) all
	NP=$${NP:-1} THREADS=$${THREADS:-$$(scripts/cores.sh)} CONFIG=configs/cifar10_fast.ini scripts/train.sh

# Our bench and the PyTorch model side by side (results/bench/).
bench: deps
	$(MAKE) all
	scripts/bench.sh

# The model's matrix products one by one, fp32 (BLIS) against bf16 (oneDNN):
# bench/gemm_shapes.c; results/bench/bf16-storage-2026-12-01.md.
$(BUILD)/gemm_shapes: bench/gemm_shapes.c $(BUILD)/libshiftvit.a
	$(CC) $(CFLAGS) $< -o $@ $(BUILD)/libshiftvit.a $(LDFLAGS) $(LDLIBS)

gemm-shapes: deps
	$(MAKE) all $(BUILD)/gemm_shapes
	$(BUILD)/gemm_shapes

# A real single-node SLURM cluster on this machine runs jobs/train.sbatch.
test-slurm: deps
	$(MAKE) all
	WITH_SLURM=1 scripts/install-deps.sh
	tests/slurm/run.sh

# Training across emulated nodes (scripts/vcluster.sh): rank invariance across
# hosts, mpirun and sbatch, a pulled link and a node crash. As root.
test-multinode: deps
	$(MAKE) all
	WITH_SLURM=1 scripts/install-deps.sh
	tests/multinode/run.sh

# libFuzzer targets (CIFAR reader, config parser, predict's image decoding),
# each for FUZZ_SECONDS (default 60); crashes are kept as regression inputs.
FUZZ_SECONDS ?= 60
# Files <= 600 lines, functions <= 80, MPI only in src/dist.c, no test
# including a .c file (README "Developers").
check-shape:
	python3 scripts/check_code_shape.py

fuzz: deps
	tests/fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf build build-sanitize
