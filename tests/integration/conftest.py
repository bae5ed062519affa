"""Fixtures of the integration tests that run the real daemon."""
import pika
import psycopg2
import pytest

from msd.store.neighbours import create_neighbour_tables
from tests.fixtures.pg import create_database, drop_database
from tests.fixtures.rabbit import amqp_url, create_vhost, delete_vhost


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


@pytest.fixture
def channel(resources):
    """A channel on the module's vhost, for publishing as the neighbour services do."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(resources[1])))
    yield conn.channel()
    if conn.is_open:     # a test may have had the server close it
        try:
            conn.close()
        except pika.exceptions.AMQPError:
            pass
