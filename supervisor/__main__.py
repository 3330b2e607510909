"""``python -m supervisor`` = the ``bbsupervise`` command."""
from supervisor.cli import main

raise SystemExit(main())
