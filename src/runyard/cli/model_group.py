"""``runyard model``: declarations only (click), as in main.py; the work is in ``runyard.cli.models``."""

from __future__ import annotations

import sys

import click


@click.group()
def model() -> None:
    """A registry of models: named, numbered versions of a run's artifacts, and aliases.

    \b
    Each version is an immutable pointer to run RUN's artifacts under PATH, with a digest of
    them; an alias (production, staging) names one version at a time, and setting it moves it.
    `latest` always names the newest version. Refer to them as model:NAME (the newest),
    model:NAME@3 or model:NAME@production. With RUNYARD_SERVER set, these work on the server's
    registry (a writer's token to change it).

    \b
    Examples:
      runyard model register 12:outputs/model --name digits --alias staging
      runyard model alias digits production 1      production now names version 1
      runyard model unalias digits staging
      runyard model ls                             every model, its newest version, its aliases
      runyard model ls digits                      the versions of digits
    """


@model.command("register")
@click.argument("source", metavar="RUN:PATH")
@click.option("--name", required=True, help="The model's name: letters, digits, . _ - (e.g. digits).")
@click.option("--alias", "aliases", multiple=True, metavar="ALIAS",
              help="Point this alias at the new version (repeatable); moves it if it named another.")
@click.option("--description", default="", metavar="TEXT", help="What this version is, in a sentence.")
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
def model_register(source: str, name: str, aliases: tuple[str, ...], description: str, as_json: bool) -> None:
    """Register run RUN's artifacts under PATH (a file or a directory) as the next version of a model.

    \b
    runyard model register 12:outputs/model --name digits            version 1, 2, ... of digits
    runyard model register best:model.pt --name digits --alias production
    runyard model register 12: --name digits                         all of run 12's artifacts

    RUN is a run number, name or id prefix; PATH is as `runyard cp RUN:PATH` reads it. A run that
    stored nothing there is refused (exit code 2). The version records the run, the path, a digest
    of the files there (their paths and SHA-256s), who registered it and when; `runyard rm` refuses a
    registered run.
    """
    from runyard.cli import models as impl

    sys.exit(impl.register(source, name, aliases, description, as_json))


@model.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print the version the alias now names as JSON.")
def model_alias(name: str, alias: str, version: int, as_json: bool) -> None:
    """Point ALIAS of model NAME at VERSION, moving it from the version it named.

    \b
    runyard model alias digits production 3

    An alias may not be `latest` (it always names the newest version) nor only digits.
    """
    from runyard.cli import models as impl

    sys.exit(impl.alias(name, alias, version, as_json))


@model.command("unalias")
@click.argument("name")
@click.argument("alias")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
def model_unalias(name: str, alias: str, as_json: bool) -> None:
    """Remove ALIAS of model NAME (the version it named stays): runyard model unalias digits staging"""
    from runyard.cli import models as impl

    sys.exit(impl.unalias(name, alias, as_json))


@model.command("ls")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def model_ls(name: str | None, as_json: bool) -> None:
    """List models with their newest version and aliases; with NAME, its versions (newest first)
    with their run, path, aliases and when they were registered."""
    from runyard.cli import models as impl

    sys.exit(impl.ls(name, as_json))
