"""Thin HTTP layer: parse, call the services, serialize. No signal processing here."""
