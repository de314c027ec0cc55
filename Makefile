# The two commands of the README. Both create and reuse .venv at the project root.
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

clean-data:
	rm -rf data/demo
