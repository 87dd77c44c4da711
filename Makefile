# Set-up and everyday commands. Every install step lives here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEBLUR := $(VENV)/bin/deblur

.PHONY: install test demo samples bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on the development machines; take it
	# first where it is available so that the open range below installs nothing.
	-$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

demo: install
	$(DEBLUR) restore sample_images/blurred --kernel sample_images/kernels/diagonal.npy \
	  --reference sample_images/sharp --out restored/diagonal --overwrite
	$(DEBLUR) restore sample_images/blurred --kernel sample_images/kernels/corner_gaussian.npy \
	  --reference sample_images/sharp --out restored/corner_gaussian --overwrite

bench: install
	$(DEBLUR) bench

clean:
	rm -rf $(VENV) restored build *.egg-info
