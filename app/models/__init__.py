"""Pydantic schemas of the public API."""
