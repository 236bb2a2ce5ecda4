# Two commands on a fresh machine (see README):
#   make book   build the whole book at default parameters into _build/html
#   make test   run the test suite
# Each installs what it needs into .venv the first time (Python 3.11, uv, PyPI, npm, Debian).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Python keeps the bytecode it compiles (in .venv, and in qfail's __pycache__, which git ignores)
# even where the shell sets PYTHONDONTWRITEBYTECODE: otherwise every chapter's kernel, every test
# subprocess and every Sphinx run compiles the same modules again (torch, pandas, matplotlib,
# scikit-learn: 14 s to import instead of 6 on these cores)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: book test bench clean

# --compile-bytecode: the .pyc files are written once, at install, in parallel, instead of by the
# first chapter kernels and test workers, each compiling torch's modules as it imports them
UV     := $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY)

# uv (from PyPI) downloads and unpacks the ~5 GB of torch's CUDA wheels in parallel: about a
# minute on a fresh machine, against nearly three with pip
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(UV) -c constraints.txt -e ".[book,test]"
	$(UV) --no-deps torchattacks==3.5.1  # pins an old requests it never imports
	touch $(STAMP)

book: $(STAMP)
	bash scripts/setup_data.sh
	$(PY) -m qfail book

SCALE  := $(VENV)/.installed-scale

$(SCALE): $(STAMP)
	$(UV) -c constraints.txt -e ".[scale]"  # Ray, for the sweep tests
	touch $(SCALE)

# two pytest workers, a test file never split between them (its module fixtures run once): the
# book tests and the emulated CPU's go first (tests/conftest.py), the other files run beside them
# (about 110 s on these cores). Chapter kernels talk over Unix sockets, so a browser's connections on one worker cannot
# take a port that a kernel starting on the other was given (qfail.site.kernel)
test: $(STAMP) $(SCALE)
	bash scripts/setup_data.sh
	bash tests/setup_system.sh
	$(VENV)/bin/ruff check --quiet .  # the lint rules in pyproject.toml; a fraction of a second
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(PY) benchmarks/run_all.py
	$(PY) benchmarks/verify_bench.py
	$(PY) benchmarks/attack_bench.py
	@test -f _build/build-report.json && $(PY) -c "import json; r = json.load(open('_build/build-report.json')); \
	  print('last book build:', r['build seconds'], 's on', r.get('machine', 'an unnamed machine') + '; seconds per chapter when it last ran:'); [print(f'  {k:<16} {v:>7.1f}') for k, v in r['chapters'].items()]" || true

clean:
	rm -rf _build .cache runs
