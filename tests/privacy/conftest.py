"""The producer and key-service fixtures, for the tests here that drive those components from outside
their own test packages (registered here by importing them)."""

from tests.keyservice.conftest import creds, prefix, redis_url
from tests.producers.conftest import amqp_url, broker

__all__ = ["amqp_url", "broker", "creds", "prefix", "redis_url"]
