# Everyday entry points. Everything runs in the project's virtualenv, .venv/ (made by the
# first target that needs it: stock Debian 12 and Ubuntu 24.04 refuse `pip install` into the
# system Python); nothing here needs Docker except `images`.
#   make demo         install the package, run the example stack as local processes for 60 s
#   make test         install what the tests need (Debian packages, test extras), run the suite,
#                     then the log and proxy tests again on the compiled build the images ship
#   make lint         ruff, mypy (strict) and hadolint
#   make images       the four images (needs a Docker engine with BuildKit)
#   make images-test  build the four images with buildah and run each with podman
#   make bench        the benchmarks beside HAProxy / syslog-ng (BENCH_FLAGS=--quick: shorter)

PYTHON       ?= python3
VENV         ?= .venv
DOCKER       ?= docker
REGISTRY     ?= sidecars
DEMO_SECONDS ?= 60
VERSION      ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGES       := circuit-breaker ambassador log-adapter examples

# The venv's python, and its scripts (ruff, mypy, hadolint, sidecars) first on PATH; it is
# ready once it has pip (a failed `python3 -m venv` leaves a python without one).
PY           := $(abspath $(VENV))/bin/python
VENV_PIP     := $(abspath $(VENV))/bin/pip
export PATH  := $(abspath $(VENV))/bin:$(PATH)
export PYTHON VENV

.PHONY: install deps demo test test-compiled images-test lint images bench bench-quick \
	$(addprefix image-,$(IMAGES))

$(VENV_PIP):
	./.ci/make-venv

install: $(VENV_PIP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[demo]'

deps: $(VENV_PIP)
	./.ci/install-deps

demo: install
	$(PY) -m sidecars demo --duration $(DEMO_SECONDS)

test: deps
	$(PY) -m pytest
	$(MAKE) test-compiled

# The log adapter's per-line and the proxy engine's per-request modules compiled by mypyc
# (setup.py), in a copy under build/ (tools/compiled.py), and every log and proxy test run
# there against them (tests/integration/logs/test_build.py fails if one imports as Python).
COMPILED_TESTS := tests/unit/logs tests/unit/logs_io tests/integration/logs \
	tests/unit/policies tests/unit/proxy $(addprefix tests/integration/,proxy breaker \
	ambassador canary clusters faults overload)

test-compiled:
	cd "$$($(PY) -m tools.compiled)" && SIDECARS_EXPECT_COMPILED=1 $(PY) -m pytest $(COMPILED_TESTS)

# Every image built from images/Dockerfile by buildah and run by podman (tests/images).
images-test: $(VENV_PIP)
	./.ci/install-deps images
	SIDECARS_IMAGES_TEST=1 $(PY) -m pytest tests/images

lint: deps
	ruff check sidecars tests bench examples tools setup.py
	mypy
	cd examples && mypy --strict -p apps
	hadolint images/Dockerfile

images: $(addprefix image-,$(IMAGES))

$(addprefix image-,$(IMAGES)): image-%:
	$(DOCKER) build --file images/Dockerfile --target $* --tag $(REGISTRY)/$*:$(VERSION) .

bench:
	$(PY) -m bench.proxy $(BENCH_FLAGS)
	$(PY) -m bench.logs $(BENCH_FLAGS)

bench-quick:
	$(PY) -m bench.proxy --quick
	$(PY) -m bench.logs --quick
