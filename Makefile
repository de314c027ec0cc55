# The two commands of the README (demo, test); both create and reuse .venv at the project root.
PY := .venv/bin/python
STAMP := .venv/.mmdet_dyhead_setup

.PHONY: setup test demo compare bench clean-data

$(STAMP): requirements.txt tools/setup_env.sh pyproject.toml
	bash tools/setup_env.sh

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: setup
	bash tools/demo.sh

# the README's demo table (each demo detector with and without DynamicHead)
compare: setup
	$(PY) tools/compare.py --update-readme

# the README's speed table and plot
bench: setup
	$(PY) tools/benchmark_neck.py --impls 'mmdet DyHead' 'ours, torch kernel' 'ours, default' \
		'4 stacked convs' --out outputs/bench_cpu

clean-data:
	rm -rf data/shapes
