"""``read_only_root`` on both runtimes: the app's image cannot be written, /tmp still can."""

from __future__ import annotations

import pytest

from tests.behaviour.conftest import Harness

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("read_only", "expected"), [
    pytest.param(True, ["0", "wrote-tmp"], id="a read-only root refuses even root's writes to the image while /tmp takes them"),
    pytest.param(False, ["0", "wrote-root", "wrote-tmp"], id="by default root writes to its own layer"),
])
def test_read_only_root_keeps_the_image_unwritten_and_tmp_writable(runtime: Harness, read_only: bool, expected: list[str]) -> None:
    env = runtime.env("ro")
    # Root, since a non-root user could not write the image's files in any case.
    runtime.ensure(env, [0], runtime.revision(env, read_only_root=read_only))
    [first] = runtime.wait_ready(env, 1)
    seen = runtime.runtime.exec(env, first.name, ["sh", "-c", "id -u; touch /acs/code/probe 2>/dev/null && echo wrote-root; "
                                                  "touch /tmp/probe && echo wrote-tmp"], user="ro", timeout_s=20)
    assert seen.stdout.split() == expected, seen
