# One entry point. `make run` and `make test` set everything up on a fresh machine
# (Python 3.11+ and pip): a local .venv with pinned versions (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-future faults lint format bench clean help

help:
	@echo "make run    start the whole stack on embedded PostgreSQL + broker, with a demo;"
	@echo "            keeps the terminal: Ctrl-C drains the workers, then stops everything"
	@echo "make test   run the test suite against real PostgreSQL and a real broker"
	@echo "make test-future  the same with the clock a year ahead (needs libfaketime)"
	@echo "make faults the fault suite (tests/faults): real worker processes, one fault each"
	@echo "make lint   ruff format --check, ruff check, mypy --strict"
	@echo "make bench  run the benchmarks in bench/ (prints JSON lines)"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[embedded,dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/waypoint run $(RUN_ARGS)

# pytest's own exit status is kept in $(VENV)/.pytest-exit for .ci/run (make itself says 2).
test: $(STAMP)
	@rm -f $(VENV)/.pytest-exit
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; echo $$status > $(VENV)/.pytest-exit; exit $$status

# The suite with the clock SHIFT_DAYS ahead (negative: behind), to prove no test depends on today's date. libfaketime
# (LD_PRELOAD, inherited by child processes) shifts this Python process, the worker processes the
# tests start and the embedded PostgreSQL; tests/test_clock.py checks that it did. The embedded
# broker (a statically linked binary) keeps the real clock. Same exit status file as `make test`.
SHIFT_DAYS ?= 365
FAKETIME_LIB ?= $(firstword $(wildcard /usr/lib/*/faketime/libfaketime.so.1 /usr/local/lib/faketime/libfaketime.so.1))
test-future: $(STAMP)
	@test -n "$(FAKETIME_LIB)" || { echo "make test-future needs libfaketime (Debian/Ubuntu: apt-get install faketime)" >&2; exit 2; }
	@rm -f $(VENV)/.pytest-exit
	LD_PRELOAD="$(FAKETIME_LIB)" FAKETIME="$(if $(filter -%,$(SHIFT_DAYS)),,+)$(SHIFT_DAYS)d" WAYPOINT_TEST_CLOCK_SHIFT_DAYS=$(SHIFT_DAYS) \
		$(PY) -m pytest $(PYTEST_ARGS); status=$$?; echo $$status > $(VENV)/.pytest-exit; exit $$status

# The fault suite (docs/reliability.md): real worker processes killed and restarted, so its own
# target rather than part of `make test`; .ci/run runs it after the suite, by default, on its own
# time budget. Its exit status goes to $(VENV)/.faults-exit, its results table to
# $(VENV)/faults-table.md.
faults: $(STAMP)
	@rm -f $(VENV)/.faults-exit
	WAYPOINT_FAULTS_TABLE=$(VENV)/faults-table.md $(PY) -m pytest tests/faults -m faults $(PYTEST_ARGS); \
		status=$$?; echo $$status > $(VENV)/.faults-exit; exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff format --check shared services tests bench
	$(VENV)/bin/ruff check shared services tests bench
	$(VENV)/bin/mypy shared services

format: $(STAMP)
	$(VENV)/bin/ruff format shared services tests bench
	$(VENV)/bin/ruff check --fix shared services tests bench

# The benchmarks also compare with PM4Py (AGPL): only they install the `bench` extra.
bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[embedded,dev,bench]"
	@for script in bench/*.py; do \
		[ -e "$$script" ] || continue; \
		case $$script in */_*) continue;; esac; \
		echo "== $$script"; $(PY) $$script || exit 1; \
	done

clean:
	rm -rf $(VENV) .waypoint .pytest_cache
