# The two commands a new machine needs: `make run` and `make test`.
# Both install first (idempotent), so each works alone from a fresh clone.

# Debian's own interpreter: built with PGO and LTO, it starts the daemon ~20%
# faster than a default source build (pyenv's --enable-shared, no PGO) here.
PYTHON      ?= /usr/bin/python3
VENV        := .venv
BIN         := $(VENV)/bin
DEB_PACKAGES := python3-venv runc containerd btrfs-progs docker-registry apache2-utils skopeo
# containerd's and cgroups' Go sources: tests/test_proto_conformance.py checks
# every .proto under api/ against the schemas embedded in their .pb.go files;
# ttrpc's Go source is the reference for pkg/ttrpc's wire format.
DEB_PACKAGES += golang-github-containerd-containerd-dev golang-github-containerd-cgroups-dev golang-github-containerd-ttrpc-dev
PYTEST_ARGS ?=
# busybox-static: the one static binary the container tests build their image from
DEB_PACKAGES += busybox-static
# crun: another OCI runtime under the same runc shim (ctr run --runc-binary)
DEB_PACKAGES += crun

.PHONY: install deb-packages run test bench proto clean

install: deb-packages $(VENV)/.installed
	@# byte-compile the sources up front (pip does this for site-packages, but
	@# an editable install runs from the tree): the daemon then starts without
	@# compiling, even where PYTHONDONTWRITEBYTECODE is set
	@$(BIN)/python -m compileall -q core pkg plugins api client testing

# Debian packages: venv for Debian's python3, runc, containerd for the real
# `ctr` and a real containerd to test pyctr and benchmark against,
# docker-registry (a real registry for the registry client's tests),
# apache2-utils (htpasswd, for its Basic auth tests) and skopeo (reads what
# `pyctr images export` writes, as oci-archive:).
deb-packages:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml setup.py | deb-packages
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: install
	$(BIN)/pycontainerd

test: install
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

# Every benchmark the README reports, with the run counts its tables quote:
# bench/all.py runs startup, snapshots, ingest, pull and run (their one table);
# startup_cost.py counts instructions with valgrind's callgrind; pull.py
# measures containerd with pigz's unpigz on its PATH (which it uses to
# inflate layers when found) and without.
BENCH_PACKAGES := valgrind pigz

bench: install
	@missing=""; for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(BIN)/python bench/all.py
	$(BIN)/python bench/startup_cost.py
	$(BIN)/python bench/pull.py --runs 5 --containerd-unpigz hidden

proto: install
	$(BIN)/python -m pycontainerd.api.generate

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
