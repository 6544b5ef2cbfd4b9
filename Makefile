# ShiftViT-MPI build. `make` builds build/shiftvit; `make test` runs the suite;
# `make install PREFIX=...` installs it. Dependencies are Debian 12 packages
# (scripts/install-deps.sh installs them); elsewhere `make check-deps` says what
# is missing and which variable points to it (README "Building elsewhere").

# GNU Make conventions: CFLAGS, CPPFLAGS, LDFLAGS and LDLIBS, from the command
# line or the environment, are added to the project's flags (the SV_* variables),
# never replace them: `make CFLAGS=-g` keeps -O3, -fopenmp and the include paths,
# and `make CFLAGS=-O2` still wins over -O3 (the last -O counts).
#
# The compiler is an MPI wrapper: MPICC (default mpicc), or CC when CC is given
# on the command line or in the environment (`CC=mpicc.mpich make`). A plain
# compiler works too when CPPFLAGS/LDLIBS carry MPI's flags.
MPICC   ?= mpicc
ifeq ($(origin CC),default)
CC      := $(MPICC)
endif
# The MPI launcher the binary, the tests and the scripts use (src/dist/launch.c
# picks the family from mpi.h: mpirun for Open MPI, mpiexec for MPICH). MPIEXEC
# names the program when it is not that: for a wrapper named like Debian's
# (mpicc.mpich, mpicc.openmpi) the launcher of the same suffix, so that
# `make CC=mpicc.mpich` runs mpiexec.mpich whatever /usr/bin/mpirun points to.
MPIEXEC ?= $(if $(filter %.mpich,$(notdir $(CC))),mpiexec.mpich,$(if $(filter %.openmpi,$(notdir $(CC))),mpirun.openmpi))
SV_MPIEXEC := $(if $(MPIEXEC),-DSV_MPIEXEC='"$(MPIEXEC)"')
# -march=$(ARCH): native by default, i.e. this machine's CPU. A binary built on
# a login node may not run on older compute nodes: build for the oldest CPU of
# the cluster, e.g. ARCH=x86-64-v3 (AVX2) or ARCH=skylake-avx512; ARCH= (empty)
# leaves -march out.
ARCH    ?= native
SV_ARCH := $(if $(ARCH),-march=$(ARCH))
PKG_CONFIG ?= pkg-config

# ---- libraries. Each has NAME_CFLAGS and NAME_LIBS (command line or
# environment); unset, they are pkg-config's answer for the library's package,
# and a library pkg-config cannot find stops the build with pkg-config's own
# message. `make check-deps` says, per library, what is found and what is not.
#
# BLIS: Debian ships it without pkg-config; the OpenMP flavour lives in its own
# multiarch subdirectory (libblis-openmp-dev). Elsewhere set BLIS_INC and
# BLIS_LIB (its blis.h and libblis folders) or BLIS_CFLAGS/BLIS_LIBS; without
# them and without the Debian folder, pkg-config's blis (upstream BLIS installs
# blis.pc).
TRIPLET  = $(shell $(CC) -print-multiarch 2>/dev/null || gcc -print-multiarch 2>/dev/null)
BLIS_INC ?= /usr/include/$(TRIPLET)/blis-openmp
BLIS_LIB ?= /usr/lib/$(TRIPLET)/blis-openmp
BLIS_DIRS = $(or $(filter-out file,$(origin BLIS_INC) $(origin BLIS_LIB)),$(wildcard $(BLIS_INC)/blis.h))
BLIS_CFLAGS ?= $(if $(BLIS_DIRS),-isystem $(BLIS_INC),$(call sv_pkg,blis,--cflags,BLIS_INC and BLIS_LIB))
BLIS_LIBS   ?= $(if $(BLIS_DIRS),-L$(BLIS_LIB) -Wl$(comma)-rpath$(comma)$(BLIS_LIB) -lblis,$(call sv_pkg,blis,--libs,BLIS_INC and BLIS_LIB))
HDF5_CFLAGS    ?= $(call sv_pkg,hdf5,--cflags,HDF5_CFLAGS and HDF5_LIBS)
HDF5_LIBS      ?= $(call sv_pkg,hdf5,--libs,HDF5_CFLAGS and HDF5_LIBS)
INIH_CFLAGS    ?= $(call sv_pkg,inih,--cflags,INIH_CFLAGS and INIH_LIBS)
INIH_LIBS      ?= $(call sv_pkg,inih,--libs,INIH_CFLAGS and INIH_LIBS)
LIBPNG_CFLAGS  ?= $(call sv_pkg,libpng,--cflags,LIBPNG_CFLAGS and LIBPNG_LIBS)
LIBPNG_LIBS    ?= $(call sv_pkg,libpng,--libs,LIBPNG_CFLAGS and LIBPNG_LIBS)
LIBJPEG_CFLAGS ?= $(call sv_pkg,libjpeg,--cflags,LIBJPEG_CFLAGS and LIBJPEG_LIBS)
LIBJPEG_LIBS   ?= $(call sv_pkg,libjpeg,--libs,LIBJPEG_CFLAGS and LIBJPEG_LIBS)
# stb (stb_image_write and stb_easy_font, for predict's grid) is header-only;
# src/io/grid.c compiles the one implementation it uses. STB_CFLAGS names the
# folder of its headers (Debian: /usr/include/stb; upstream: -I the clone).
STB_CFLAGS     ?= $(call sv_pkg,stb,--cflags,STB_CFLAGS)
CMOCKA_CFLAGS  ?= $(call sv_pkg,cmocka,--cflags,CMOCKA_CFLAGS and CMOCKA_LIBS)
CMOCKA_LIBS    ?= $(call sv_pkg,cmocka,--libs,CMOCKA_CFLAGS and CMOCKA_LIBS)
# oneDNN runs the bf16 matrix products (train.precision = bf16): ONEDNN=1 needs
# it, ONEDNN=0 builds without it (bf16 then runs emulated: operands rounded to
# bf16, products by BLIS), ONEDNN=auto (default) uses it when dnnl.h and
# -ldnnl are found (DNNL_CFLAGS, DNNL_LIBS).
ONEDNN      ?= auto
DNNL_CFLAGS ?=
DNNL_LIBS   ?= -ldnnl
SV_ONEDNN = $(eval SV_ONEDNN := $$(call sv_onednn))$(SV_ONEDNN)
sv_onednn = $(if $(filter auto,$(ONEDNN)),$(if $(shell printf '\043include <dnnl.h>\nint main(void) { return dnnl_version() == 0; }\n' | \
  $(CC) $(CPPFLAGS) $(DNNL_CFLAGS) -x c - -o /dev/null $(LDFLAGS) $(DNNL_LIBS) 2>/dev/null && echo y),1,$(info \
  Makefile: oneDNN not found (dnnl.h and $(DNNL_LIBS); DNNL_CFLAGS and DNNL_LIBS point to it): building without it, bf16 runs emulated (ONEDNN=0 to build so without this note))0),$(ONEDNN))

comma := ,
# $(call sv_pkg,package,--cflags|--libs,VARIABLES): pkg-config's flags for the
# package, or a stop that shows pkg-config's own error and names the variables
# that bypass it.
sv_pkg = $(if $(shell $(PKG_CONFIG) --exists $(1) 2>/dev/null && echo y),$(shell $(PKG_CONFIG) $(2) $(1)),$(error \
  $(PKG_CONFIG) cannot find library '$(1)': $(shell $(PKG_CONFIG) --print-errors --exists $(1) 2>&1 | head -3). \
  Install it (Debian: scripts/install-deps.sh), add the folder of its $(1).pc to PKG_CONFIG_PATH, or set $(3); \
  `make check-deps` lists everything missing))
# Computed once, the first time a recipe needs them: make clean, check-shape,
# deps and check-deps never stop on a missing library.
SV_LIB_CFLAGS = $(eval SV_LIB_CFLAGS := $$(BLIS_CFLAGS) $$(HDF5_CFLAGS) $$(INIH_CFLAGS) $$(LIBPNG_CFLAGS) \
                  $$(LIBJPEG_CFLAGS) $$(STB_CFLAGS) $$(if $$(filter 1,$$(SV_ONEDNN)),$$(DNNL_CFLAGS),-DSV_NO_ONEDNN))$(SV_LIB_CFLAGS)
SV_LIB_LIBS   = $(eval SV_LIB_LIBS := $$(BLIS_LIBS) $$(HDF5_LIBS) $$(INIH_LIBS) $$(LIBPNG_LIBS) $$(LIBJPEG_LIBS) \
                  $$(if $$(filter 1,$$(SV_ONEDNN)),$$(DNNL_LIBS)) -lm)$(SV_LIB_LIBS)

WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-sign-compare
SV_OPT  := -O3
# -std=c11 alone turns off FMA contraction (ISO C mode); the polynomial
# kernels (erf, exp) and LayerNorm ran 1.3-1.5x slower without it.
# GCC keeps to 256-bit vectors on AVX-512 CPUs unless told otherwise; the
# element-wise kernels (GELU, dropout RNG, LayerNorm) ran 1.3-1.5x faster with
# 512 (measured on this 2-core machine). Only x86 compilers know the flag.
VEC512  := $(shell $(CC) $(SV_ARCH) -dM -E - </dev/null 2>/dev/null | grep -q __AVX512F__ && echo -mprefer-vector-width=512)
SV_LDFLAGS := -fopenmp

ifeq ($(SANITIZE),1)
SV_OPT  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
SV_LDFLAGS += -fsanitize=address,undefined
endif
# The build folder: BUILD=dir on the command line (not from the environment).
ifneq ($(origin BUILD),command line)
BUILD   := $(if $(filter 1,$(SANITIZE)),build-sanitize,build)
endif

SV_CFLAGS = $(SV_OPT) $(SV_ARCH) $(VEC512) -std=c11 -ffp-contract=fast -fopenmp $(WARN)
# The project's headers first, then the user's CPPFLAGS (a -I there wins over
# the libraries' folders), then the libraries'.
SV_CPPFLAGS = -Iinclude $(CPPFLAGS) -D_GNU_SOURCE $(SV_MPIEXEC) $(SV_LIB_CFLAGS)
COMPILE = $(CC) $(SV_CPPFLAGS) $(SV_CFLAGS) $(CFLAGS)
LINK_FLAGS = $(SV_LDFLAGS) $(LDFLAGS)
LINK_LIBS = $(SV_LIB_LIBS) $(LDLIBS)

# src/ holds one folder per layer (src/LAYERS.md); an object mirrors its
# source's path: src/kernels/shift.c -> $(BUILD)/obj/kernels/shift.o.
LIB_SRC := $(filter-out src/cli/main.c,$(wildcard src/*/*.c))
LIB_OBJ := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC))
MAIN_OBJ := $(BUILD)/obj/cli/main.o
# tests/test_util.c holds the helpers every test program links with; it is not
# a test program itself.
TEST_SRC := $(filter-out tests/test_util.c,$(wildcard tests/test_*.c))
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_UTIL := $(BUILD)/tests/test_util.o

.PHONY: all test test-mpich deps check-deps install test-build clean demo train train-fast train-best bench gemm-shapes test-slurm test-multinode fuzz check-shape FORCE
all: $(BUILD)/shiftvit

# What test, demo and train need first: on Debian (dpkg-query found) the
# missing packages, installed by scripts/install-deps.sh (as root; otherwise it
# prints the apt-get line). SKIP_DEPS=1, the default where there is no
# dpkg-query, checks the libraries instead (make check-deps), without root.
SKIP_DEPS ?= $(if $(shell command -v dpkg-query),0,1)
deps:
ifeq ($(SKIP_DEPS),1)
	@$(MAKE) --no-print-directory check-deps
else
	@scripts/install-deps.sh
endif

# Per library: found, or missing and the variable that points to it.
check-deps:
	@CC='$(CC)' PKG_CONFIG='$(PKG_CONFIG)' ONEDNN='$(ONEDNN)' DNNL_CFLAGS='$(DNNL_CFLAGS)' DNNL_LIBS='$(DNNL_LIBS)' \
	  SV_BLIS_CFLAGS='$(if $(or $(BLIS_DIRS),$(filter-out file,$(origin BLIS_CFLAGS))),$(BLIS_CFLAGS))' \
	  SV_BLIS_LIBS='$(if $(or $(BLIS_DIRS),$(filter-out file,$(origin BLIS_LIBS))),$(BLIS_LIBS))' \
	  scripts/check-deps.sh

# The flags this build folder was built with: when they change (CFLAGS, ARCH,
# ONEDNN, a library's flags...), every object is rebuilt.
SV_FLAGS_NOW = $(strip $(COMPILE) | $(LINK_FLAGS) | $(LINK_LIBS))
sv_same = $(and $(findstring x$(1)x,x$(2)x),$(findstring x$(2)x,x$(1)x))
$(BUILD)/flags: FORCE | $(BUILD)/obj
	$(if $(call sv_same,$(SV_FLAGS_NOW),$(strip $(file <$@))),@:,@echo "$@: new flags, building everything with them"; \
	  printf '%s\n' '$(subst ','\'',$(SV_FLAGS_NOW))' > $@)
FORCE:

# Each object depends on the headers it includes, as the compiler lists them
# (-MMD -MP: $(BUILD)/obj/<folder>/<name>.d, read below; a deleted header is
# no error).
DEPFLAGS = -MMD -MP -MF $@.d -MT $@
$(BUILD)/obj/%.o: src/%.c $(BUILD)/flags | $(BUILD)/obj
	@mkdir -p $(@D)
	$(COMPILE) $(DEPFLAGS) -c $< -o $@

# GCC turns the shift's 8-float channel-group copies into memmove calls,
# whose call overhead made the shift 2% of a training step.
$(BUILD)/obj/kernels/shift.o: SV_OPT += -fno-tree-loop-distribute-patterns
# The augmentation operations reproduce PIL's arithmetic bit for bit: no fused
# multiply-add there (PIL's own build has none).
$(BUILD)/obj/io/autoaugment.o: SV_CFLAGS += -ffp-contract=off

# Rebuilt from scratch so that the object of a removed source file goes too.
$(BUILD)/libshiftvit.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/shiftvit: $(MAIN_OBJ) $(BUILD)/libshiftvit.a $(BUILD)/flags
	$(CC) $(LINK_FLAGS) $(MAIN_OBJ) $(BUILD)/libshiftvit.a -o $@ $(LINK_LIBS)

$(TEST_UTIL): tests/test_util.c tests/test_util.h $(BUILD)/flags | $(BUILD)/tests
	$(COMPILE) $(DEPFLAGS) -Itests $(CMOCKA_CFLAGS) -c $< -o $@

# A glob over tests/test_*.c also names test_util: that builds the object only.
.PHONY: $(BUILD)/tests/test_util
$(BUILD)/tests/test_util: $(TEST_UTIL)
	@:

$(BUILD)/tests/%: tests/%.c tests/test_util.h $(TEST_UTIL) $(BUILD)/libshiftvit.a | $(BUILD)/tests
	$(COMPILE) $(DEPFLAGS) -Itests $(CMOCKA_CFLAGS) $< $(TEST_UTIL) -o $@ $(BUILD)/libshiftvit.a $(LINK_FLAGS) $(CMOCKA_LIBS) $(LINK_LIBS)

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

-include $(wildcard $(BUILD)/obj/*/*.d $(BUILD)/tests/*.d)

# One command on a fresh Debian 12 machine: installs what is missing, builds,
# runs every test and ends with the summary line.
test: deps
	$(MAKE) all $(TEST_BIN)
	@BUILD=$(BUILD) tests/run_tests.sh

# The tests that launch ranks, built with MPICH (issue 27) in their own build
# folder (BUILD_MPICH, default build-mpich) with its wrapper (MPICH_CC, default
# Debian's mpicc.mpich); the binary launches with MPICH's mpiexec
# (src/dist/launch.c). run_tests.sh runs the test programs that folder has.
MPICH_CC    ?= mpicc.mpich
BUILD_MPICH ?= build-mpich
MPICH_TESTS := test_distributed test_resume test_platform test_bf16
test-mpich: deps
	$(MAKE) BUILD=$(BUILD_MPICH) CC=$(MPICH_CC) all $(addprefix $(BUILD_MPICH)/tests/,$(MPICH_TESTS))
	@BUILD=$(BUILD_MPICH) tests/run_tests.sh

# README quick start, first command: installs what is missing, builds, trains the
# time-to-accuracy recipe on the real data for an 8-epoch schedule (about 3
# minutes on 2 cores), predicts on the sample photos and plots the curves.
demo: deps
	$(MAKE) all
	scripts/demo.sh

# The full recipe (100 epochs with early stopping), one rank per core.
train: deps
	$(MAKE) all
	scripts/train.sh

# The time-to-accuracy recipe (configs/cifar10_fast.ini): test top-1 >= 76.38%
# (the source example's) in under 5 minutes on 2 cores.
train-fast: deps
	$(MAKE) all
	NP=$${NP:-1} THREADS=$${THREADS:-$$(scripts/cores.sh)} CONFIG=configs/cifar10_fast.ini scripts/train.sh

# The best recipe (configs/cifar10_best.ini): test top-1 >= 90% in one hour on 2 cores.
train-best: deps
	$(MAKE) all
	NP=$${NP:-1} THREADS=$${THREADS:-$$(scripts/cores.sh)} CONFIG=configs/cifar10_best.ini scripts/train.sh

# Our bench and the PyTorch model side by side (results/bench/).
bench: deps
	$(MAKE) all
	scripts/bench.sh

# The model's matrix products one by one, fp32 (BLIS) against bf16 (oneDNN):
# bench/gemm_shapes.c; results/bench/bf16-storage-2026-12-01.md.
$(BUILD)/gemm_shapes: bench/gemm_shapes.c $(BUILD)/libshiftvit.a
	$(COMPILE) $< -o $@ $(BUILD)/libshiftvit.a $(LINK_FLAGS) $(LINK_LIBS)

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

# The build as sites build it (issue 27): user CFLAGS/CPPFLAGS/LDFLAGS/LDLIBS,
# ONEDNN=0, make install PREFIX=... and a run from outside the tree, CC from
# the environment, pkg-config's errors, make check-deps. One extra -O1 build.
test-build:
	tests/build/run.sh

# libFuzzer targets (CIFAR reader, config parser, predict's image decoding),
# each for FUZZ_SECONDS (default 60); crashes are kept as regression inputs.
FUZZ_SECONDS ?= 60
# Files <= 600 lines, functions <= 80, no test including a .c file, and the
# layering of src/LAYERS.md: which folder may include and call which, no
# include or call cycles, MPI only in src/dist/ (README "Developers").
check-shape:
	python3 scripts/check_code_shape.py

fuzz: deps
	tests/fuzz/run.sh $(FUZZ_SECONDS)

# make install PREFIX=/opt/shiftvit (DESTDIR=... stages it): the program in
# BINDIR (PREFIX/bin); configs, the helper scripts the job scripts use and the
# job scripts in DATADIR (PREFIX/share/shiftvit). The installed program finds
# its configs from any folder (shiftvit train -c configs/tiny.ini, or -c
# tiny.ini); the installed job scripts run it by default.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share/shiftvit
INSTALL_SCRIPTS := scripts/mpirun.sh scripts/cores.sh scripts/get-cifar10.sh scripts/plot_metrics.py \
                   scripts/trace_summary.py scripts/check-deps.sh
install: $(BUILD)/shiftvit
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/configs $(DESTDIR)$(DATADIR)/scripts $(DESTDIR)$(DATADIR)/jobs
	install -m 755 $(BUILD)/shiftvit $(DESTDIR)$(BINDIR)/shiftvit
	install -m 644 configs/*.ini configs/README.md $(DESTDIR)$(DATADIR)/configs
	install -m 755 $(INSTALL_SCRIPTS) $(DESTDIR)$(DATADIR)/scripts
	install -m 755 jobs/local.sh jobs/train.sbatch $(DESTDIR)$(DATADIR)/jobs
	install -m 644 jobs/README.md $(DESTDIR)$(DATADIR)/jobs
	sed -i 's|SHIFTVIT:-build/shiftvit}|SHIFTVIT:-$(BINDIR)/shiftvit}|' \
	  $(DESTDIR)$(DATADIR)/jobs/local.sh $(DESTDIR)$(DATADIR)/jobs/train.sbatch
	@echo "installed: $(BINDIR)/shiftvit; configs, scripts and jobs in $(DATADIR)"

clean:
	rm -rf build build-sanitize build-mpich
