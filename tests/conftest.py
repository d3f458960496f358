"""Shared test support lives beside this file (``wsq_harness``); pytest puts this folder on
``sys.path`` because of this conftest. ``hang_watch`` fails a test that hangs, saying where."""

pytest_plugins = ("hang_watch",)
