# Everyday entry points. Nothing here needs Docker except `images`.
#   make demo     install the package, run the example stack as local processes for 60 s
#   make test     install what the tests need (Debian packages, test extras), run the suite,
#                 then the log tests again on the compiled build the images ship
#   make lint     ruff, mypy (strict) and hadolint
#   make images   the four images (needs a Docker engine with BuildKit)
#   make bench    the benchmarks beside HAProxy / syslog-ng (BENCH_FLAGS=--quick: shorter)

PYTHON       ?= python3
DOCKER       ?= docker
REGISTRY     ?= sidecars
DEMO_SECONDS ?= 60
VERSION      ?= $(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
IMAGES       := circuit-breaker ambassador log-adapter examples

.PHONY: install deps demo test test-compiled lint images bench bench-quick $(addprefix image-,$(IMAGES))

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .

deps:
	./.ci/install-deps

demo: install
	$(PYTHON) -m sidecars demo --duration $(DEMO_SECONDS)

test: deps
	$(PYTHON) -m pytest
	$(MAKE) test-compiled

# The log adapter's per-line modules compiled by mypyc (setup.py), in a copy under build/
# (tools/compiled.py), and every log test run there against them.
COMPILED_TESTS := tests/unit/logs tests/unit/logs_io tests/integration/logs

test-compiled:
	cd "$$($(PYTHON) -m tools.compiled)" && SIDECARS_EXPECT_COMPILED=1 $(PYTHON) -m pytest $(COMPILED_TESTS)

lint:
	ruff check sidecars tests bench examples tools setup.py
	mypy
	cd examples && mypy --strict -p apps
	hadolint images/Dockerfile

images: $(addprefix image-,$(IMAGES))

$(addprefix image-,$(IMAGES)): image-%:
	$(DOCKER) build --file images/Dockerfile --target $* --tag $(REGISTRY)/$*:$(VERSION) .

bench:
	$(PYTHON) -m bench.proxy $(BENCH_FLAGS)
	$(PYTHON) -m bench.logs $(BENCH_FLAGS)

bench-quick:
	$(PYTHON) -m bench.proxy --quick
	$(PYTHON) -m bench.logs --quick
