# The two commands of the README (demo, test); both create and reuse .venv at the project root.
PY := .venv/bin/python
STAMP := .venv/.mmdet_dyhead_setup

.PHONY: setup test test-fast lint demo study bench clean-data

$(STAMP): requirements.txt tools/setup_env.sh pyproject.toml
	bash tools/setup_env.sh

setup: $(STAMP)

# lint (ruff: pycodestyle, pyflakes, import order; settings in pyproject.toml), then every test
test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider tests

# the inner loop: no test that starts processes (train, test, resume, torchrun)
test-fast: setup lint
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

lint: setup
	$(PY) -m ruff check .

demo: setup
	bash tools/demo.sh

# the README's study tables and plots, rebuilt from the saved runs in docs/study/
study: setup
	$(PY) tools/study.py tables --update-readme

# the README's speed table and plot
bench: setup
	$(PY) tools/benchmark_neck.py --impls 'mmdet DyHead' 'ours, torch kernel' 'ours, default' \
		'4 stacked convs' --out outputs/bench_cpu

clean-data:
	rm -rf data/shapes
