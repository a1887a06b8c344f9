# The study's two commands:  make book  (runs the study with PROFILE and builds the HTML book;
#                                        PROFILE=real DATA_ROOT=... WEIGHTS=...: a real dataset, published MesoNets)
#                            make test  (runs the test suite)
#                            make linkcheck (checks the book's external links; needs network)
# Both create .venv on first use and reuse it afterwards.
PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= default
# a real dataset and the published MesoNet weights: make book PROFILE=real DATA_ROOT=/data/ffpp WEIGHTS=/data/mesonet
DATA_ROOT ?=
WEIGHTS   ?=
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed

.PHONY: install book test quick linkcheck clean-book clean

install: $(STAMP)

# torch/torchvision are pinned in requirements/constraints.txt like everything else.
# torchattacks 3.5.1 pins requests~=2.25.1 (would downgrade requests/urllib3/idna and break
# Sphinx), grad-cam pulls the GUI opencv-python and facenet-pytorch (MTCNN face detector, weights in
# the wheel) pins torch<2.3/numpy<2/Pillow<10.3: all three go in a second step with --no-deps.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps -c requirements/constraints.txt torchattacks grad-cam facenet-pytorch
	$(BIN)/python -m ipykernel install --sys-prefix --name dfrobust --display-name "Python (dfrobust)" >/dev/null
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/dfrobust book --profile $(PROFILE) $(if $(DATA_ROOT),-p data_root=$(DATA_ROOT)) $(if $(WEIGHTS),-p weights=$(WEIGHTS))

quick:
	$(MAKE) book PROFILE=quick

test: $(STAMP)
	$(BIN)/python -m pytest

# External links of the book (needs network; run after `make book` so the chapters exist): Sphinx's
# linkcheck builder, report in _build/linkcheck/output.txt. Internal links, images, math and layout are
# checked in headless Chromium by tests/test_browser.py (part of `make test`).
linkcheck: $(STAMP)
	$(BIN)/jupyter-book build . --builder linkcheck

clean-book:
	rm -rf _build book/generated

clean: clean-book
	rm -rf $(VENV)
