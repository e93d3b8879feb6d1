"""`python -m cleanpose` is the same as the `cleanpose` command."""

from cleanpose.cli import main

raise SystemExit(main())
