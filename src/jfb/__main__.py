"""`python -m jfb` is the `jfb` command."""

from jfb.cli import main

raise SystemExit(main())
