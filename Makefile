# Thin wrapper over scripts/install-deps.sh, CMake and ctest. The build lives in build/
# (Release, -Werror) and build-asan/ (AddressSanitizer + UBSan + LeakSanitizer).
#   make run    install, build, train Fashion-MNIST on 2 ranks (ddprun + ember-train,
#               examples/configs/fmnist_mlp.yaml)
#   make test   install, build both flavours, run the whole suite under ctest in each
#   make fuzz   install, build the libFuzzer harnesses (clang, in build-asan/fuzz) and run each
#               for FUZZ_SECONDS (default 60) from its corpus (tests/fuzz/, docs/reliability.md)
#   make soak   install, build, then for SOAK_SECONDS (default 600) train 2 ranks under ddprun
#               while SIGKILLing a random rank at random moments; each job restarts and resumes
#               from its last checkpoint, and must end with every checkpoint loadable and its
#               final parameters byte-identical to an uninterrupted run's (tests/faults/soak.sh,
#               docs/reliability.md; not in CI)
#   make bench  install, build, run the benchmarks (training and data loading against PyTorch,
#               collectives against raw MPI_Allreduce)
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 600

.PHONY: all deps configure build run test test-release test-asan fuzz soak bench clean

all: build

deps:
	./scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DEMBER_WERROR=ON $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

run: build
	./$(BUILD)/launcher/ddprun --config examples/configs/fmnist_mlp.yaml

test-release: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Asan -DEMBER_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(JOBS)

test: test-release test-asan

fuzz: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Asan -DEMBER_WERROR=ON -DEMBER_FUZZ=ON $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) --target ember_fuzz -j$(JOBS)
	./tests/fuzz/run.sh --seconds $(FUZZ_SECONDS) $(ASAN_BUILD)/fuzz

soak: build
	SOAK_SECONDS=$(SOAK_SECONDS) ./tests/faults/soak.sh $(BUILD)/examples/ember-train \
	  $(BUILD)/launcher/ddprun .

bench: build
	./cluster/bench/train_bench.sh $(BUILD)
	./collectives/bench/run.sh $(BUILD)
	./cluster/bench/ddp_bench.sh $(BUILD)
	./dataloader/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
