# Set-up and everyday commands. Every install step lives here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEBLUR := $(VENV)/bin/deblur

.PHONY: install test demo samples figures bench clean

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
	@for k in diagonal corner_gaussian per_channel; do \
	  $(DEBLUR) restore sample_images/blurred/$$k --kernel sample_images/kernels/$$k.npy \
	    --reference sample_images/sharp --out restored/$$k --report restored/$$k.json \
	    --overwrite || exit 1; done
	@echo "restored images and JSON reports are under restored/"

bench: install
	$(DEBLUR) bench

clean:
	rm -rf $(VENV) restored build *.egg-info

# Regenerate sample_images/ exactly: the sharp photographs from scikit-image,
# the kernels with `deblur kernel make`, every blurred copy with `deblur blur`.
SAMPLES := sample_images
KMAKE := $(DEBLUR) kernel make --overwrite
samples: install
	$(PY) $(SAMPLES)/make_sharp.py
	$(KMAKE) diagonal --size 5 --ratio 0.6 -o $(SAMPLES)/kernels/diagonal.npy
	$(KMAKE) corner-gaussian --size 5 --sigma 1.4 -o $(SAMPLES)/kernels/corner_gaussian.npy
	$(KMAKE) per-channel --size 5 --ratio 0.6 --sigma 1.4 -o $(SAMPLES)/kernels/per_channel.npy
	$(KMAKE) gaussian --size 5 --sigma 1.0 -o $(SAMPLES)/kernels/centred_gaussian.npy
	for k in diagonal corner_gaussian; do for d in 8 16; do \
	  $(DEBLUR) blur $(SAMPLES)/sharp --kernel $(SAMPLES)/kernels/$$k.npy --bit-depth $$d \
	    --out $(SAMPLES)/blurred/$$k/$${d}bit --overwrite || exit 1; done; done
	for d in 8 16; do \
	  $(DEBLUR) blur $(SAMPLES)/sharp/astronaut.png $(SAMPLES)/sharp/coffee.png $(SAMPLES)/sharp/chelsea.png \
	    --kernel $(SAMPLES)/kernels/per_channel.npy --bit-depth $$d \
	    --out $(SAMPLES)/blurred/per_channel/$${d}bit --overwrite || exit 1; done
	$(DEBLUR) blur $(SAMPLES)/sharp/camera.png $(SAMPLES)/sharp/chelsea.png \
	  --kernel $(SAMPLES)/kernels/centred_gaussian.npy --bit-depth 8 \
	  --out $(SAMPLES)/blurred/centred_gaussian/8bit --overwrite
	# the calibration set for fit-kernel: six 192 x 192 crops and their blur
	$(PY) $(SAMPLES)/calibration/crops.py
	$(KMAKE) corner-gaussian --size 5 --sigma 1.2 -o $(SAMPLES)/calibration/true_kernel.npy
	for d in 8 16; do \
	  $(DEBLUR) blur $(SAMPLES)/calibration/sharp --kernel $(SAMPLES)/calibration/true_kernel.npy \
	    --bit-depth $$d --out $(SAMPLES)/calibration/blurred/$${d}bit --overwrite || exit 1; done

# The pictures the README shows, made by deblur itself.
figures: install
	$(DEBLUR) compare $(SAMPLES)/blurred/corner_gaussian/8bit/camera.png \
	  --kernel $(SAMPLES)/kernels/corner_gaussian.npy --reference $(SAMPLES)/sharp \
	  --out $(SAMPLES)/figures/corner_gaussian_8bit --overwrite
	$(DEBLUR) compare $(SAMPLES)/blurred/centred_gaussian/8bit/chelsea.png \
	  --kernel $(SAMPLES)/kernels/centred_gaussian.npy --reference $(SAMPLES)/sharp \
	  --out $(SAMPLES)/figures/centred_gaussian_8bit --overwrite
	$(DEBLUR) kernel show $(SAMPLES)/kernels/corner_gaussian.npy --plot $(SAMPLES)/figures/corner_gaussian_kernel.png --overwrite
