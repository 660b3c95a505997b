"""``python -m hvfilter``: the command line (see :mod:`hvfilter.cli`)."""

from hvfilter.cli import main

raise SystemExit(main())
