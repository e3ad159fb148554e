# AlgoWays: `make run` installs and starts the platform; `make test` runs the whole test suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: install run test lint bench clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py collectstatic --no-input -v 0
	@$(BIN)/python manage.py demo_setup
	@echo
	@echo "  Console:  http://127.0.0.1:$(PORT)/    Admin: http://127.0.0.1:$(PORT)/admin/"
	@echo "  API docs: http://127.0.0.1:$(PORT)/api/docs/   (Authorization: Api-Key <api_key above>)"
	@echo
	PORT=$(PORT) $(BIN)/honcho start -f Procfile

test: install
	$(BIN)/pytest -q -n 2 --dist load

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python manage.py bench_orders

clean:
	rm -rf $(VENV) var
