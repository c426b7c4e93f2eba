"""The ``dicom-node`` command line: serve, worker, demo, analyze, jobs, series, echo, send.

This package only composes: one module per command group, each a thin layer
that parses options, calls the library and prints. ``app`` is the console
script ``dicom-node`` (``dicom_node.cli:app``) and ``python -m dicom_node.cli``.

Modules
-------
node        version, serve, worker, demo
jobs        jobs list | show | requeue | cancel
series      series list
deliveries  deliveries list | requeue
users       users add | set-password | remove | unlock | list
stats       stats
retention   retention
network     echo (C-ECHO), send (C-STORE)
analyze     analyze
train       train ich | ich-package | ich-regions
evaluate    evaluate cta | ich-rules | ich
"""

from __future__ import annotations

import typer

from dicom_node.cli import analyze, network, node, retention, stats
from dicom_node.cli.deliveries import deliveries_app
from dicom_node.cli.evaluate import evaluate_app
from dicom_node.cli.jobs import jobs_app
from dicom_node.cli.series import series_app
from dicom_node.cli.train import train_app
from dicom_node.cli.users import users_app

__all__ = ["app"]

app = typer.Typer(help="dicom-node: a DICOM AI node for acute neuro CT.", no_args_is_help=True)

# Help lists commands in the order they are added here, then the groups.
for _command in (
    node.version,
    node.serve,
    node.worker,
    stats.stats,
    retention.retention,
    network.echo,
    network.send,
    analyze.analyze,
    node.demo,
):
    app.command()(_command)

for _group, _name in (
    (jobs_app, "jobs"),
    (series_app, "series"),
    (deliveries_app, "deliveries"),
    (users_app, "users"),
    (evaluate_app, "evaluate"),
    (train_app, "train"),
):
    app.add_typer(_group, name=_name)
