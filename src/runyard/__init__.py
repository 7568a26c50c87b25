"""runyard: an asynchronous workspace for machine-learning experiments.

    import runyard
    run = runyard.init(project="gan", config={"lr": 3e-4})
    for step in range(1000):
        run.log({"loss": loss}, step=step)      # returns at once; never waits on I/O
    run.finish()                                # or let the interpreter's exit do it

    api = runyard.Api()                         # read runs back: history, exact envelopes
    api.run("12").history("loss")

    %load_ext runyard                           # in a notebook: %%runyard run launches a cell

Importing runyard is cheap: every name below loads its module on first use (PEP 562), so a
script that imports runyard and never calls it pays for almost nothing.
"""

from runyard._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runyard.api import Api
    from runyard.sdk.current import current_run, finish, init, log
    from runyard.sdk.run import Run

__all__ = ["Api", "Run", "__version__", "current_run", "finish", "init", "load_ipython_extension", "log"]

_LAZY = {
    "Api": "runyard.api",
    "Run": "runyard.sdk.run",
    "current_run": "runyard.sdk.current",
    "finish": "runyard.sdk.current",
    "init": "runyard.sdk.current",
    "log": "runyard.sdk.current",
}


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext runyard``: the %%runyard and %runyard magics (IPython loads only then)."""
    from runyard.notebook.magic import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runyard' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
