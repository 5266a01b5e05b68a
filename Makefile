# qlab: `make lab` to learn, `make test` to check. Everything lives in .venv here.
PY      := .venv/bin/python
STAMP   := .venv/.qlab-setup
NB      := $(sort $(wildcard notebooks/[0-9]*.ipynb))
PORT    ?= 8888
# JupyterLab refuses root unless told; containers often run as root.
ROOT    := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup lab test lint notebooks bench checkpoints student test-browser test-install test-qnnpack clean

setup: $(STAMP)

# Re-runs only when pyproject.toml changes; otherwise `make setup` takes well under a second.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

lab: setup
	$(PY) -m jupyterlab --notebook-dir=notebooks --port=$(PORT) $(ROOT)

lint: setup
	$(PY) -m ruff check qlab tests

test: lint
	$(PY) -m pytest -q tests --ignore=tests/browser
	$(PY) -m pytest -q --nbval-lax notebooks

# Re-execute every lesson in place (outputs are committed).
notebooks: setup
	for nb in $(NB); do \
	  echo "== $$nb"; \
	  $(PY) -m jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 "$$nb" || exit 1; \
	done

# The lessons without their exercise solutions, for students (student/ is not committed).
student: setup
	$(PY) -m qlab.lab.tools.student --out student

bench: setup
	$(PY) -m qlab.lab.tools.bench

checkpoints: setup
	$(PY) -m qlab.lab.tools.train --all

clean:
	rm -rf .venv .pytest_cache .ruff_cache .hypothesis student

# Every lesson as on an Apple-silicon or other ARM laptop: PyTorch restricted to qnnpack (its only
# int8 engine there); fails on any error cell. Lesson 07 runs again without a C++ compiler.
test-qnnpack: setup
	PYTHONPATH=tests/qnnpack $(PY) tests/qnnpack/run_lessons.py
	PYTHONPATH=tests/qnnpack CXX=qlab-no-compiler $(PY) tests/qnnpack/run_lessons.py notebooks/07_torchao_and_pt2e.ipynb

# Drive the lessons' widgets in a real headless browser (Debian chromium + Playwright).
test-browser: setup
	bash tests/browser/setup.sh
	$(PY) -m pytest -q tests/browser

# The README's commands without make, run in a fresh clone of HEAD into a new .venv (minutes,
# several GB of disk while it runs; the clone is deleted afterwards).
test-install: setup
	QLAB_INSTALL_TEST=1 $(PY) -m pytest -q -rP tests/test_install.py
