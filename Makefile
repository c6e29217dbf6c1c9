# Set-up is idempotent: apt installs only what is missing; the venv is rebuilt only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-venv docker-registry etcd-server etcd-client skopeo rpm createrepo-c haproxy \
  keepalived systemd-container debootstrap containernetworking-plugins gnupg apache2-utils zstd openssl \
  iproute2 curl procps psmisc tar openssh-client openssh-server util-linux python3 python3-grpcio \
  binutils libpython3.11 gcc libc6-dev libssl-dev zlib1g-dev
PYTEST_ARGS ?=
DEMO_DIR ?= /var/tmp/k8s-offline-demo

.PHONY: setup apt venv test test-unit demo bench lint clean

setup: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages: $$missing"; \
	  policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
	    printf '#!/bin/sh\n# make apt: installed packages start no services here (tests run their own)\nexit 101\n' > $$policy; \
	    chmod 755 $$policy; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  rc=$$?; [ -z "$$policy" ] || rm -f $$policy; exit $$rc; \
	fi

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[build,test]'
	touch $@

test: setup
	$(VENV)/bin/pytest -q -ra $(PYTEST_ARGS) tests

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

demo: setup
	$(PY) -m tests.demo --dir $(DEMO_DIR)

bench: setup
	$(PY) -m bench

lint: venv
	$(VENV)/bin/ruff check contract bundler installer tests bench static

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# The installer as one static executable (static/README.md); apt installs only what is missing.
STATIC_APT := python3 python3-venv binutils gcc libc6-dev libssl-dev zlib1g-dev
.PHONY: static
static:
	@v=$$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	missing=$$(for p in $(STATIC_APT) $${v:+libpython$$v}; do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	sh static/build.sh dist/installer-linux-amd64
