"""The report: findings (findings.py, one sentence each in templates/finding.j2), every chart
once (figures.py), the page (page.py, templates/page.html.j2, static/), W&B (wandb_log.py),
all built from the analysis tables by build.py. `python -m observatory.report` rebuilds it."""

from observatory.report.build import write_report  # noqa: F401 (the package's API)
