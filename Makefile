# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-labelstudio
DATA ?= data
# Where `make demo` and `make up` serve: Label Studio, the Prefect server (up). The demo shop
# serves on 8700 (pages) and 8701 (photos).
LABEL_STUDIO_PORT ?= 8080
PREFECT_PORT ?= 4200
LABEL_STUDIO_VERSION := 1.23.2

.PHONY: env demo demo-quick test pytest lint bench up down stop clean

# The project's environment: reviewlens, torch, Prefect, the SDK and the dev tools. pip says
# what it installs as it goes: a quiet install is a minute of silence on a newcomer's terminal.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install --no-compile -e '.[dev,bench]'
	@# pip byte-compiles one file at a time; compileall uses every core. Like pip, it leaves out the
	@# few files written for other Pythons (their errors are not the install's).
	@echo "byte-compiling the environment on every core (about half a minute)"
	@(while sleep 10; do echo "  still byte-compiling"; done) & beat=$$!; \
	$(VENV)/bin/python -m compileall -qq -j 0 $(VENV)/lib; kill $$beat; true
	touch $@

# Label Studio pins its own dependencies: it lives in an environment of its own.
$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install 'label-studio==$(LABEL_STUDIO_VERSION)'
	$(LS_VENV)/bin/python -m reviewlens.labelstudio_server
	touch $@

# The two environments are made side by side: each install waits on its disk and unpacking as much
# as on a core.
env:
	@$(MAKE) --no-print-directory -j2 $(VENV)/.installed $(LS_VENV)/.installed

demo: env
	$(VENV)/bin/reviewlens-demo run --data-dir $(DATA) --port $(LABEL_STUDIO_PORT)

demo-quick: env
	$(VENV)/bin/reviewlens-demo run --data-dir $(DATA) --port $(LABEL_STUDIO_PORT) --quick

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# pytest-xdist workers: on 2 cores, a third worker computes while the others wait on their servers.
# A module's tests go to one worker whole (loadgroup), in the order tests/conftest.py gives: the
# longest first (xdist would otherwise hand out the modules with the most tests first).
TEST_WORKERS ?= 3

# The tests run in a home made new for each run: nothing a machine kept from earlier work
# (caches, torch's downloads, Prefect's database) can make a test pass, and what they write
# (temporary files included) goes with that folder.
test: env lint pytest

pytest: env
	@fresh=$$(mktemp -d) && mkdir $$fresh/tmp && echo "tests run with HOME=$$fresh" && \
	HOME=$$fresh XDG_CACHE_HOME=$$fresh/.cache TORCH_HOME=$$fresh/.cache/torch PREFECT_HOME=$$fresh/.prefect \
	TMPDIR=$$fresh/tmp NUMBA_CACHE_DIR=$$fresh/.cache/numba \
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder; status=$$?; rm -rf $$fresh; exit $$status

# Benchmarks run outside `make test`; each prints its figures, the last line as `name: value`.
bench: env
	for b in crawl_rate crawl_faults hash_rate neardup_quality neardup_scale rules_agreement bad_inputs \
		train_throughput retrain_cost train_memory predict_latency grocery_accuracy open_set multi_object index_scale \
		box_views label_push label_faults; do \
		$(VENV)/bin/python -m tests.benchmarks.$$b || exit 1; done

# The services scheduled runs need, on this machine: Label Studio, a Prefect server, its work pool
# and worker, every deployment of prefect.yaml. `down` stops exactly what `up` started.
up: env
	$(VENV)/bin/reviewlens up --data-dir $(DATA) --label-studio-port $(LABEL_STUDIO_PORT) --prefect-port $(PREFECT_PORT)

down:
	-$(VENV)/bin/reviewlens down --data-dir $(DATA) --label-studio-port $(LABEL_STUDIO_PORT) --prefect-port $(PREFECT_PORT)

# What `make demo` leaves running for you to look at: its Label Studio and the demo shop.
stop:
	-$(VENV)/bin/reviewlens-demo stop --data-dir $(DATA)

clean: stop
	rm -rf $(DATA)
