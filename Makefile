# fastapi_ops.stack — run as root on a Debian 12 machine.
#   make demo   lab machines + the whole stack deployed with playbooks/site.yml
#   make test   lint, unit tests, Molecule scenarios on the lab
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export STAGE_LOG := $(CURDIR)/.cache/stages.log

# Scenarios run by `make test`: lanes run in parallel, each lane in order (every
# scenario creates and destroys its own lab machines). Two lanes on 2 CPUs: a third, or
# cluster's drills beside patroni's, overloaded them (drills timed out); in this order the
# two heaviest scenarios meet only at cluster's end.
LANE1 ?= cluster anyapp data
LANE2 ?= backup edge-acme edge common patroni
# The demo lab: NAME:GROUPS for each machine. DEMO=small puts everything on one machine.
DEMO ?= full
DEMO_MACHINES_full := lb:lb app1:app app2:app db:db cache:cache mon:monitoring
DEMO_MACHINES_small := solo:lb,app,db,cache,monitoring
DEMO_INVENTORY := inventories/lab/hosts.yml

.PHONY: help bootstrap lint unit molecule test demo lab-down build bench clean

help:
	@sed -n 's/^#   //p' Makefile

bootstrap:
	@tools/bootstrap-host

lint: bootstrap
	ruff check .
	ruff format --check .
	python tools/check_roles.py
	ansible-lint --profile production
	tools/sanity

unit: bootstrap
	.ci/host-services
	pytest -q tests/unit tests/integration
	if [ -d app/tests ]; then pytest -q app/tests; fi

molecule: bootstrap
	python tools/run_scenarios.py "$(LANE1)" "$(LANE2)"

# lint and unit run beside the Molecule lanes, which wait on machines more than on the
# CPU; their output is printed after the lanes', then the lanes' summary again.
test: bootstrap
	@mkdir -p .cache && : > $(STAGE_LOG) && rm -f .cache/molecule-summary.log
	@{ tools/stage lint $(MAKE) --no-print-directory lint \
	    && tools/stage unit $(MAKE) --no-print-directory unit; } > .cache/checks.log 2>&1 & checks=$$!; \
	tools/stage molecule $(MAKE) --no-print-directory molecule; molecule=$$?; \
	wait $$checks; checks=$$?; cat .cache/checks.log; \
	cat .cache/molecule-summary.log 2>/dev/null; \
	echo "== stage times"; cat $(STAGE_LOG); \
	[ $$molecule -eq 0 ] && [ $$checks -eq 0 ]

demo: bootstrap
	python -m tools.lab up $(DEMO_MACHINES_$(DEMO)) --inventory $(DEMO_INVENTORY)
	ansible-playbook -i $(DEMO_INVENTORY) playbooks/site.yml
	@echo "== a few requests through Nginx over HTTPS"
	python -m tools.smoke $(DEMO_INVENTORY)
	@python -m tools.lab status
	@echo "Tear the lab down with: make lab-down"

lab-down:
	python -m tools.lab down

build:
	ansible-galaxy collection build --force --output-path .cache/build

bench: bootstrap
	@for b in bench/*.py; do python $$b || exit 1; done
	python bench/benchlib/report.py

clean:
	rm -rf .cache .ansible
