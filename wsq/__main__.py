"""``python -m wsq``: the ``wsq`` command."""

from wsq.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
