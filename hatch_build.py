"""Compile runyard's one C module (src/runyard/sdk/_frames.c) when the package is built or installed.

The module makes the spool frame of the usual ``run.log()`` call in one C call; runyard works
without it (sdk/shaped.py builds the same bytes in Python), so a machine with no C compiler gets a
working package and a warning, not a failed install.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/runyard/sdk/_frames.c")


class FramesBuildHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        source = root / SOURCE
        target = source.with_name("_frames" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
        if not compile_module(source, target):
            return
        # A wheel with a compiled module is for this platform and Python; an editable install
        # finds the module beside its source (src/ is on the path).
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = f"runyard/sdk/{target.name}"


def compile_module(source: Path, target: Path) -> bool:
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return True
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    command = [*compiler, "-O2", "-shared", "-fPIC", "-Wall", f"-I{sysconfig.get_paths()['include']}",
               str(source), "-o", str(target)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"runyard: not compiling {source.name} ({e}); log() uses its Python encoder", file=sys.stderr)
        return False
    if result.returncode != 0:
        print(f"runyard: compiling {source.name} failed; log() uses its Python encoder\n{result.stderr}",
              file=sys.stderr)
        target.unlink(missing_ok=True)
        return False
    return True
