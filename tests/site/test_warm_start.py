"""Forked chapter kernels: the same kernel as a launched one, forked only where that holds, and
never left running once the process that asked for it is gone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from qfail.site import kernel, warm_start

# what a kernel reports about itself: enough to tell a forked kernel from a launched one
PROBE = textwrap.dedent("""
    import json, os, sys
    import matplotlib
    print(json.dumps({"ppid": os.getppid(), "cwd": os.getcwd(), "argv0": sys.argv[0], "path": sys.path,
                      "backend": matplotlib.get_backend(), "probe": os.environ.get("QFAIL_PROBE"),
                      "torch_env": os.environ.get("KMP_DUPLICATE_LIB_OK"), "session": os.getsid(0) == os.getpid()}))
""")


@pytest.fixture(scope="module", autouse=True)
def own_server():
    """A server of this module's own, started in this environment: this process's server may have
    been started by another test, in an environment of that test's."""
    owned = len(warm_start._owned)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(warm_start, "_connection", [])
        patch.delenv(warm_start.ADDRESS, raising=False)
        yield
    for server in warm_start._owned[owned:]:
        server.stdin.close()  # it stops, and kills its kernels
        server.wait(timeout=30)


def _report(cwd: Path) -> dict:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROBE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, km=kernel.SlicedKernelManager(kernel_name="python3"), resources={"metadata": {"path": str(cwd)}},
                   shutdown_kernel="immediate").execute()
    return json.loads(nb.cells[0].outputs[0]["text"])


def test_a_forked_kernel_is_the_kernel_a_launch_gives(tmp_path, monkeypatch):
    monkeypatch.setenv("QFAIL_CACHE", str(tmp_path / "cache"))  # read at call time: it may differ
    forked = _report(tmp_path)
    assert forked["ppid"] != os.getpid(), "the kernel was launched, not forked"
    monkeypatch.setenv(warm_start.OPT_OUT, "0")
    launched = _report(tmp_path)
    assert launched["ppid"] == os.getpid()
    for report in (forked, launched):
        report.pop("ppid")
    assert forked == launched
    assert forked["backend"] == warm_start.INLINE_BACKEND and forked["session"] and forked["torch_env"]


def test_another_environment_gets_a_launched_kernel(tmp_path, monkeypatch):
    _report(tmp_path)  # the server exists, in this environment
    monkeypatch.setenv("QFAIL_PROBE", "other")  # numpy or torch might have read it on import
    report = _report(tmp_path)
    assert report["ppid"] == os.getpid() and report["probe"] == "other"
    assert not warm_start.forkable([sys.executable, "-m", "ipykernel_launcher"], dict(os.environ))
    monkeypatch.delenv("QFAIL_PROBE")
    assert warm_start.forkable([sys.executable, "-m", "ipykernel_launcher"], dict(os.environ))
    assert not warm_start.forkable(["qemu-x86_64", sys.executable, "-m", "ipykernel_launcher"], dict(os.environ))


def test_a_workers_kernel_is_forked_after_readline_wrote_the_terminal_size(toy_chapter, tmp_path):
    """GNU readline (which pytest and Python's prompt import) puts COLUMNS and LINES into the C
    environment, not os.environ: a chapter worker inherits them, the server did not. Its kernels
    are forked all the same (the whole small-runs fixture was launched before this was seen)."""
    import readline  # noqa: F401 - what pytest may already have imported

    from qfail.site import execute, runner

    chapter = toy_chapter("probe", "seed: int = 0  # {≥ 0} seed", PROBE)
    with execute.chapter_pool(1) as pool:
        [server] = warm_start._owned[-1:]
        path = pool.submit(runner.run_chapter, "probe", {}, tmp_path / "out", notebook_dir=chapter).result()
    [output] = [o for cell in nbformat.read(path, as_version=4).cells for o in cell.get("outputs", [])]
    assert json.loads(output["text"])["ppid"] == server.pid, "the worker's kernel was launched, not forked"


CLIENT = textwrap.dedent("""
    import asyncio, os, sys
    from qfail.site import kernel

    async def main():
        km = kernel.SlicedKernelManager(kernel_name="python3")
        await km.start_kernel()
        assert km.provisioner.forked
        print(km.provisioner.pid, flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
""")


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_forked_kernel_dies_with_the_process_that_asked_for_it():
    env = {key: value for key, value in os.environ.items() if key != warm_start.ADDRESS}  # its own server
    client = subprocess.Popen([sys.executable, "-c", CLIENT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid = int(client.stdout.readline())
        assert not _gone(pid, 0.5), "the kernel did not start"
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
    assert _gone(pid, 10), "the kernel outlived its client"


PROBE_CONNECT = ("import socket, sys; a = sys.argv[1]; s = socket.socket(socket.AF_UNIX); "
                 "s.connect('\\0' + a[1:] if a.startswith('@') else a); print(repr(s.recv(100)))")


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                    reason="connecting as another user needs root and a Python that user can run")
def test_another_user_cannot_ask_for_kernels():
    """Whoever the server answers can run code as its user; on Linux its socket has no file
    permissions, so the server checks who connected."""
    warm_start.kernel_server(dict(os.environ))
    probe = subprocess.run(["/usr/bin/python3", "-c", PROBE_CONNECT, os.environ[warm_start.ADDRESS]], check=False, user=65534,
                           capture_output=True, text=True, timeout=120, cwd="/")
    assert probe.stdout.strip() == "b''" or "PermissionError" in probe.stderr, probe.stdout + probe.stderr
    assert warm_start.kernel_server(dict(os.environ)).alive  # the server goes on serving its own user
