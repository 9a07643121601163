"""``python -m depthlab``: the ``depthlab`` command line."""

from depthlab.cli import main

raise SystemExit(main())
