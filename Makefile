PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
COV_MIN ?= 96
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: serve test bench clean lint

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

serve: $(STAMP)
	$(BIN)/warden serve

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest --cov=warden --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=$(COV_MIN) $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .coverage* build src/*.egg-info
