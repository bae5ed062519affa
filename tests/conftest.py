"""Test fixtures shared by every test: a per-run PostgreSQL database and RabbitMQ vhost."""
pytest_plugins = ["tests.fixtures.pg", "tests.fixtures.rabbit"]
