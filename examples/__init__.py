"""Sample jobs and the demo's driver: what `scripts/demo` and `conf/demo.ini` run."""
