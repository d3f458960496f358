"""The sans-I/O core of wsq.v1: frames in, events and frames out. No asyncio, no sockets."""
