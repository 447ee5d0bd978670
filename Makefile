# lockserve: `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
UV_VERSION := 0.13.9
REQS   ?= requirements/dev.lock
REMOTE ?=
DVC    := $(BIN)/dvc
export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup data init pipeline retrain run serve test clients proto lint push pull lock clean bench bench-pipeline bench-protocols bench-tools soak deploy package package-tools export-mlflow bench-package bench-page bench-batch s3-up s3-down reload score web browser redis mutation

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed-%: requirements/%.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python $<
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(VENV)/.installed-dev  ## create .venv with the pinned dependencies

CLIENTS := .venv-clients
$(CLIENTS)/.installed: requirements/clients.lock
	$(PYTHON) -m venv $(CLIENTS)
	$(CLIENTS)/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(CLIENTS)/bin/uv pip sync -q --compile-bytecode --python $(CLIENTS)/bin/python $<
	touch $@

clients: $(CLIENTS)/.installed  ## .venv-clients: tritonclient, the kserve SDK and mlflow, for the protocol tests and the MLflow export

data: setup  ## the raw table params.yaml names: work tree, else the default remote, else the packaged example (md5-checked)
	$(BIN)/python -m tools.data

init: setup  ## DATA=<csv or parquet> TARGET=<column> [TASK=classification|regression]: track a table, infer params
	@test -n "$(DATA)" -a -n "$(TARGET)" || \
	  { echo "usage: make init DATA=<csv or parquet> TARGET=<column> [TASK=classification|regression]" >&2; exit 2; }
	$(BIN)/python -m src.init "$(DATA)" "$(TARGET)" $(if $(TASK),--task "$(TASK)")

pipeline: data .dvc/plots-page.html  ## pull what the default remote holds, reproduce the rest
	$(DVC) pull --allow-missing
	$(DVC) repro
	$(DVC) metrics show

retrain: setup  ## [STAGE=prod]: newest raw data, dvc repro, then commit, GTO version and stage only past the gate (params.yaml retrain)
	$(BIN)/python -m tools.retrain $(if $(STAGE),--stage "$(STAGE)")

run: pipeline serve  ## set up, reproduce or pull the pipeline, then serve on :8000

serve: setup web  ## granian workers (api/serve.py) on $$HOST:$$PORT (127.0.0.1:8000), WEB_CONCURRENCY workers
	$(BIN)/python -m api.serve

test: data lint web browser redis clients package-tools .dvc/plots-page.html  ## set up, then lint and the whole test suite
	$(BIN)/python -m pytest -vv --durations=30

mutation: setup redis  ## mutmut over the modules [tool.mutmut] only_mutate lists, with the fast tests (not in `make test`)
	$(BIN)/python -m tools.mutation $(MUTANTS)

proto: setup  ## regenerate the gRPC stubs in api/proto from its .proto (committed; a test checks they match)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  api/proto/open_inference_grpc.proto

score: setup  ## INPUT=<csv or parquet, path or s3://> OUTPUT=<parquet folder> [REV=HEAD] [KEEP=a,b] [DASK_SCHEDULER=tcp://...]: the pinned model scores a table on Dask
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || \
	  { echo "usage: make score INPUT=<csv or parquet> OUTPUT=<parquet folder> [REV=rev] [KEEP=a,b]" >&2; exit 2; }
	$(BIN)/python -m batch.score "$(INPUT)" "$(OUTPUT)" $(if $(REV),--rev "$(REV)") $(if $(KEEP),--keep "$(KEEP)")

reload:  ## zero-downtime reload of serving.yaml: prints "reloaded: <variants, md5s>" or "refused: <reason>" (exit 1)
	@$(BIN)/python -m api.reload

deploy: $(VENV)/.installed-api web  ## deploy host: api deps only, fetch + verify the model LOCKSERVE_REV (HEAD) pins, serve
	LOCKSERVE_REV=$${LOCKSERVE_REV:-HEAD} $(BIN)/python -m api.serve

s3-up: setup  ## start a local SeaweedFS S3 server (state in .s3-local/); prints the env to export
	$(BIN)/python -m tools.seaweedfs up .s3-local

s3-down: setup  ## stop the local SeaweedFS S3 server
	$(BIN)/python -m tools.seaweedfs down .s3-local

# `dvc plots show` page with vega, vega-lite and vega-embed inlined (works offline);
# .dvc/config points plots.html_template at it.
.dvc/plots-page.html: tools/plots/package-lock.json tools/plots_page.py | setup
	npm ci --prefix tools/plots --no-audit --no-fund --loglevel=error
	$(BIN)/python -m tools.plots_page $@

# onnxruntime-web (on-device inference on the page) and swagger-ui-dist (/docs offline) from the
# npm registry, pinned in web/package-lock.json; the service serves the copies in api/page/static/vendor.
WEB_FILES := onnxruntime-web/dist/ort.wasm.bundle.min.mjs onnxruntime-web/dist/ort-wasm-simd-threaded.wasm \
  swagger-ui-dist/swagger-ui-bundle.js swagger-ui-dist/swagger-ui.css swagger-ui-dist/favicon-32x32.png
# Without npm (a deploy host may have none) the service still runs: the page answers from the
# server only and /docs has no Swagger UI, which it logs at start.
api/page/static/vendor/.installed: web/package-lock.json
	@if ! command -v npm >/dev/null; then \
	  echo "npm not found: api/page/static/vendor stays empty (install npm, then make web)" >&2; \
	else \
	  npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error && \
	  rm -rf api/page/static/vendor && mkdir -p api/page/static/vendor && \
	  cp $(addprefix web/node_modules/,$(WEB_FILES)) api/page/static/vendor/ && touch $@; \
	fi

web: api/page/static/vendor/.installed  ## the page's vendored files (onnxruntime-web, Swagger UI) into api/page/static/vendor

browser:  ## headless Chromium (Debian's chromium) for the browser tests, if missing
	@test -x /usr/bin/chromium || \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends chromium)

redis:  ## redis-server (Debian's redis-server) for the tests of the state shared by many hosts, if missing
	@command -v redis-server >/dev/null || \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends redis-server)

PACKAGE_TOOLS := buildah podman skopeo mmdebstrap runc systemd-analyze
package-tools:  ## buildah, podman, skopeo, runc, mmdebstrap, systemd-analyze and Debian's python3.11, if missing
	@(for tool in $(PACKAGE_TOOLS); do command -v $$tool >/dev/null || exit 1; done; \
	  test -x /usr/bin/python3.11) || \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends \
	    buildah podman skopeo mmdebstrap runc systemd python3.11)

# the mlflow target writes its model with MLflow from .venv-clients
package: pipeline web package-tools $(if $(filter mlflow,$(TARGET)),clients)  ## TARGET=oci|lambda|systemd|mlflow|all (all: the first three) [SET="prefix=/srv/x ..."]: the model LOCKSERVE_REV (HEAD) pins, as deployable artifacts in dist/
	$(BIN)/python -m package --target $(or $(TARGET),all) $(foreach option,$(SET),--set $(option))

export-mlflow: pipeline clients  ## the model LOCKSERVE_REV (HEAD) pins as an MLflow pyfunc model in dist/mlflow/ (make package TARGET=mlflow)
	$(BIN)/python -m package --target mlflow

bench-tools:  ## Apache Bench (ab) from Debian's apache2-utils, if missing
	@command -v ab >/dev/null || (apt-get update -q && apt-get install -y -q apache2-utils)

bench: pipeline bench-tools  ## load test vs the lecture's Flask baseline; writes bench/results and README
	$(BIN)/python -m bench.run

soak: pipeline  ## 10 minutes of mixed good and bad requests across a reload every 2 minutes: 5xx, RSS, descriptors; writes bench/results and README
	$(BIN)/python -m bench.soak $(if $(MINUTES),--minutes $(MINUTES))

bench-protocols: setup  ## gRPC vs REST (lockserve JSON, OIP, MLflow) on one server, one load generator; writes bench/results and README
	$(BIN)/python -m bench.protocols

bench-package: pipeline web package-tools  ## the three artifacts' sizes, build times and start to first answer vs the repo's own server; writes bench/results and README
	$(BIN)/python -m bench.package $(if $(RUNS),--runs $(RUNS))

bench-page: pipeline web browser  ## the page in headless Chromium: on-device parity and timings vs the server, and docs/page.png; writes bench/results and README
	$(BIN)/python -m bench.page $(if $(RUNS),--runs $(RUNS))

bench-batch: pipeline bench-tools  ## batch scoring at 1M and 10M rows (ROWS="..." for others) on 1, 2 and separate Dask workers vs one process; lookups vs /predict under ab; writes bench/results and README
	$(BIN)/python -m bench.batch $(if $(ROWS),--rows $(ROWS))

bench-pipeline: setup  ## dvc repro at 100k and 1M rows (ROWS="..." for others) vs the bare fit; writes bench/results and README
	$(BIN)/python -m bench.pipeline $(if $(ROWS),--rows $(ROWS))

lint: setup  ## ruff: lint and format check
	$(BIN)/ruff check src api contract batch package tests bench tools
	$(BIN)/ruff format --check src api contract batch package tests bench tools

push: setup  ## dvc push to the default remote, or REMOTE=name
	$(DVC) push $(if $(REMOTE),-r $(REMOTE))

pull: setup  ## dvc pull from the default remote, or REMOTE=name
	$(DVC) pull $(if $(REMOTE),-r $(REMOTE))

lock:  ## re-pin every dependency from pyproject.toml (needs uv in .venv)
	$(BIN)/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 -o requirements/dev.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra pipeline --python-version 3.11 \
	  -c requirements/dev.lock -o requirements/pipeline.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra api --python-version 3.11 \
	  -c requirements/dev.lock -o requirements/api.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra runtime --python-version 3.11 \
	  -c requirements/dev.lock -o requirements/runtime.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra runtime-sklearn --python-version 3.11 \
	  -c requirements/dev.lock -o requirements/runtime-sklearn.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra batch --python-version 3.11 \
	  -c requirements/dev.lock -o requirements/batch.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra clients --python-version 3.11 \
	  -o requirements/clients.lock

clean:  ## remove the virtualenv and caches (not the DVC cache or remote)
	rm -rf $(VENV) $(CLIENTS) .pytest_cache .ruff_cache mutants web/node_modules api/page/static/vendor
