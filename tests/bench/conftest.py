"""The producer and key-service fixtures, for the tests here that drive those components from outside
their own test packages (registered here by importing them)."""

from tests.keyservice.conftest import creds, prefix, redis_url
from tests.producers.conftest import broker, keyservice, producers_amqp_url

__all__ = ["broker", "creds", "keyservice", "prefix", "producers_amqp_url", "redis_url"]
