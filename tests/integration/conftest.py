"""Fixtures of the integration tests that run the real daemon."""
import psycopg2
import pytest

from msd.store.neighbours import create_neighbour_tables
from tests.fixtures.pg import create_database, drop_database
from tests.fixtures.rabbit import create_vhost, delete_vhost


@pytest.fixture(scope="module")
def resources():
    """(dsn, vhost) shared by one test module's daemon: its own database, with the neighbour
    services' shared tables as production has them, and its own vhost."""
    dsn, vhost = create_database(), create_vhost()
    with psycopg2.connect(dsn) as conn:
        create_neighbour_tables(conn)
    yield dsn, vhost
    drop_database(dsn)
    delete_vhost(vhost)
