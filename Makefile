# mpk - GNU Make only.
#
#   make                 bin/mpk and bin/mpk-run
#   make demo            compile Qwen3-8B; run the demo model on a text prompt
#   make check           build and run every test (Check suites, golden
#                        diagnostics and graphs, the examples, a fuzz smoke,
#                        the text layer, sampling)
#   make SAN=1 check     the same under ASan and UBSan
#   make WERROR=1 ...    warnings are errors (CI)
#   make fuzz            libFuzzer on the front end for FUZZ_TIME seconds
#   make fuzz-blob       libFuzzer on the blob reader for FUZZ_TIME seconds
#   make fuzz-text       libFuzzer on the tokenizer and config readers
#   make install PREFIX=/usr/local DESTDIR=
#   make check-ops       every task kind on its own, CPU executor vs a reference
#   make gpu-check       the GPU executor against the CPU one and HF (GPU machine)
#   make gpu-check-ops   only the op-by-op test, on the GPU too (GPU machine)
#   make bench           ms/token of mpk, PyTorch and the bandwidth limit (GPU machine)
#
# mpk-run gets the GPU executor (runtime/cuda/) when nvcc is found (PATH or
# /usr/local/cuda) and GPU is not 0; otherwise it is built CPU-only and says
# so. SAN=1 builds are CPU-only: the sanitizers do not cover device code.
#
# Objects depend on build/flags, which changes whenever the compiler or its
# flags change (SAN=1, PREFIX, ...), so switching never mixes stale objects.

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
CFLAGS  ?= -O2 -g
FLEX    ?= flex
BISON   ?= bison
FUZZ_TIME ?= 60

# make check and make demo first install the Debian packages they need when
# run as root, or print the apt-get line and stop (tools/deps.sh; also .ci/run).
ifneq ($(filter check demo,$(MAKECMDGOALS)),)
ifneq ($(shell sh tools/deps.sh >&2 && echo ok),ok)
$(error the prerequisites are missing (see above))
endif
endif

DATADIR := $(PREFIX)/share/mpk
MANDIR  := $(PREFIX)/share/man

# CI (CI=true in its environment) treats warnings as errors.
ifeq ($(CI),true)
WERROR ?= 1
endif

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wno-format-nonliteral
ifeq ($(WERROR),1)
WARN += -Werror
endif
ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

B := build

NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
ifeq ($(SAN),1)
GPU ?= 0
endif
GPU ?= $(if $(NVCC),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# Hopper's own code, plus sm_80 code and PTX that newer GPUs compile at load.
NVCC_ARCH ?= -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=[sm_80,compute_80]
NVCCFLAGS ?= -O3 -lineinfo
ifeq ($(GPU),1)
GPU_OBJ := $(patsubst %.cu,$(B)/%.o,$(wildcard runtime/cuda/*.cu)) $(B)/runtime/cuda/trace.o
GPU_LIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -lrt -lpthread -ldl -lstdc++
else
GPU_OBJ := $(B)/runtime/gpu_none.o
GPU_LIBS :=
endif
# Each layer compiles with the include directories of the layers it may use
# and no others (DESIGN.md: each includes only the layers before it), so a
# runtime file that includes a lowering header does not build.
CPPFLAGS_ALL := -D_GNU_SOURCE -DMPK_DATADIR='"$(DATADIR)"'
INC_UTIL    := -Iinclude
INC_FRONT   := -Ifrontend -I$(B)/gen -Iinclude
INC_BLOB    := -Iinclude
INC_LOWER   := -Ilowering -Ifrontend -Iinclude
INC_RUNTIME := -Iruntime -Iinclude
INC_TEXT    := -Itext -Iinclude
INC_DRIVER  := -I. -Ifrontend -Iinclude
INC_TESTS   := -I. -Ifrontend -I$(B)/gen -Iinclude
BASE_CFLAGS := -std=c11 $(CFLAGS) $(SANFLAGS)
ALL_CFLAGS := $(BASE_CFLAGS) $(WARN) $(CPPFLAGS_ALL)
# flex and bison output is not ours to fix; keep the warnings that matter.
GEN_CFLAGS := $(BASE_CFLAGS) -Wall -Wno-unused-function -Wno-sign-compare -Wno-unused-parameter \
              $(if $(filter 1,$(WERROR)),-Werror) $(CPPFLAGS_ALL) $(INC_FRONT)
# Header dependencies come from the compiler (-MMD -MP: build/**/*.d).
DEPFLAGS := -MMD -MP
LDFLAGS_ALL := $(SANFLAGS) $(LDFLAGS) -lm
LIBS := -ljansson -lz -lpcre2-8 -lutf8proc

CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck)

UTIL_SRC  := util/util.c
UTIL_OBJ  := $(UTIL_SRC:%.c=$(B)/%.o)
FRONT_SRC := frontend/arena.c frontend/diag.c frontend/parse.c frontend/value.c \
             frontend/sema.c frontend/graph.c
FRONT_OBJ := $(FRONT_SRC:%.c=$(B)/%.o) $(B)/gen/parser.o $(B)/gen/lexer.o
GEN_HDR   := $(B)/gen/parser.h $(B)/gen/lexer.h
BLOB_SRC  := blob/read.c blob/write.c blob/taskops.c
BLOB_OBJ  := $(BLOB_SRC:%.c=$(B)/%.o)
LOWER_SRC := lowering/lower.c lowering/fuse.c lowering/tile.c lowering/memory.c lowering/access.c \
             lowering/sweep.c lowering/ancset.c lowering/events.c lowering/place.c lowering/verify.c lowering/emit.c lowering/dump.c \
             lowering/shard.c
LOWER_OBJ := $(LOWER_SRC:%.c=$(B)/%.o)
RUNTIME_SRC := runtime/weights.c runtime/safetensors.c runtime/cpu/exec.c runtime/cpu/ops.c \
               runtime/cpu/sample.c
RUNTIME_OBJ := $(RUNTIME_SRC:%.c=$(B)/%.o)
TEXT_SRC := text/tokenizer.c text/chat.c text/genconfig.c text/stream.c text/json.c
TEXT_OBJ := $(TEXT_SRC:%.c=$(B)/%.o)
DRIVER_OBJ := $(B)/driver/mpk.o $(B)/driver/import.o $(B)/driver/tokenize.o $(B)/driver/run.o $(B)/driver/mpk-run.o

TEST_SRC := tests/check_main.c tests/check_lexer.c tests/check_parser.c tests/check_sema.c \
            tests/check_weights.c tests/check_lower.c tests/check_sample.c
TEST_OBJ := $(TEST_SRC:%.c=$(B)/%.o)

.PHONY: gpu-check bench demo fuzz-blob fuzz-text all check install uninstall clean fuzz check-unit check-golden check-cli check-examples check-fuzz \
        check-man check-import check-parity check-chunk check-blob check-ops gpu-check-ops check-text check-trace check-sample \
        check-demo
.DELETE_ON_ERROR:

all: bin/mpk bin/mpk-run

$(B)/flags: FORCE
	@mkdir -p $(B)
	@echo '$(CC) $(ALL_CFLAGS) $(LDFLAGS_ALL) GPU=$(GPU) $(NVCC) $(NVCC_ARCH) $(NVCCFLAGS)' | cmp -s - $@ || \
	    echo '$(CC) $(ALL_CFLAGS) $(LDFLAGS_ALL) GPU=$(GPU) $(NVCC) $(NVCC_ARCH) $(NVCCFLAGS)' > $@
FORCE:

$(B)/gen/parser.c $(B)/gen/parser.h &: grammar/parser.y
	@mkdir -p $(B)/gen
	$(BISON) -Wall -Werror -o $(B)/gen/parser.c --header=$(B)/gen/parser.h $<

$(B)/gen/lexer.c $(B)/gen/lexer.h &: grammar/lexer.l $(B)/gen/parser.h
	@mkdir -p $(B)/gen
	$(FLEX) -o $(B)/gen/lexer.c --header-file=$(B)/gen/lexer.h $<

# Which include directories each layer's objects see.
$(UTIL_OBJ): INC := $(INC_UTIL)
$(FRONT_SRC:%.c=$(B)/%.o): INC := $(INC_FRONT)
$(BLOB_OBJ): INC := $(INC_BLOB)
$(LOWER_OBJ): INC := $(INC_LOWER)
$(RUNTIME_OBJ) $(B)/runtime/gpu_none.o $(B)/runtime/cuda/trace.o: INC := $(INC_RUNTIME)
$(TEXT_OBJ): INC := $(INC_TEXT)
$(DRIVER_OBJ): INC := $(INC_DRIVER)
# What includes the generated headers needs them before its first compile.
$(FRONT_OBJ) $(LOWER_OBJ) $(B)/driver/mpk.o $(B)/driver/import.o $(B)/driver/run.o $(TEST_OBJ): | $(GEN_HDR)

$(B)/gen/%.o: $(B)/gen/%.c $(B)/flags
	$(CC) $(GEN_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/%.o: %.c $(B)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(INC) $(DEPFLAGS) -c -o $@ $<

$(B)/libmpkutil.a: $(UTIL_OBJ)
$(B)/libmpkfront.a: $(FRONT_OBJ)
$(B)/libmpkblob.a: $(BLOB_OBJ)
$(B)/libmpklower.a: $(LOWER_OBJ)
$(B)/libmpkrt.a: $(RUNTIME_OBJ)
$(B)/libmpktext.a: $(TEXT_OBJ)
$(B)/lib%.a:
	rm -f $@
	ar rcs $@ $^

# The libraries in link order: each after those that use it.
LIB_MPK    := $(B)/libmpklower.a $(B)/libmpkrt.a $(B)/libmpkblob.a $(B)/libmpkfront.a $(B)/libmpktext.a \
              $(B)/libmpkutil.a
LIB_MPKRUN := $(B)/libmpkrt.a $(B)/libmpkblob.a $(B)/libmpktext.a $(B)/libmpkutil.a

bin/mpk: $(B)/driver/mpk.o $(B)/driver/import.o $(B)/driver/tokenize.o $(B)/driver/run.o $(LIB_MPK)
	@mkdir -p bin
	$(CC) -o $@ $^ $(LIBS) $(LDFLAGS_ALL)

CUDA_SRC := $(wildcard runtime/cuda/*.cu)
$(B)/runtime/cuda/%.o: runtime/cuda/%.cu $(B)/flags
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(NVCC_ARCH) -std=c++17 -D_GNU_SOURCE $(INC_RUNTIME) $(DEPFLAGS) \
	    -Xcompiler -Wall,-Wextra $(if $(filter 1,$(WERROR)),-Werror all-warnings) -c -o $@ $<

bin/mpk-run: $(B)/driver/mpk-run.o $(GPU_OBJ) $(LIB_MPKRUN)
	@mkdir -p bin
ifneq ($(GPU),1)
	@echo "note: no CUDA toolkit (nvcc) found, or GPU=0: bin/mpk-run is CPU-only (mpk-run --cpu)"
endif
	$(CC) -o $@ $(B)/driver/mpk-run.o $(GPU_OBJ) $(LIB_MPKRUN) $(LIBS) $(GPU_LIBS) $(LDFLAGS_ALL)

# ---- the main job -----------------------------------------------------------
# Compile the real Qwen3-8B to a blob (no weights needed), then import, build
# and run a small Qwen3 from tests/data, on the GPU when there is one (and
# mpk-run was built with CUDA), else on the CPU reference executor, next to
# the tokens HF transformers produced for it.
# The demo: compile Qwen3-8B to a blob (its size, tasks, events, bytes per
# token), then import, build and run the small model of examples/demo
# (trained by tools/train-demo.py) on a text prompt, on the GPU when there
# is one and on the CPU reference executor otherwise; the text streams as it
# is made, the --stats line after it on a line of its own.
DEMO := examples/demo
DEMO_PROMPT ?= The meaning of life is
DEMO_N ?= 96
demo: bin/mpk bin/mpk-run
	@mkdir -p $(B)/demo
	bin/mpk build --stats examples/qwen3-8b.mpk -o $(B)/demo/qwen3-8b.mpkb
	bin/mpk import $(DEMO) -o $(B)/demo/demo.mpk
	bin/mpk build $(B)/demo/demo.mpk -o $(B)/demo/demo.mpkb
	@if [ "$(GPU)" = 1 ] && nvidia-smi -L >/dev/null 2>&1; then on=GPU; exe=; else on=CPU; exe=' --cpu'; fi; \
	d=$(B)/demo; \
	echo "bin/mpk-run $$d/demo.mpkb --weights $(DEMO)$$exe --stats -n $(DEMO_N) --prompt '$(DEMO_PROMPT)'"; \
	echo "(on the $$on)"; echo; \
	printf '%s' '$(DEMO_PROMPT)'; \
	{ bin/mpk-run $$d/demo.mpkb --weights $(DEMO)$$exe --stats -n $(DEMO_N) --prompt '$(DEMO_PROMPT)' \
	    2>$$d/stderr; echo $$? >$$d/rc; } | tee $$d/out; \
	[ -z "$$(tail -c 1 $$d/out)" ] || echo; \
	cat $$d/stderr >&2; \
	exit $$(cat $$d/rc)

# ---- tests ------------------------------------------------------------------

$(B)/tests/%.o: tests/%.c $(B)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(INC_TESTS) $(CHECK_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/tests/check_mpk: $(TEST_OBJ) $(LIB_MPK)
	$(CC) -o $@ $^ $(CHECK_LIBS) $(LIBS) $(LDFLAGS_ALL)

# The fuzz targets' replayers: each target with tests/fuzz/replay.c's main.
FUZZ_REPLAY := tests/fuzz/replay.c
$(B)/tests/fuzz_smoke: tests/fuzz/fuzz_frontend.c $(FUZZ_REPLAY) $(B)/libmpkfront.a $(B)/libmpkutil.a $(B)/flags | $(GEN_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(INC_TESTS) $(DEPFLAGS) -DMPK_FUZZ_MAIN -o $@ $< $(FUZZ_REPLAY) $(B)/libmpkfront.a $(B)/libmpkutil.a $(LDFLAGS_ALL)

check: check-unit check-golden check-cli check-examples check-fuzz check-man check-import check-blob check-parity \
       check-chunk check-ops check-text check-trace check-sample check-demo

check-unit: $(B)/tests/check_mpk bin/mpk
	$(B)/tests/check_mpk

check-import: bin/mpk
	sh tests/run-import.sh bin/mpk

# The tokenizer and chat formats against HF's, on recorded fixtures.
check-text: bin/mpk bin/mpk-run
	sh tests/run-text.sh bin/mpk bin/mpk-run

# Sampling through mpk-run --cpu: greedy, seeds, top-k, generation_config.json,
# refusals (the sampler's statistics are in check-unit: tests/check_sample.c).
$(B)/tests/sample_replay: tests/sample_replay.c $(B)/libmpkrt.a $(B)/libmpkblob.a $(B)/libmpkutil.a $(B)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I. -Iinclude $(DEPFLAGS) -o $@ $< $(B)/libmpkrt.a $(B)/libmpkblob.a $(B)/libmpkutil.a \
	    $(LDFLAGS_ALL)

check-sample: bin/mpk bin/mpk-run $(B)/tests/sample_replay
	sh tests/run-sample.sh bin/mpk bin/mpk-run $(B)/tests/sample_replay

# Every example compiles to a blob that passes the verifier and the reader.
check-blob: bin/mpk
	sh tests/run-blob.sh bin/mpk

# mpk import -> mpk build -> mpk-run --cpu against HF transformers.
$(B)/tests/logits_cmp: tests/logits_cmp.c $(B)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -o $@ $< $(LDFLAGS_ALL)

check-parity: bin/mpk bin/mpk-run $(B)/tests/logits_cmp
	sh tests/run-parity.sh bin/mpk bin/mpk-run $(B)/tests/logits_cmp

# Prompts in chunk steps (mpk build --chunk) against the one-token path and HF.
check-chunk: bin/mpk bin/mpk-run $(B)/tests/logits_cmp
	sh tests/run-chunk.sh bin/mpk bin/mpk-run $(B)/tests/logits_cmp

# The demo model (examples/demo) against HF's greedy tokens (tests/data/demo-ref).
check-demo: bin/mpk bin/mpk-run $(B)/tests/logits_cmp
	sh tests/run-demo.sh bin/mpk bin/mpk-run $(B)/tests/logits_cmp

# Every task kind on its own: small hand-built blobs (tests/ops/make-ops.c)
# run by the CPU executor, against a reference computed from mpk-blob(5).
$(B)/tests/ops/make-ops: tests/ops/make-ops.c $(B)/libmpkblob.a $(B)/libmpkutil.a $(B)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(INC_BLOB) $(DEPFLAGS) -o $@ $< $(B)/libmpkblob.a $(B)/libmpkutil.a $(LIBS) $(LDFLAGS_ALL)

check-ops: bin/mpk-run $(B)/tests/ops/make-ops
	sh tests/ops/run.sh bin/mpk-run $(B)/tests/ops/make-ops

# On a machine with a GPU: the GPU executor against the CPU executor and
# HF transformers, compute-sanitizer, refusals, the watchdog, the trace;
# then the op-by-op test on both executors. Both run even if one fails.
gpu-check: bin/mpk bin/mpk-run $(B)/tests/logits_cmp $(B)/tests/ops/make-ops $(B)/tests/sample_replay
	@test "$(GPU)" = 1 || { echo "gpu-check: mpk-run was built without CUDA (GPU=$(GPU))"; exit 1; }
	@rc=0; \
	sh tests/run-gpu.sh bin/mpk bin/mpk-run $(B)/tests/logits_cmp || rc=1; \
	sh tests/ops/run.sh --gpu bin/mpk-run $(B)/tests/ops/make-ops || rc=1; \
	exit $$rc

gpu-check-ops: bin/mpk-run $(B)/tests/ops/make-ops
	@test "$(GPU)" = 1 || { echo "gpu-check-ops: mpk-run was built without CUDA (GPU=$(GPU))"; exit 1; }
	sh tests/ops/run.sh --gpu bin/mpk-run $(B)/tests/ops/make-ops

# On a machine with a GPU: mpk, PyTorch (eager and CUDA graph) and the
# bandwidth limit in one run; see bench/README.md.
bench: bin/mpk bin/mpk-run
	@test "$(GPU)" = 1 || { echo "bench: mpk-run was built without CUDA (GPU=$(GPU))"; exit 1; }
	bash bench/bench.sh bin/mpk bin/mpk-run

# tools/trace-report.py on hand-written mpk-run --trace files.
check-trace:
	sh tests/run-trace.sh

check-golden: bin/mpk
	sh tests/run-golden.sh bin/mpk

check-cli: bin/mpk bin/mpk-run
	sh tests/run-cli.sh bin/mpk

check-examples: bin/mpk
	@set -e; for f in examples/*.mpk; do echo "mpk check -Werror $$f"; bin/mpk check -Werror $$f; done

$(B)/tests/fuzz_blob_smoke: tests/fuzz/fuzz_blob.c $(FUZZ_REPLAY) $(LIB_MPKRUN) $(B)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(INC_RUNTIME) $(DEPFLAGS) -DMPK_FUZZ_MAIN -o $@ $< $(FUZZ_REPLAY) $(LIB_MPKRUN) $(LIBS) $(LDFLAGS_ALL)

$(B)/tests/fuzz_text_smoke: tests/fuzz/fuzz_text.c $(FUZZ_REPLAY) $(B)/libmpktext.a $(B)/libmpkutil.a $(B)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I. -Iinclude $(DEPFLAGS) -DMPK_FUZZ_MAIN -o $@ $< $(FUZZ_REPLAY) $(B)/libmpktext.a $(B)/libmpkutil.a $(LIBS) $(LDFLAGS_ALL)

TEXT_FUZZ_DIRS := tests/fuzz/text-corpus tests/data/tok-hostile tests/data/tok-llama3 tests/data/tok-qwen2

check-fuzz: $(B)/tests/fuzz_smoke $(B)/tests/fuzz_blob_smoke $(B)/tests/fuzz_text_smoke
	$(B)/tests/fuzz_smoke tests/fuzz/corpus tests/diag examples stdlib/std
	$(B)/tests/fuzz_blob_smoke tests/fuzz/blob-corpus
	$(B)/tests/fuzz_text_smoke $(TEXT_FUZZ_DIRS)

check-man:
	@if command -v mandoc >/dev/null; then \
	    for m in man/*.[15]; do echo "mandoc -Tlint $$m"; mandoc -Tlint -Wwarning $$m || exit 1; done; \
	else echo "mandoc not installed; man pages not linted"; fi

# libFuzzer needs clang; the corpus grows in build/fuzz-corpus, and any
# crash is saved in build/fuzz-crashes for tests/fuzz/corpus.
FUZZ_SRC := $(FRONT_SRC) $(UTIL_SRC) $(B)/gen/parser.c $(B)/gen/lexer.c
$(B)/fuzz/fuzz_frontend: tests/fuzz/fuzz_frontend.c $(FRONT_SRC) $(UTIL_SRC) $(GEN_HDR)
	@mkdir -p $(dir $@)
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE $(INC_TESTS) \
	    -Wno-unused-function -o $@ tests/fuzz/fuzz_frontend.c $(FUZZ_SRC) -lm

# The blob reader (and the CPU executor on what it accepts); the CRC-fixing
# build rewrites checksums after mutation so the deeper checks are reached.
RT_FUZZ_SRC := tests/fuzz/fuzz_blob.c $(BLOB_SRC) $(RUNTIME_SRC) $(UTIL_SRC)
$(B)/fuzz/fuzz_blob: $(RT_FUZZ_SRC) $(wildcard include/mpk/*.h include/mpk/*.def runtime/*.h runtime/cpu/*.h)
	@mkdir -p $(dir $@)
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -DMPK_FUZZ_FIX_CRC $(INC_RUNTIME) \
	    -o $@ $(RT_FUZZ_SRC) $(LIBS) -lm

fuzz-blob: $(B)/fuzz/fuzz_blob
	@mkdir -p $(B)/fuzz-blob-corpus $(B)/fuzz-crashes
	$(B)/fuzz/fuzz_blob -max_total_time=$(FUZZ_TIME) -max_len=262144 -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=$(B)/fuzz-crashes/ $(B)/fuzz-blob-corpus tests/fuzz/blob-corpus

# The text readers: tokenizer.json, tokenizer_config.json, generation_config.json.
$(B)/fuzz/fuzz_text: tests/fuzz/fuzz_text.c $(TEXT_SRC) $(UTIL_SRC) text/text.h
	@mkdir -p $(dir $@)
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. -Iinclude \
	    -o $@ tests/fuzz/fuzz_text.c $(TEXT_SRC) $(UTIL_SRC) $(LIBS) -lm

fuzz-text: $(B)/fuzz/fuzz_text
	@mkdir -p $(B)/fuzz-text-corpus $(B)/fuzz-crashes
	$(B)/fuzz/fuzz_text -max_total_time=$(FUZZ_TIME) -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=$(B)/fuzz-crashes/ $(B)/fuzz-text-corpus tests/fuzz/text-corpus

fuzz: $(B)/fuzz/fuzz_frontend
	@mkdir -p $(B)/fuzz-corpus $(B)/fuzz-crashes
	$(B)/fuzz/fuzz_frontend -max_total_time=$(FUZZ_TIME) -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
	    -artifact_prefix=$(B)/fuzz-crashes/ -dict=tests/fuzz/mpk.dict \
	    $(B)/fuzz-corpus tests/fuzz/corpus examples stdlib/std

# ---- install ----------------------------------------------------------------

install: bin/mpk bin/mpk-run
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(DATADIR)/std $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5
	install -m 755 bin/mpk $(DESTDIR)$(PREFIX)/bin/mpk
	install -m 755 bin/mpk-run $(DESTDIR)$(PREFIX)/bin/mpk-run
	install -m 644 stdlib/std/*.mpk $(DESTDIR)$(DATADIR)/std/
	install -m 644 man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 man/*.5 $(DESTDIR)$(MANDIR)/man5/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/mpk $(DESTDIR)$(PREFIX)/bin/mpk-run
	rm -f $(DESTDIR)$(MANDIR)/man1/mpk.1 $(DESTDIR)$(MANDIR)/man1/mpk-run.1
	rm -f $(DESTDIR)$(MANDIR)/man5/mpk.5 $(DESTDIR)$(MANDIR)/man5/mpk-blob.5
	rm -rf $(DESTDIR)$(DATADIR)

clean:
	rm -rf $(B) bin

-include $(shell find $(B) -name '*.d' 2>/dev/null)
