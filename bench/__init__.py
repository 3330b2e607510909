"""``scripts/bench``: bbsupervise measured against the bare greenstalk client.

Every figure is taken in the same run as its baseline (the least a plain
Python process can do with greenstalk against the same beanstalkd), so the
ratio between them holds on a noisy machine even when the absolute figures
move. ``python -m bench --help`` lists the options; :mod:`bench.report`
declares every row and its target.
"""
