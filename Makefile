# The two commands of README.md: `make run` (server + editor on the embedded model) and `make test`.
# Each sets up .venv first if needed; nothing else has to be installed by hand.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q
HOST ?= 127.0.0.1
PORT ?= 8188
# Spinning OpenMP threads make small models ~30x slower on shared cores; never fetch from a hub.
export GOMP_SPINCOUNT := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: run test bench setup browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -c constraints.txt -e ".[test,bench,ray]"
	touch $@

# Debian's Chromium and Firefox ESR for the editor tests (Playwright drives Chromium, Marionette drives Firefox;
# neither downloads a browser of its own).
browser:
	@command -v chromium >/dev/null && command -v firefox-esr >/dev/null || { apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium firefox-esr >/dev/null; }

# The editor opens on the first checkpoint in models/checkpoints: diffloom's own demo model
# (models/checkpoints/diffloom-shapes.safetensors, trained by nodes/demo_model/train.py) unless you add others.
run: setup
	$(PY) server.py --listen $(HOST) --port $(PORT)

test: setup browser
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
