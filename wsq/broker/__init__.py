"""Brokers: where messages are stored and read back (memory, Redis streams)."""
