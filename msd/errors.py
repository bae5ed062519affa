"""Exceptions shared across packages.

Edge packages (bus, store) translate library errors (pika, psycopg2) into these so that
roles never catch a third-party exception type.
"""


class MsdError(Exception):
    """Base class for every error msd raises on purpose."""


class ConfigError(MsdError, ValueError):
    """The configuration file is invalid; the message names key, value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: {value!r} is invalid; expected {allowed}")


class InvalidMessage(MsdError):
    """An inbound message cannot be used. `reason` is a short metric label, `detail` is for humans."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class BrokerUnavailable(MsdError):
    """RabbitMQ cannot be reached or the connection/channel was lost."""


class DatabaseUnavailable(MsdError):
    """PostgreSQL cannot be reached or the connection was lost."""


class Fenced(MsdError):
    """A write was refused because this process's leadership epoch is no longer current: another
    msd instance leads now (sql/013_leadership.sql). The process must stop, not retry."""


class ProtocolError(MsdError):
    """A control-socket frame is malformed or has an unsupported version."""
