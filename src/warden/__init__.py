"""Warden: a self-hosted server for governed AI agents on your own LLM keys."""

__version__ = "0.1.0"
