# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
PY := .venv/bin/python

.PHONY: setup demo lint test test-fast test-image-arm64 test-image-update bench clean

setup:
	@scripts/setup.sh

demo: setup
	@$(PY) scripts/demo.py

# Types and lint first: a type or lint error fails the build before any test runs.
lint: setup
	@.venv/bin/ruff check --quiet kiosk tests bench scripts
	@.venv/bin/mypy --no-error-summary
	@echo "lint: ruff and mypy --strict clean"

# The image tests run beside the rest (scripts/test.sh says why); PYTEST_ARGS picks tests instead.
test: lint
	@scripts/test.sh $(PYTEST_ARGS)

# The quick loop while developing: everything not marked slow.
test-fast: setup
	@$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	@$(PY) bench/enrollment_and_commands.py

clean:
	rm -rf .venv build demo-data

# The arm64 image: build, audit, boot under QEMU with U-Boot. Too slow for CI on this machine
# (qemu-user for the build, full emulation for the boot): run it by hand, as root.
test-image-arm64: setup
	@KIOSK_IMAGE_ARM64=$${KIOSK_IMAGE_ARM64:-1} $(PY) -m pytest -q -p no:cacheprovider tests/image/test_arm64.py

# Signed A/B updates booted in QEMU, alone, with the fall-back from a slot that fails its health
# check (`make test` runs the rest of the story with the other image tests, not that: its two
# more boots did not fit CI's time): one image build, two bundles re-packed from its root, one
# unit through six emulated boots (tests/image/conftest.py's one, then the story's five).
test-image-update: setup
	@KIOSK_IMAGE_FALLBACK=1 $(PY) -m pytest -q -p no:cacheprovider tests/image/test_update.py
