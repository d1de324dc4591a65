# Two commands set everything up from nothing: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
# Override for CUDA builds, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,export,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.ada3d-installed

.PHONY: test demo demo-quick setup ffmpeg clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# ffmpeg serves the loopback streams of the stream tests; installed when absent (root + apt),
# otherwise those tests skip with the reason.
ffmpeg:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg rtsp-server-perl >/dev/null) \
	      || echo "ffmpeg could not be installed: stream tests will be skipped"; \
	  else echo "ffmpeg absent and not installable here: stream tests will be skipped"; fi; }

test: $(STAMP) ffmpeg
	$(BIN)/python -m pytest -q --timeout 600 $(PYTEST_ARGS)

demo: $(STAMP) ffmpeg
	$(BIN)/ada3d demo --workdir $(or $(WORKDIR),runs/demo)

demo-quick: $(STAMP) ffmpeg
	$(BIN)/ada3d demo --quick --workdir $(or $(WORKDIR),runs/demo-quick)

clean:
	rm -rf $(VENV) build *.egg-info
