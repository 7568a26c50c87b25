"""The ``runyard`` command line: declarations only.

Each command declares its options and help here and imports its implementation module
(``runyard.cli.<name>``) inside its body, so ``runyard --help`` and every other command start
without loading SQLAlchemy, numpy or rich.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Any

import click

from runyard._version import __version__
from runyard.errors import Ambiguous, ArtifactPathError, ConfigError, InvalidArgument, NotFound, RunyardError
from runyard.types import RunKind

#: Exit code for a mistake in what the user typed (unknown reference, bad value), as click uses.
EXIT_USAGE = 2
#: Exit code for anything else that went wrong.
EXIT_FAILURE = 1


def _printable(error: BaseException) -> str:
    """An error's message, which may quote stored text (an artifact's path), safe for the terminal."""
    from runyard.cli.printable import printable

    return printable(str(error), lines=True)


class RunyardGroup(click.Group):
    """Turns runyard's errors into one clear line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (InvalidArgument, NotFound, Ambiguous, ConfigError, ArtifactPathError) as e:
            click.echo(f"runyard: error: {_printable(e)}", err=True)
            sys.exit(EXIT_USAGE)
        except RunyardError as e:
            click.echo(f"runyard: error: {_printable(e)}", err=True)
            sys.exit(EXIT_FAILURE)
        except BrokenPipeError:  # `runyard logs 2 | head`: the reader has all it wanted; stop quietly
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush
            sys.exit(0)
        except OSError as e:  # a full disk, a file gone: the system's words, and where
            where = f": {e.filename}" if e.filename else ""
            hint = "; free space there and try again" if e.errno == errno.ENOSPC else ""
            click.echo(f"runyard: error: {e.strerror or e}{where}{hint}", err=True)
            sys.exit(EXIT_FAILURE)
        except Exception as e:
            if type(e).__module__.startswith("sqlalchemy") and hasattr(e, "orig"):  # the database refused
                click.echo(f"runyard: error: the database cannot be used now: {e.orig}", err=True)
                sys.exit(EXIT_FAILURE)
            raise


@click.group(cls=RunyardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="runyard", message="%(prog)s %(version)s")
def cli() -> None:
    """runyard: launch machine-learning runs in the background, watch them, compare them.

    \b
    Settings come from, lowest first: defaults, $RUNYARD_HOME/config.toml, the project's
    runyard.toml, RUNYARD_<KEY> environment variables. `runyard config` shows them all.

    \b
    Start here:
      runyard run -- python train.py    launch in the background, print the run's number
      runyard ps                        what is queued and running
      runyard logs -f 12                follow a run's log
      runyard doctor     check that the store, database and tools work
      runyard config     show every setting and where it came from
      runyard sync       ingest pending logged data now
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Check the set-up: home, database and schema, artifact store, versions, PostgreSQL, Ray, GPUs.

    Exits with 0 when the configured store works, 1 when it does not.
    """
    from runyard.cli import doctor as impl

    sys.exit(impl.run(as_json=as_json))


@cli.command()
@click.option("--revoke", is_flag=True, help="Withdraw the trust given before.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def trust(revoke: bool, as_json: bool) -> None:
    """Trust this directory's runyard.toml to set server, db and artifacts.

    Those settings decide where your runs' records, your code snapshots and your token go, and a
    project file comes with its repository: until you trust it (as it is now: any change to the
    file needs `runyard trust` again), a runyard.toml that sets them is refused. Settings in your
    home's config.toml, RUNYARD_* variables and flags need no trust. A project file may never hold
    a token.
    """
    from runyard.cli import trusting as impl

    sys.exit(impl.run(revoke=revoke, as_json=as_json))


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
def config_command(as_json: bool) -> None:
    """Show the effective settings, each with where it came from."""
    from runyard.cli import settings as impl

    impl.run(as_json=as_json)


@cli.command()
@click.option("--db", metavar="URL", help="Database to migrate (default: the configured db).")
@click.option("--check", is_flag=True, help="Only report; exit 1 if the schema needs upgrading.")
def migrate(db: str | None, check: bool) -> None:
    """Upgrade the database schema to this runyard's version.

    A SQLite home is upgraded automatically when opened; a PostgreSQL database only by this command,
    so that a team decides when its shared database changes.

    \b
    Example:
      runyard migrate --db postgresql+psycopg://runyard@db.example.com/runyard
    """
    from runyard.cli import migrate as impl

    sys.exit(impl.run(db=db, check=check))


@cli.command()
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def sync(runs: tuple[str, ...], as_json: bool) -> None:
    """Ingest what is waiting in the spool into the store, and say what was done.

    Logged data reaches the store on its own (a background agent ingests it); `runyard sync`
    does it now, for every run or the RUNs given (number, name or id prefix). Runs whose process
    died without finishing are marked lost, and torn records at the end of their spool are counted.
    """
    from runyard.cli import sync as impl

    sys.exit(impl.run(runs, as_json=as_json))


class RunCommand(click.Command):
    """Remembers whether the command came after ``--`` (argv, run without a shell) or as one string."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["runyard.argv_form"] = "--" in args
        return super().parse_args(ctx, args)


# Options `runyard run` and `runyard rerun` share: declared once, so both say and check the same.
_pip_option = click.option("--pip", "pip", multiple=True, metavar="SPEC",
                           help="A package to install for the run (repeatable), into a virtual environment built once "
                                "per set of requirements and layered over the Python the command would run, so its "
                                "packages (runyard too, however installed) stay importable. A requirement as pip "
                                "reads one ('torch>=2.1,<3'); installer options are refused.")
_mount_option = click.option("--mount", "mounts", multiple=True, metavar="SOURCE:TARGET",
                             help="Copy a local path, or another run's artifact (RUN:PATH), read-only into the run "
                                  "directory.")
_env_option = click.option("--env", "env", multiple=True, metavar="KEY[=VALUE]",
                           help="An environment variable for the command (repeatable); KEY alone passes this "
                                "shell's value.")
_environment_option = click.option(
    "--environment", "environment_profile", metavar="NAME",
    help="A named package set from the configuration, [environments.NAME] pip = [\"torch\", ...], installed "
         "as --pip would (built once, then reused by every run that asks for the same packages); a --pip "
         "naming the same package wins.")
_gpus_option = click.option("--gpus", type=int, help="GPUs the run needs; refused unless this machine, or another "
                                                    "serving the same database, has that many.")
_timeout_option = click.option("--timeout", metavar="DURATION", help="Stop the run after this long, e.g. 90s, 2h.")


@cli.command(cls=RunCommand, context_settings={"ignore_unknown_options": False})
@click.argument("command", nargs=-1, required=True,
                metavar="-- COMMAND [ARGS]... | 'SHELL LINE' | NOTEBOOK.ipynb")
@click.option("--project", help="Project of the run (default: the `project` setting).")
@click.option("--name", help="A name to refer to the run by.")
@click.option("--label", "labels", multiple=True, metavar="LABEL", help="A label (repeatable).")
@click.option("--note", default="", help="Notes for the run, in Markdown.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter (repeatable, each KEY once): {KEY} in the command, in the run's config, in "
                   "runyard-params.json and in the variable RUNYARD_PARAM_<KEY>, KEY as written; for a "
                   "notebook, a name its 'parameters' cell assigns, set to VALUE read as a Python literal.")
@_pip_option
@_environment_option
@click.option("--requirements", type=click.Path(dir_okay=False, path_type=Path),
              help="A requirements file, one requirement a line ('name @ URL' too; installer options such as "
                   "-f, --index-url or -r are refused); the same set as --pip options (names compared as pip does, "
                   "in any order, comments aside) reuses the same environment.")
@_mount_option
@_env_option
@_gpus_option
@click.option("--cpus", type=int, help="CPU cores the run needs: it waits until that many are not held by other "
                                      "runs here.")
@click.option("--memory", metavar="SIZE", help="Memory the run needs, e.g. 16G: it waits until that much is not "
                                               "held by other runs here.")
@_timeout_option
@click.option("--priority", type=int, help="Higher runs start first (default: the --machine profile's priority, "
                                          "else 0).")
@click.option("--machine", metavar="NAME", help="A resource profile from [machines.NAME] in the configuration.")
@click.option("--on", metavar="EXECUTOR", help="Where the run executes: local (the agent of this machine, or of the "
              "server's with RUNYARD_SERVER). Default: the `executor` setting.")
@click.option("-f", "--follow", is_flag=True, help="Stream the run's log until it ends; exit with its exit code.")
@click.option("--json", "as_json", is_flag=True, help="Print the queued run as JSON.")
@click.pass_context
def run(ctx: click.Context, /, command: tuple[str, ...], **options: Any) -> None:
    """Run a command in the background, on the code as it is now; print the run's number at once.

    \b
    runyard run -- python train.py --lr 0.1       argv, run without a shell
    runyard run 'cd models; python model_12.py'   one string, run by sh -c
    runyard run --gpus 1 --pip scikit-image --param lr=0.1 -- python train.py
    runyard run analysis.ipynb -p lr=0.1 -p epochs=3   a notebook, executed headless

    \b
    A notebook (one argument ending in .ipynb) runs headless in a Jupyter kernel of the run's
    Python (papermill's conventions): -p values are set in a cell injected after the cell tagged
    `parameters` (at the top, with a warning, if none is), read as Python literals (0.1, True,
    None, [1, 2], 'text') or else as text; a name that cell does not assign is refused before
    anything is queued. Each cell's start, output and duration go to the run's log; the executed
    notebook is kept as outputs/NAME.ipynb (saved as it goes). A cell's exception fails the run
    and names the cell (exit code 1); a kernel that dies is said apart (exit code 138);
    sys.exit(0) finishes it. The run's Python needs ipykernel and papermill
    (runyard[notebook]). See docs/notebook-runs.md.

    \b
    Params in the command: {KEY} is replaced by the value of --param KEY (`runyard show` prints
    the command as it ran; `runyard rerun RUN --param KEY=VALUE` substitutes again):
      runyard run --param lr=0.1 -- python train.py --lr {lr}
                        runs: python train.py --lr 0.1
      runyard run --param lr=0.1 --param epochs=3 -- python train.py {params}
                        runs: python train.py --epochs=3 --lr=0.1
                        ({params}, an argv entry of its own: one --KEY=VALUE per param, sorted by KEY)
      runyard run --param name='my run' 'python train.py --name {name} | tee log.txt'
                        runs: sh -c "python train.py --name 'my run' | tee log.txt"
                        (in a shell line each value is one shell word, quoted by shlex.quote)
    {KEY} naming no --param is an error; write {{ and }} for a literal { and }. ${VAR} and
    braces around anything but a name ({1..3}, {'a': 1}) are left as written.

    The working tree is snapshotted (in git: tracked and untracked-not-ignored files; elsewhere
    all files minus .runyardignore), so editing files afterwards does not change the run. Runs wait
    in a queue until a slot is free (`slots` setting). Print JSON lines of numbers to get metrics
    without the SDK. Files the run creates or changes in its directory (outputs/, and any other
    but caches, .runyardignore'd ones and those over `output_limit`) are kept under their path
    there, and `runyard cp` brings them back; plt.show() saves figures as figures/figure-NNN.png.
    `python FILE` whose FILE the snapshot lacks is refused at once (the run starts at the snapshot's
    root); a command that is not found ends the run with exit code 127, as in a shell.

    \b
    The command's environment (recorded with the run: `runyard show RUN`):
      from this shell   PATH, VIRTUAL_ENV, CONDA_PREFIX, CONDA_DEFAULT_ENV, PYENV_VERSION,
                        PYENV_ROOT, LD_LIBRARY_PATH, HOME, USER, LOGNAME, TMPDIR, LANG,
                        LANGUAGE, TZ and LC_*: so `python` is the one this shell would run
      then --env        KEY=VALUE, or KEY for this shell's value of KEY
      then runyard's    RUNYARD_RUN_ID, RUNYARD_HOME, RUNYARD_DB, RUNYARD_ARTIFACTS,
                        RUNYARD_CAPTURED, RUNYARD_FSYNC, RUNYARD_SYSTEM_INTERVAL,
                        PYTHONUNBUFFERED=1, CUDA_VISIBLE_DEVICES, and RUNYARD_PARAM_<KEY>
                        per --param: --param lr=0.1 sets RUNYARD_PARAM_lr=0.1; and
                        MPLBACKEND=module://runyard_mplbackend, with PYTHONPATH
                        extended to find it, unless --env sets MPLBACKEND

    Nothing else of this shell, and nothing of runyard's background agent, reaches the command.
    A rerun keeps its parent's environment and --env (`runyard rerun --env` changes a variable).
    Through a server (RUNYARD_SERVER) the run gets the environment `runyard server` was started
    with, on the server's machine.
    """
    from runyard.cli import runs as impl

    sys.exit(impl.run(list(command), argv_form=bool(ctx.meta.get("runyard.argv_form")), **options))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def ps(as_json: bool) -> None:
    """Queued and running runs: number, name, status, age, GPUs and latest metrics."""
    from runyard.cli import runs as impl

    sys.exit(impl.ps(as_json))


@cli.command("ls")
@click.option("--project", help="Only runs of this project.")
@click.option("--label", "labels", multiple=True, help="Only runs with this label (repeatable: all of them).")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["queued", "starting", "running", "finished", "failed", "stopped", "timeout", "lost"]),
              help="Only runs in this state (repeatable).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice([k.value for k in RunKind]),
              help="Only runs of this kind (repeatable).")
@click.option("--sort", default="number", show_default=True, help="A field, config.KEY or summary.KEY.")
@click.option("--asc", is_flag=True, help="Ascending order (default: descending).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--columns", metavar="COL,...",
              help="Extra columns: config.KEY, summary.KEY or a run field, e.g. config.lr,summary.val/acc "
                   "(\"-\" where a run has none; in --json under \"columns\").")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def ls_command(**options: Any) -> None:
    """List runs, newest first, with filters.

    \b
    runyard ls --columns config.lr,summary.val/acc --sort summary.val/acc
    """
    from runyard.cli import runs as impl

    sys.exit(impl.ls(**options))


@cli.command()
@click.argument("ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def show(ref: str, as_json: bool) -> None:
    """Everything recorded about a run: command, params, summary, inputs, outputs, parent, children, git.

    RUN is a run's number, its name, or a unique prefix of its id.
    """
    from runyard.cli import runs as impl

    sys.exit(impl.show(ref, as_json))


@cli.command()
@click.argument("refs", nargs=-1, required=True, metavar="RUN RUN...")
@click.option("--all", "show_all", is_flag=True, help="Show params that are equal in every run too.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(refs: tuple[str, ...], show_all: bool, as_json: bool) -> None:
    """Runs side by side: the params that differ between them, and their summary metrics.

    \b
    runyard compare 2 3 4
    runyard compare baseline 7 --all     params that are equal too
    """
    from runyard.cli import compare as impl

    sys.exit(impl.run(list(refs), show_all, as_json))


@cli.command()
@click.argument("ref", metavar="RUN")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--tail", type=click.IntRange(0), help="Only the last N lines.")
@click.option("--stream", type=click.Choice(["stdout", "stderr", "system"]),
              help="Only the command's stdout, its stderr, or runyard's own lines (system).")
def logs(ref: str, follow: bool, tail: int | None, stream: str | None) -> None:
    """Print a run's log on standard output: the command's stdout and stderr interleaved as they came,
    and runyard's own lines marked [runyard].

    \b
    runyard logs 12 | grep Warning     finds warnings the run wrote to its stderr too
    runyard logs 12 --stream stderr    only what it wrote to stderr

    With -f it waits through a server or database outage (saying "reconnecting" on stderr),
    then goes on where it left off, and exits with the run's exit code.
    """
    from runyard.cli import runs as impl

    sys.exit(impl.logs(ref, follow, tail, stream))


@cli.command()
@click.argument("refs", nargs=-1, required=True, metavar="RUN...")
def stop(refs: tuple[str, ...]) -> None:
    """Stop runs: a queued run leaves the queue; a running one gets SIGTERM, then SIGKILL after a grace period."""
    from runyard.cli import runs as impl

    sys.exit(impl.stop(list(refs)))


@cli.command()
@click.option("--env-days", type=click.FloatRange(0), default=30, show_default=True, metavar="N",
              help="Remove package environments (--pip) unused for N days.")
@click.option("--runs-older-than", metavar="DURATION",
              help="Also remove the directories of finished runs that ended longer ago than this, e.g. 7d, 12h.")
@click.option("--all-finished", is_flag=True, help="Also remove the directories of every finished run.")
@click.option("--dry-run", is_flag=True, help="Only say what would be freed (counts and bytes per kind).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def gc(env_days: float, runs_older_than: str | None, all_finished: bool, dry_run: bool, as_json: bool) -> None:
    """Reclaim disk: stored content no run refers to, package environments unused for --env-days
    days, and with --runs-older-than or --all-finished the directories of finished runs.

    \b
    Content a run refers to (its snapshot, artifacts, inputs, diff) is always kept, and so is
    content written in the last hour or since the oldest queued or running run was created; queued
    and running runs keep their directories. The runs' records, metrics and logs stay: `runyard rm`
    deletes runs.

    \b
    runyard gc --dry-run                 what would be freed
    runyard gc --runs-older-than 30d     also the work directories of runs that ended 30 days ago
    """
    from runyard.cli import gc as impl

    sys.exit(impl.gc(env_days, runs_older_than, all_finished, dry_run, as_json))


@cli.command()
@click.argument("refs", nargs=-1, required=True, metavar="RUN...")
@click.option("-y", "--yes", is_flag=True, help="Do not ask (needed without a terminal).")
def rm(refs: tuple[str, ...], yes: bool) -> None:
    """Delete finished runs: their record, metrics, logs, directory, and the artifacts no other run has.

    Asks first. A queued or running run is refused (exit 2): stop it first with `runyard stop`.
    """
    from runyard.cli import gc as impl

    sys.exit(impl.rm(list(refs), yes))


@cli.command()
@click.argument("source", metavar="RUN:PATH")
@click.argument("destination", metavar="DEST")
def cp(source: str, destination: str) -> None:
    """Copy a run's artifact (a file, or a directory of them) out of the store.

    A file goes into DEST if DEST is a directory or ends in a slash (made if missing), else to the
    path DEST. Nothing is written through a symlink inside DEST (a copy that would is refused).

    \b
    runyard cp 62:outputs/model.pt .
    runyard cp 62:checkpoints/ /tmp/ck
    """
    from runyard.cli import runs as impl

    sys.exit(impl.cp(source, destination))


@cli.command()
@click.argument("ref", metavar="RUN")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Change one of RUN's params (repeatable, each KEY once).")
@click.option("--name", help="A name for the new run.")
@_pip_option
@_env_option
@_timeout_option
@_mount_option
@_gpus_option
def rerun(ref: str, **options: Any) -> None:
    """Run RUN again: same code snapshot and options, a new run whose parent is RUN.

    \b
    runyard rerun 12 --param lr=0.05        the command's {lr} becomes 0.05 (and RUNYARD_PARAM_lr)
    runyard rerun 12 --env SEED=2 --timeout 2h --gpus 2
    runyard rerun 12 --pip 'torch==2.2'     replaces run 12's torch, keeps its other packages

    --param changes a param RUN has: {KEY} and {params} in its command are substituted again, and
    its config and RUNYARD_PARAM_<KEY> follow; a KEY RUN does not have is an error. --pip, --env,
    --timeout, --mount and --gpus take the same values as for `runyard run` and replace RUN's: a
    package replaces the same package, a variable the same variable, a mount the one at the same
    target. Everything else is RUN's.
    """
    from runyard.cli import runs as impl

    sys.exit(impl.rerun(ref, **options))


@cli.command()
@click.option("--idle", metavar="DURATION", default="1h", show_default=True,
              help="Stop JupyterLab once it has been idle this long: no kernel busy, no terminal in use, no "
                   "process of it on a GPU (an open browser tab alone does not count).")
@_gpus_option
@click.option("--cpus", type=int, help="CPU cores JupyterLab's run holds.")
@click.option("--memory", metavar="SIZE", help="Memory JupyterLab's run holds, e.g. 16G.")
@_pip_option
@_environment_option
@click.option("--requirements", type=click.Path(dir_okay=False, path_type=Path),
              help="A requirements file for its environment, as for `runyard run`.")
@click.option("--project", help="Project of the run (default: the `project` setting).")
@click.option("--name", help="A name to refer to the run by.")
@click.option("--label", "labels", multiple=True, metavar="LABEL", help="A label (repeatable).")
@click.option("--on", type=click.Choice(["local", "ray"]), help="Where it runs: local (default; through a "
              "server: the server's machine) or ray (a node of the server's cluster; needs RUNYARD_SERVER).")
@click.option("--wait", type=float, default=120.0, show_default=True, metavar="SECONDS",
              help="How long to wait for JupyterLab to answer before returning (it may wait in the queue).")
@click.option("--resume", metavar="RUN", help="A new notebook run on the files notebook run RUN left (its "
              "outputs over its snapshot), with the --gpus, --pip and --idle given now.")
@click.option("--url", metavar="RUN", help="Print the address of notebook run RUN, and start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print {number, url} as JSON.")
def notebook(**options: Any) -> None:
    """Start JupyterLab as a run, on the files here, and print its address with its token.

    \b
    runyard notebook                       JupyterLab on this machine, stopped after 1 h idle
    runyard notebook --gpus 1 --idle 30m   holding one GPU while it runs
    runyard notebook --url 42              the address of notebook run 42 again
    runyard notebook --resume 42 --gpus 2  go on with run 42's files, on two GPUs

    It is a run like any other: it waits in the queue for its resources, shows in `runyard ps`
    (labelled jupyterlab), `runyard stop` stops it, and when it stops, idle or stopped, the files
    it created or changed in its directory are kept as the run's outputs (`runyard cp RUN:. dir`).
    JupyterLab listens on loopback only, with a token that is not stored anywhere but the run's
    directory (readable by you alone). Idle means no kernel busy, no terminal in use and no process
    on a GPU for --idle: a long, silent training cell keeps it running; an open tab does not.

    With RUNYARD_SERVER set (a writer's token), it runs on the server's machine, and the address
    printed (by --url too) is a one-time link, valid two minutes, to the server's JupyterLab port
    (`runyard server --lab-port`), which proxies to it: run --url again for a new link. With --on ray
    as well, JupyterLab runs on a node of the server's Ray cluster (with --gpus, one with a GPU), and
    the same link reaches it through the server.

    \b
    RUNYARD_SERVER=http://yard:8765 runyard notebook --on ray --gpus 1
    """
    from runyard.cli import notebook as impl

    sys.exit(impl.notebook(options))


@cli.command("serve")
@click.argument("source", required=False, metavar="RUN[:PATH] | model:NAME[@ALIAS]")
@click.option("--handler", metavar="FILE.py:Class", help="The class that loads and runs the model, in the "
              "training run's code (default: handler under [serve] in runyard.toml).")
@click.option("--name", help="The name it is served under: /serve/NAME/ on a runyard server (default: the "
              "training run's name, else run-N).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port to listen on (default: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback lets anyone who reaches it use the model.")
@_pip_option
@_gpus_option
@click.option("--label", "labels", multiple=True, metavar="LABEL", help="A label of the serve run (repeatable).")
@click.option("--log-inputs", is_flag=True, help="Write each request's inputs in the run's log (never by default).")
@click.option("--on", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where it is served: this machine (the server's, through a server), or a Ray Serve application.")
@click.option("--replicas", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Replicas of a Ray Serve application (--on ray).")
@click.option("--export", nargs=2, metavar="k8s DIR", default=None,
              help="Write a Docker build context and Kubernetes manifests to DIR instead of serving.")
@click.option("--force", is_flag=True, help="With --export: write into a DIR that is not empty (replacing what "
              "an earlier export wrote).")
@click.option("--wait", type=float, default=120.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the model to be loaded before returning.")
@click.option("--url", "url_of", metavar="RUN", help="Print the address of serve run RUN, and start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print {number, name, url} as JSON.")
def serve_command(source: str | None, **options: Any) -> None:
    """Serve a trained run's model over HTTP, with a demo page, as a run of its own.

    \b
    runyard serve 12:outputs/model --handler serve.py:Digits --name digits
    runyard serve model:digits@production              a registered model (runyard model)
    runyard serve --url 14                             the address of serve run 14 again
    runyard serve 12:outputs/model --handler serve.py:Digits --export k8s deploy/
    curl -d '{"image": [[0, 255, ...], ...]}' http://127.0.0.1:PORT/predict

    The handler is a class in the training run's code, as it was when run 12 was submitted:
    load(self, model_dir) once, predict(self, ...) per request, its inputs and output declared by
    annotations (float, str, list[float], runyard.serve.Image, runyard.serve.Table, ...; see
    docs/serving.md). runyard never unpickles anything itself: loading is the handler's. It runs
    with run 12's packages (--pip adds some), with run 12's artifacts under PATH as model_dir.

    It prints the URL once the model is loaded: / is a demo page built from the declared types,
    POST /predict takes JSON (or a form), GET /health and /ready say whether it is alive and loaded,
    /openapi.json describes it. It is a run: `runyard ps` lists it, `runyard stop` stops it, and its
    request counts, latency (p50/p99) and error rate are its metrics (serve/...), for charts and
    alerts. It listens on loopback; teammates reach it through a runyard server at /serve/NAME/
    with their tokens (RUNYARD_SERVER set: it then runs on the server's machine).

    --export k8s DIR serves nothing: it writes a Docker build context (the code, the model, the
    run's pinned packages) and a Kubernetes Deployment and Service with probes on /ready and
    /health, for whoever deploys it (docs/serving.md).
    """
    from runyard.cli import serve as impl

    if options["url_of"] is not None:
        sys.exit(impl.print_url(options["url_of"], options["as_json"]))
    if source is None:
        raise click.UsageError("which model? give RUN[:PATH] (e.g. 12:outputs/model) or model:NAME[@ALIAS]")
    sys.exit(impl.serve(source, options))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("ref", metavar="RUN")
@click.argument("changes", nargs=-1, required=True, metavar="+LABEL|-LABEL...")
def label(ref: str, changes: tuple[str, ...]) -> None:
    """Add (+name) and remove (-name) labels: runyard label 12 +baseline -draft"""
    from runyard.cli import runs as impl

    sys.exit(impl.label(ref, list(changes)))


@cli.command()
@click.argument("ref", metavar="RUN")
@click.argument("text")
def note(ref: str, text: str) -> None:
    """Append a paragraph of Markdown to a run's notes."""
    from runyard.cli import runs as impl

    sys.exit(impl.note(ref, text))


# -- server ---------------------------------------------------------------------------------------

@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs a token to exist first.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--db", metavar="URL", help="Database (default: the configured db).")
@click.option("--artifacts", metavar="PATH", help="Artifact store: a directory or s3://BUCKET/PREFIX (default: the "
              "configured one).")
@click.option("--allow-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A DNS name clients reach the server by (the Host header); repeatable. "
                   "Needed with --host 0.0.0.0 or ::.")
@click.option("--insecure-local", is_flag=True,
              help="On loopback, serve without a token while none exists: every user of this machine may then "
                   "read every run and launch commands as you.")
@click.option("--max-connections", type=click.IntRange(10, 100_000), default=500, show_default=True,
              help="Connections open at once; a request on one more is answered 503 with Retry-After. "
                   "Keep it below the open-files limit (ulimit -n).")
@click.option("--max-upload", "max_upload", type=click.IntRange(1), default=256 << 10, show_default=True,
              metavar="MIB", help="Largest artifact or blob upload, in MiB; a bigger one is refused (413).")
@click.option("--rate", type=click.FloatRange(0.1), default=500.0, show_default=True, metavar="N",
              help="Requests a second one token (or browser session) may make, sustained; past it and its "
                   "--burst a request is answered 429 with Retry-After, which runyard's clients wait for.")
@click.option("--burst", type=click.IntRange(1), default=5000, show_default=True, metavar="N",
              help="Requests one token may make at once before --rate applies.")
@click.option("--lab-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Port of the JupyterLab origin, on the same --host: teammates open a notebook run's JupyterLab "
                   "there (from the dashboard or `runyard notebook --url RUN`), proxied to it, on an origin apart "
                   "from the dashboard's so that a notebook's scripts cannot act as the dashboard. Default: the "
                   "port + 1; 0 serves no JupyterLab.")
@click.option("--min-body-rate", type=click.IntRange(0), default=1024, show_default=True, metavar="BYTES",
              help="Bytes a second a request body must arrive at (averaged over 10 s), else the connection is "
                   "closed (408): a client trickling a body cannot hold a connection. 0 turns the check off "
                   "(clients on very slow links).")
def server(host: str, port: int, db: str | None, artifacts: str | None, allowed_hosts: tuple[str, ...],
           insecure_local: bool, max_connections: int, max_upload: int, rate: float, burst: int,
           lab_port: int | None, min_body_rate: int) -> None:
    """Run the tracking server: the HTTP API, ingest from remote runs, live events.

    \b
    Every request needs `Authorization: Bearer <token>`. On loopback (the default) the server
    makes this home's credential, an admin token in ~/.runyard/local-token (mode 0600), which
    this home's runyard (CLI, SDK, `runyard ui`) sends without being asked. Bound to another
    address it refuses to start until a token exists (clients: set RUNYARD_SERVER and
    RUNYARD_TOKEN).

    JupyterLab runs (`runyard notebook`) are served on a second port, --lab-port (default: the
    port + 1), an origin of their own: a writer's one-time link (the dashboard's Open button,
    `runyard notebook --url RUN`) opens one there; every request is proxied to it with its token.

    \b
    Examples:
      runyard server                                  # http://127.0.0.1:8765, this home's store
      runyard token create --role admin --name me     # before listening on the network:
      runyard server --host 0.0.0.0 --allow-host runyard.example.org \
          --db postgresql+psycopg://runyard@db/runyard
    """
    from runyard.cli import server as impl

    sys.exit(impl.serve(host, port, db, artifacts, allowed_hosts, insecure_local,
                        {"max_connections": max_connections, "max_upload": max_upload << 20, "rate": rate,
                         "burst": burst, "min_body_rate": min_body_rate}, lab_port))


@cli.command()
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the local server.")
@click.option("--no-browser", is_flag=True, help="Only print the URL.")
@click.option("--insecure-local", is_flag=True,
              help="Start the local server without tokens (see `runyard server --insecure-local`).")
def ui(port: int, no_browser: bool, insecure_local: bool) -> None:
    """Open runyard in the browser, starting the local server if none is running.

    The printed link logs the browser in once (it holds a code that lapses after two minutes)
    and leads to the dashboard; run it again for a new link.
    """
    from runyard.cli import server as impl

    sys.exit(impl.ui(port, no_browser, insecure_local))


@cli.group()
def token() -> None:
    """Create, list and revoke API tokens (stored hashed; a secret is shown once).

    \b
    Roles: reader (reads), writer (also logs, launches, edits), admin (also manages tokens).
    Works on the configured database, or through RUNYARD_SERVER with an admin token.
    """


@token.command("create")
@click.option("--role", type=click.Choice(["reader", "writer", "admin"]), required=True, help="What the token may do.")
@click.option("--project", metavar="P", help="Limit the token to one project's runs.")
@click.option("--name", metavar="N", help="A name to tell it apart (default: token-<prefix>).")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its details as JSON.")
def token_create(role: str, project: str | None, name: str | None, as_json: bool) -> None:
    """Create a token and print its secret (once: it is stored only as a hash)."""
    from runyard.cli import tokens as impl

    sys.exit(impl.create(role, project, name, as_json))


@token.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def token_list(include_revoked: bool, as_json: bool) -> None:
    """List tokens: id, name, role, project, prefix, last use (never secrets)."""
    from runyard.cli import tokens as impl

    sys.exit(impl.list_tokens(include_revoked, as_json))


@token.command("revoke")
@click.argument("ref", metavar="TOKEN")
def token_revoke(ref: str) -> None:
    """Revoke a token by id, name or prefix; requests carrying it get 401 from then on."""
    from runyard.cli import tokens as impl

    sys.exit(impl.revoke(ref))


@cli.group()
def alert() -> None:
    """Alert rules: notice a NaN, a drop, a plateau, a stalled or idle run, or a failure, and say so
    (inbox, webhook, email, desktop) or stop the run.

    \b
    Rules also come from [[alerts]] tables in a project's runyard.toml, and from run.alert() in a script.
    With RUNYARD_SERVER set, these commands work on the server's rules.
    Examples:
      runyard alert add --when nan --metric loss --action stop
      runyard alert add --when drop --metric val/acc --by 5% --project gan
      runyard alert add --when stalled --for 10m
    """


@alert.command("add")
@click.option("--when", "when", required=True, metavar="KIND",
              help="nan | above | below | drop | plateau | stalled | gpu_idle | memory | failed | finished | lost")
@click.option("--name", help="A name for the rule (default: KIND[-METRIC]).")
@click.option("--metric", help="The metric it watches.")
@click.option("--value", type=float, help="The threshold (above, below, gpu_idle, memory).")
@click.option("--by", help="How far below the best is a drop: 0.1 or 10%.")
@click.option("--steps", type=int, help="Steps without improvement (plateau).")
@click.option("--epsilon", type=float, help="What counts as an improvement (plateau).")
@click.option("--for", "for_", metavar="DURATION", help="How long (stalled, gpu_idle): 30s, 10m, 2h.")
@click.option("--mode", type=click.Choice(["min", "max"]), help="Which way is better (plateau; default min).")
@click.option("--action", type=click.Choice(["notify", "stop"]), default="notify", show_default=True)
@click.option("--notify", "channels", default="inbox", show_default=True, help="Channels, comma-separated.")
@click.option("--project", metavar="P", help="Only runs of this project (default: every run).")
@click.option("--run", "run_ref", metavar="RUN", help="Only this run.")
@click.option("--json", "as_json", is_flag=True, help="Print the rule as JSON.")
def alert_add(when: str, name: str | None, metric: str | None, value: float | None, by: str | None,
              steps: int | None, epsilon: float | None, for_: str | None, mode: str | None, action: str,
              channels: str, project: str | None, run_ref: str | None, as_json: bool) -> None:
    """Add an alert rule."""
    from runyard.cli import alerts as impl

    fields = {"name": name or "-".join(p for p in (when, metric) if p), "when": when, "metric": metric,
              "value": value, "by": by, "steps": steps, "epsilon": epsilon, "for": for_, "mode": mode,
              "action": action, "notify": [c.strip() for c in channels.split(",") if c.strip()]}
    sys.exit(impl.add(fields, project, run_ref, as_json))


@alert.command("ls")
@click.option("--project", metavar="P", help="Only this project's rules.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def alert_ls(project: str | None, as_json: bool) -> None:
    """List alert rules."""
    from runyard.cli import alerts as impl

    sys.exit(impl.ls(project, as_json))


@alert.command("rm")
@click.argument("rule_id", type=int, metavar="ID")
def alert_rm(rule_id: int) -> None:
    """Remove an alert rule (its past alerts stay in the inbox)."""
    from runyard.cli import alerts as impl

    sys.exit(impl.rm(rule_id))


@alert.command("test")
@click.option("--channel", "channels", multiple=True, type=click.Choice(["webhook", "email", "desktop"]),
              help="Only this channel (repeatable; default: every configured one).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per channel.")
def alert_test(channels: tuple[str, ...], as_json: bool) -> None:
    """Send a test message on each configured channel now, and say whether it went out.

    Uses the [notify] table of the project's runyard.toml, else the home's config.toml: what a run
    launched from here would use. Exits 1 if a channel failed.
    """
    from runyard.cli import alerts as impl

    sys.exit(impl.test_channels(channels, as_json))


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing alerts as they come (Ctrl-C to stop).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per alert.")
@click.option("--all", "show_all", is_flag=True, help="Read alerts too, not only unread ones.")
def inbox(follow: bool, as_json: bool, show_all: bool) -> None:
    """Unread alerts, oldest first; printing them marks them read."""
    from runyard.cli import alerts as impl

    sys.exit(impl.inbox(follow, as_json, show_all))


@cli.command()
def status() -> None:
    """One line for a shell prompt or tmux: 3 running · 2 queued · 1 failed · 1 alert."""
    from runyard.cli import alerts as impl

    sys.exit(impl.status())


# `runyard model`: its declarations are a module of their own (click only, so still light).
from runyard.cli.model_group import model  # noqa: E402

cli.add_command(model)


def main() -> None:
    cli(prog_name="runyard")


if __name__ == "__main__":
    main()
