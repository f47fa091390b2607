"""The local runtime's one native program, ``cairn-shim`` (shim.c), built on this host on first use.

Static, so the same file runs on the host (beside each container) and inside any image (as the
container's first process, bind-mounted read-only): a Java or Node image has no Python to run a
helper with. Named by its source's hash, so an upgrade of cairn builds the new one beside the old,
which the instances still running keep using.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cairn.errors import PermanentError

SOURCE = Path(__file__).resolve().with_name("shim.c")
COMPILE_TIMEOUT_S = 120.0


def shim_binary(state: Path) -> Path:
    """The built shim under ``state/bin``, compiled now when this source has no build yet."""
    source = SOURCE.read_bytes()
    target = state / "bin" / f"cairn-shim-{hashlib.sha256(source).hexdigest()[:12]}"
    if target.is_file():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise PermanentError("no C compiler to build the local runtime's shim (cairn-shim)",
                             hint="apt-get install gcc libc6-dev")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        built = Path(tmp) / "cairn-shim"
        done = subprocess.run([compiler, "-O2", "-static", "-o", str(built), str(SOURCE)],
                              capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise PermanentError(f"building cairn-shim failed: {detail}",
                                 hint="a static build needs gcc and libc6-dev (libc.a): apt-get install gcc libc6-dev")
        built.chmod(0o755)
        os.replace(built, target)  # another agent building at once wins or loses whole
    return target
