# The two set-up commands of the README: `make demo` and `make test`.
PY := .venv/bin/python
CLI := .venv/bin/cifarbench
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline

.PHONY: setup demo test docs bench fast-recipe reproduce

setup:
	bash scripts/setup.sh

demo: setup
	$(CLI) run bench/matrices/tiny-cpu.yaml --output_dir demo-results
	$(CLI) report demo-results/tiny-cpu

test:
	bash scripts/test.sh

docs: setup
	.venv/bin/mkdocs build --strict -d site
	@echo site/index.html

bench: setup
	bash scripts/bench.sh

fast-recipe: setup
	bash scripts/fast-recipe.sh

reproduce: setup
	bash scripts/reproduce.sh
