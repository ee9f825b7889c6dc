# IEIW builder. The two set-up commands: `make build` and `make test` (each creates .venv first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/demo.yaml
OUT    ?= out
PORT   ?= 4200

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: install install-dev build build-multitask test fuzz browser train-staged test-integration lama-cleaner iopaint serve bench bench-loader bench-giqa bench-stats bench-removal bench-lama bench-exemplar bench-manifest bench-stages bench-parallel bench-profile bench-scale bench-gpu bench-filters train verify stats clean

# One stamp per set of extras, so `make build` does not pull the training stack (torch) it does not need.
$(BIN)/.stamp-%: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[$(subst +,$(comma),$*)]'
	@touch $@
comma := ,

install: $(BIN)/.stamp-crawl
install-dev: $(BIN)/.stamp-dev+crawl+train+dask

build: install  ## the embedded demo build: bundled sample -> out/ieiw, no GPU, no network
	$(BIN)/ieiw build $(CONFIG) --out $(OUT)
	$(BIN)/ieiw stats $(OUT)/ieiw

build-multitask: install  ## demo removal + every converter and importer from samples -> out/multitask/*
	$(BIN)/ieiw build configs/multitask.yaml
	@for folder in ieiw segmentation keypoints enhancement editing adaptation; do $(BIN)/ieiw stats out/multitask/$$folder | head -4; done

test: install-dev browser  ## the whole test suite (CI runs this)
	$(BIN)/python -m pytest -q

# The fuzz suite alone, long: 10,000 random examples per reader family (IEIW_FUZZ_EXAMPLES= to change);
# `make test` runs a small derandomised part of it. docs/security.md.
fuzz: install-dev  ## hypothesis over every dataset reader: damaged records and files (tests/fuzz)
	IEIW_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

# The HTML report's browser test drives Debian's Chromium (playwright cannot download a browser offline).
# Installed here when this is root with apt; otherwise `make test` stops before any test and says how.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report's browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test needs Chromium for the report's browser test: sudo apt-get install -y chromium (Debian/Ubuntu), then make test again" >&2; \
	    exit 1; \
	  fi; }

# Inpainting servers in their own venvs, cached outside the checkout (${IEIW_SIDE_VENVS:-~/.cache/ieiw/venvs},
# keyed by their pins; ~6 GB each): docs/removal.md, "Inpainting servers". Each prints its venv's path.
lama-cleaner:  ## venv with the lama-cleaner 1.2.5 server (+ huggingface-hub 0.25.2)
	@scripts/side_venv.sh lama-cleaner

iopaint:  ## venv with the IOPaint 1.6.0 server
	@scripts/side_venv.sh iopaint

# Real servers, started by the tests (tests/integration). pytest's exit code 5 (no tests ran) fails too.
test-integration: install-dev lama-cleaner iopaint  ## the server backends against real lama-cleaner / IOPaint servers
	IEIW_LAMA_CLEANER_VENV="$$(scripts/side_venv.sh --path lama-cleaner)" \
	IEIW_IOPAINT_VENV="$$(scripts/side_venv.sh --path iopaint)" \
	$(BIN)/python -m pytest -q -m integration tests/integration

serve: install  ## Prefect server + deployments from prefect.yaml + a process worker
	BIN=$(BIN) PORT=$(PORT) scripts/serve.sh

bench: install-dev  ## pipeline and shard-writer overhead (bench/build_overhead.py)
	$(BIN)/python bench/build_overhead.py

bench-giqa: install-dev  ## KNN-GIQA: IVF index vs exact L1 search on 200k clustered vectors (bench/giqa.py)
	$(BIN)/python bench/giqa.py

bench-stats: install-dev  ## stats + report on 100k synthetic rows vs DuckDB (bench/stats_scale.py)
	$(BIN)/python bench/stats_scale.py

bench-loader: install-dev  ## training loader throughput at 256 px on out/ieiw (bench/loader.py)
	$(BIN)/python bench/loader.py --data $(DATA)

bench-removal: install-dev  ## removal quality vs the true background: Telea, Navier-Stokes, mean fill (bench/removal_quality.py)
	$(BIN)/python bench/removal_quality.py

bench-lama: install-dev  ## in-process LaMa's own work per image vs bare decode + encode (bench/lama_overhead.py)
	$(BIN)/python bench/lama_overhead.py

bench-manifest: install-dev  ## manifest recording cost per unit at the start and at 10,000 units (bench/manifest_cost.py)
	$(BIN)/python bench/manifest_cost.py

bench-stages: install-dev  ## per-stage throughput on one core + pyinstrument hotspots (bench/stages.py)
	$(BIN)/python bench/stages.py --profile

bench-parallel: install-dev  ## parallel efficiency: 2 pinned worker processes vs 1 (bench/parallel.py)
	$(BIN)/python bench/parallel.py

bench-profile: install-dev  ## where a Dask build's CPU goes, per process, sampled by py-spy (bench/profile_build.py)
	$(BIN)/python bench/profile_build.py

bench-scale: install-dev  ## 2k/10k/20k-pair embedded builds: time, peak RSS, extrapolation to 159k (bench/scale_build.py)
	$(BIN)/python bench/scale_build.py

bench-exemplar: install-dev  ## exemplar index: IVF-PQ + exact re-rank vs flat on 1M x 768 clustered vectors (bench/exemplar_search.py)
	$(BIN)/python bench/exemplar_search.py

bench-filters: install-dev  ## each selection rule's precision / recall against planted failures of known truth (bench/filters.py)
	$(BIN)/python bench/filters.py

# On a GPU machine: every model stage and the trainer at full size, random weights of the real shapes
# (docs/PERFORMANCE.md, "GPU truth"). `make test` runs its CPU mode, `bench/gpu.py --tiny`.
bench-gpu: install-dev  ## GPU truth: items/s, peak memory, GPU busy share per stage; training vs diffusers (bench/gpu.py)
	$(BIN)/python bench/gpu.py $(BENCH_GPU_ARGS)

# InstructDiffusion via accelerate. Defaults to SD 1.5 (local weights + GPU);
# CPU smoke run: make train CONFIG=configs/train.tiny.yaml   (docs/training.md)
DATA ?= $(OUT)/ieiw
ACCELERATE_ARGS ?=
TRAIN_ARGS ?=
train: CONFIG := configs/train.sd15.yaml
train: install-dev
	@$(BIN)/python -m ieiw.training.train --check --config $(CONFIG) --data $(DATA) $(TRAIN_ARGS)
	$(BIN)/accelerate launch --quiet $(ACCELERATE_ARGS) -m ieiw.training.train --config $(CONFIG) --data $(DATA) $(TRAIN_ARGS)

# The paper's stages in one command: adapt (captioned rows) -> edit (starting from the adapted UNet) -> align
# (starting from the edit stage, when ALIGN_DATA names the shards `ieiw align-pick` wrote). A stage whose
# export (pipeline/) exists is not run again, so a second call with ALIGN_DATA only aligns. docs/multitask.md.
train-staged: CONFIG := configs/train.sd15.yaml
train-staged: TRAIN_OUT ?= out/train/staged
train-staged: ADAPT_DATA ?= out/multitask/adaptation
train-staged: install-dev
	test -d $(TRAIN_OUT)/adapt/pipeline || $(BIN)/accelerate launch --quiet $(ACCELERATE_ARGS) -m ieiw.training.train \
	  --config $(CONFIG) --stage adapt --data $(ADAPT_DATA) --output-dir $(TRAIN_OUT)/adapt $(ADAPT_ARGS)
	test -d $(TRAIN_OUT)/edit/pipeline || $(BIN)/accelerate launch --quiet $(ACCELERATE_ARGS) -m ieiw.training.train \
	  --config $(CONFIG) --stage edit --data $(DATA) --output-dir $(TRAIN_OUT)/edit \
	  --set model.init_from=$(TRAIN_OUT)/adapt $(TRAIN_ARGS)
	@if [ -n "$(ALIGN_DATA)" ]; then \
	  $(BIN)/accelerate launch --quiet $(ACCELERATE_ARGS) -m ieiw.training.train --config $(CONFIG) --stage align \
	    --data $(ALIGN_DATA) --output-dir $(TRAIN_OUT)/align --set model.init_from=$(TRAIN_OUT)/edit $(ALIGN_ARGS); \
	else echo "align: pick with ieiw align-pick BENCH --pipeline $(TRAIN_OUT)/edit/pipeline, then make train-staged ALIGN_DATA=<its shards>"; fi

stats:
	$(BIN)/ieiw stats $(OUT)/ieiw

verify:
	$(BIN)/ieiw verify $(OUT)/ieiw

clean:
	rm -rf $(OUT) .prefect
