"""The domain at the bottom of wsq: what the contract says, as values and pure functions.

Errors and their conditions, the JSON codec, addresses and patterns, positions, messages and
outcomes, the wire form of a stored message, the contract's limits and the one validator of
message props. Everything above (the protocol core, the brokers, the hub, the gateway, the HTTP
bridge) imports from here; this package imports nothing of wsq outside it, no asyncio, no
configuration and no I/O (``tests/unit/test_layering.py`` holds it to that).
"""
