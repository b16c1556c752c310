PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
COV_MIN ?= 95
JOBS ?= auto  # pytest-xdist workers: one per core (the suite's slowest tests wait on subprocesses)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# `make serve` needs only Warden itself, not the test extras (half the install time).
SERVE_STAMP := $(VENV)/.serves-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: serve test bench clean lint mutation

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

$(SERVE_STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	test -f $(STAMP) || $(BIN)/pip install -q --disable-pip-version-check -e .
	rm -f $(VENV)/.serves-* && touch $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/warden serve

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n $(JOBS) --cov=warden --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=$(COV_MIN) $(ARGS)

# The load generator (wrk, Debian) and the profiler (py-spy) only the benchmarks need;
# LiteLLM and Portkey install themselves into bench/ on first use.
bench: $(STAMP)
	command -v wrk >/dev/null || { test "$$(id -u)" = 0 && apt-get install -y -q wrk >/dev/null; } \
	  || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	test -x $(BIN)/py-spy || $(BIN)/pip install -q py-spy==0.4.1
	$(BIN)/python -m bench.run $(ARGS)

# Mutation testing of the decision cores ([tool.mutmut] in pyproject; not part of
# `make test`): a fresh copy each time, then the score per file and every survivor.
mutation: $(STAMP)
	rm -rf mutants && mkdir mutants
	$(BIN)/mutmut run --max-children 2 > mutants/run.log 2>&1 || { tail -c 3000 mutants/run.log; exit 1; }
	$(BIN)/python -m tests.support.mutation_report

clean:
	rm -rf $(VENV) .pytest_cache .coverage* build src/*.egg-info mutants
