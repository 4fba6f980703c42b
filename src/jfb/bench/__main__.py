"""``python -m jfb.bench ARGS`` is ``jfb bench ARGS`` (docs/BENCHMARKS.md uses this form)."""

from jfb.bench.cli import main

raise SystemExit(main())
