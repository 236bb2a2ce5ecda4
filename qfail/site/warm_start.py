"""Chapter kernels forked from a process that has already imported what every chapter imports.

A chapter's kernel spends about 4 s on these cores before its first cell has done anything: half a
second to start Python and ipykernel, the rest importing torch (and ``torch._dynamo``, which every
optimizer pulls in), pandas, scikit-learn and qfail. A build runs eight chapters and the tests
many more, each paying it again. So :class:`ForkProvisioner` forks each kernel from a server
process (:func:`serve`) that imported :data:`PRELOAD` once. The first process that asks for a
kernel starts the server and names it in :data:`ADDRESS` for the processes it starts (the build's
chapter workers), which then fork their kernels from the same server.

A forked kernel must be the kernel that ``python -m ipykernel_launcher`` would have been, so that
every chapter prints the same numbers either way (the small-run tables are checked digit for
digit). So the server imports modules and runs nothing: no thread pool of OpenMP's or torch's has
started, and OpenBLAS stops its threads around a fork. The fork then takes the kernel's working
directory, environment, ``sys.argv`` and ``sys.path``, and leads its own session, as
jupyter_client's kernels do, so that an interrupt or a kill reaches what the kernel started. A
kernel is forked only when its environment is the server's except for variables read at call time
(:data:`PER_LAUNCH`): the preloaded modules read the others when they loaded. Every other launch
(another interpreter or kernel command, an emulated CPU, another environment, or
``QFAIL_FORK_KERNELS=0``) starts a new process, as jupyter_client does.

A kernel does not outlive the connection it was asked for on: when a process that asked for
kernels exits, however it exits, the server kills the kernels it still has. The server itself
stops, killing every kernel it forked, when the process that started it exits.

multiprocessing's own forkserver is not used: each of its children first imports the parent's
``__main__`` script again, so a reader's script that calls ``run_chapter`` outside an
``if __name__ == "__main__":`` guard would start itself once per chapter.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import LocalProvisioner

__all__ = ["ADDRESS", "ANSWER_SECONDS", "OPT_OUT", "PER_LAUNCH", "PRELOAD", "ForkProvisioner", "ForkedKernel", "KernelServer",
           "enabled", "forkable", "kernel_server", "serve"]

# what the chapters import, qfail first (it pins the kernels numpy and torch load: qfail.isa);
# matplotlib but not pyplot, which binds a backend and a display hook when it loads
PRELOAD = ("qfail", "numpy", "torch", "torch._dynamo", "pandas", "matplotlib", "sklearn.metrics",
           "ipykernel.kernelapp", "ipywidgets", "qfail.site.widgets", "qfail.site.plots", "qfail.train",
           "qfail.verify", "qfail.sweep", "qfail.distill", "qfail.papers.li.pipelines", "qfail.papers.hu.disagreements",
           "qfail.papers.moon.controller", "qfail.papers.frank.analyses", "qfail.papers.at_scale")
ADDRESS = "QFAIL_KERNEL_SERVER"  # the server's socket, for the processes started after it
OPT_OUT = "QFAIL_FORK_KERNELS"  # "0": start every kernel as a new process
# variables that may differ between a forked kernel and its server: read when used, not on import.
# COLUMNS and LINES, a terminal's size: GNU readline writes them into the C environment of the
# process that imports it (pytest does, and so does Python's prompt), where os.environ does not
# see them, so the workers that process spawns carry them and the server it started does not
PER_LAUNCH = frozenset({"JPY_PARENT_PID", "JPY_SESSION_NAME", "PYTEST_CURRENT_TEST", "QFAIL_STATIC_WIDGETS",
                        "QFAIL_CACHE", "QFAIL_DATA", "COLUMNS", "LINES", ADDRESS})
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # what ipykernel sets MPLBACKEND to
ANSWER_SECONDS = 300  # the longest a kernel waits for the server (its imports take about 5 s)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


class _Lines:
    """The JSON messages arriving on a socket, one per line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self._pending = sock, b""

    def read(self) -> list[dict[str, Any]] | None:
        """The messages that one receive completes; None once the other end has gone."""
        try:
            data = self.sock.recv(1 << 20)
        except OSError:
            return None
        if not data:
            return None
        *lines, self._pending = (self._pending + data).split(b"\n")
        return [json.loads(line) for line in lines]


# --- the server (its own process) -----------------------------------------------------------------

def serve(listen_fd: int) -> None:
    """Import :data:`PRELOAD`, then serve the connections on the listening socket ``listen_fd``:
    send each its environment (``{"env": ...}``), fork one kernel per request (``{"argv", "env",
    "cwd"}``) and answer ``{"pid": ...}``, and ``{"exit": [pid, code]}`` when that kernel ends.
    Exit, killing every kernel, when stdin closes (the process that started the server is gone)."""
    del sys.path[0]  # ``python -c``'s working directory, as ipykernel_launcher removes its own
    start_env = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    # what the imports set (torch sets KMP_DUPLICATE_LIB_OK, for one), for every kernel to set too
    imported_env = {key: value for key, value in os.environ.items() if start_env.get(key) != value}
    launcher = importlib.util.find_spec("ipykernel_launcher").origin
    listener = socket.socket(fileno=listen_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd hears of exits
    clients: dict[socket.socket, _Lines] = {}
    kernels: dict[int, socket.socket] = {}  # running kernel -> the connection that asked for it

    def drop(client: socket.socket) -> None:
        for pid in [pid for pid, owner in kernels.items() if owner is client]:
            _kill(pid)
        del clients[client]
        client.close()

    while True:
        readable, _, _ = select.select([0, listener, wake_r, *clients], [], [])
        if 0 in readable and not os.read(0, 1):
            for pid in kernels:
                _kill(pid)
            for pid in kernels:
                _reap(pid)  # gone, not left a zombie while this process exits
            if sys.platform != "linux":
                os.unlink(listener.getsockname())
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)  # nothing is left to save: skip tearing down torch and the rest (about 1.5 s)
        if wake_r in readable:
            os.read(wake_r, 4096)
            for pid, code in _reaped():
                owner = kernels.pop(pid, None)
                if owner in clients:
                    _try_send(owner, {"exit": [pid, code]})
        if listener in readable:
            client, _ = listener.accept()
            if not _same_user(client):
                client.close()  # whoever connects may run code as this user: only this user may
                continue
            clients[client] = _Lines(client)
            _try_send(client, {"env": start_env})
        for client in [c for c in readable if c in clients]:
            messages = clients[client].read()
            if messages is None:
                drop(client)
                continue
            for request in messages:
                pid = os.fork()
                if pid == 0:
                    _become_kernel(request, imported_env, launcher, [listener, *clients], (wake_r, wake_w))
                kernels[pid] = client
                _try_send(client, {"pid": pid})


def _same_user(client: socket.socket) -> bool:
    """Whether the process at the other end runs as this user (Linux's abstract sockets have no
    file permissions to say so; elsewhere the socket's file is this user's alone)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    _, uid, _ = struct.unpack("3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid == os.getuid()


def _try_send(client: socket.socket, message: dict[str, Any]) -> None:
    try:
        _send(client, message)
    except OSError:
        pass  # it has gone; the next read finds out


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the kernel leads its own process group
    except OSError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # reaped already


def _reaped() -> list[tuple[int, int]]:
    """The (pid, exit code) of every child that has ended, as :attr:`subprocess.Popen.returncode`."""
    ended = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, os.waitstatus_to_exitcode(status)))


def _become_kernel(request: dict[str, Any], imported_env: dict[str, str], launcher: str, sockets: list[socket.socket],
                   fds: tuple[int, ...]) -> None:
    """In the fork: become what ``python -m ipykernel_launcher *argv`` in ``cwd`` would be once it
    had imported :data:`PRELOAD`; run it."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sock in sockets:
            sock.close()
        for fd in fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # a launched kernel's stdin is a pipe closed at once
        os.close(devnull)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.update(imported_env)
        sys.argv = [launcher, *request["argv"]]
        import matplotlib  # it read MPLBACKEND when the server imported it, before ipykernel set it

        matplotlib.rcParams["backend"] = os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
        from ipykernel.kernelapp import IPKernelApp

        # the one option ipykernel read from the environment on import: the process that asked
        IPKernelApp.launch_instance(parent_handle=int(os.environ.get("JPY_PARENT_PID") or 0))
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    except BaseException:  # noqa: BLE001 - the fork must never return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _socket_address(address: str) -> str:
    """Where to bind or connect for ``address``: ``@name`` is Linux's abstract namespace, which
    leaves no file behind however the server ends (Ray kills what its workers started)."""
    return "\0" + address[1:] if address.startswith("@") else address


def _start_server(env: dict[str, str]) -> str:
    """Start a server in ``env``; return its address (it may connect before the imports end)."""
    name = f"qfail-kernels-{uuid.uuid4().hex[:12]}"
    address = f"@{name}" if sys.platform == "linux" else os.path.join(tempfile.gettempdir(), name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(_socket_address(address))
    if not address.startswith("@"):
        os.chmod(address, 0o600)
    listener.listen(64)
    # stdin stays open while this process lives: the server stops when it closes. In a session of
    # its own, a signal to this process's group (Ctrl-C) leaves it to stop that way too, killing
    # its kernels as it goes
    server = subprocess.Popen([sys.executable, "-c", f"from qfail.site.warm_start import serve; serve({listener.fileno()})"],
                              stdin=subprocess.PIPE, pass_fds=(listener.fileno(),), env=env, start_new_session=True)
    listener.close()
    _owned.append(server)
    return address


# --- the client (a process that runs chapters) ----------------------------------------------------

class KernelServer:
    """One connection to a server: it asks for kernels and learns of their exits."""

    def __init__(self, address: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(_socket_address(address))
        self._lines = _Lines(sock)
        self._exits: dict[int, int] = {}
        self._pids: list[int] = []  # the kernel being forked, once the server has answered
        self._lock = threading.Lock()
        self.alive = True
        self.env: dict[str, str] = {}  # the server's environment, its first message
        with self._lock:
            while not self.env and self._receive(None):
                pass

    def _receive(self, timeout: float | None) -> bool:
        """Take in what the server sent within ``timeout`` seconds; False once it has gone."""
        ready, _, _ = select.select([self._lines.sock], [], [], timeout)
        if not ready:
            return True
        messages = self._lines.read()
        if messages is None:
            self.alive = False
            return False
        for message in messages:
            if "exit" in message:
                self._exits[message["exit"][0]] = message["exit"][1]
            elif "pid" in message:
                self._pids.append(message["pid"])
            else:
                self.env = message["env"]
        return True

    def fork(self, argv: list[str], env: dict[str, str], cwd: str) -> int:
        """Fork a kernel; return its pid (OSError if the server has gone or not answered in
        :data:`ANSWER_SECONDS`: it is then not asked again)."""
        deadline = time.monotonic() + ANSWER_SECONDS
        with self._lock:
            self._pids.clear()
            _send(self._lines.sock, {"argv": argv, "env": env, "cwd": cwd})
            while not self._pids:
                if not self._receive(max(0.0, deadline - time.monotonic())):
                    raise OSError("the kernel server has stopped")
                if not self._pids and time.monotonic() >= deadline:
                    self.alive = False
                    raise OSError(f"the kernel server did not answer within {ANSWER_SECONDS} s")
            return self._pids[0]

    def exit_code(self, pid: int, timeout: float = 0.0) -> int | None:
        """Kernel ``pid``'s exit code (as :attr:`subprocess.Popen.returncode`), or None while it
        runs; wait up to ``timeout`` seconds for it to end."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while pid not in self._exits and self._receive(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    break
            if pid not in self._exits and not self.alive:
                return -signal.SIGKILL  # the server killed its kernels as it stopped
            return self._exits.get(pid)


_owned: list[subprocess.Popen] = []  # the server this process started, if it started one
_connection: list[KernelServer] = []  # this process's connection, once made
_connection_lock = threading.Lock()


def kernel_server(env: dict[str, str]) -> KernelServer | None:
    """This process's connection to a server: the one :data:`ADDRESS` names, else a new one
    started in ``env`` (and named in :data:`ADDRESS` for the processes started from here on).
    None where no server can be reached or started."""
    with _connection_lock:
        if not _connection:
            try:
                _connection.append(KernelServer(os.environ[ADDRESS]))
            except (KeyError, OSError):  # none named, or it has stopped
                try:
                    address = _start_server(env)
                    _connection.append(KernelServer(address))
                except OSError:
                    return None
                os.environ[ADDRESS] = address
        return _connection[0] if _connection[0].alive else None


def enabled(env: Mapping[str, str]) -> bool:
    """Whether kernels started in ``env`` may be forked at all (POSIX, and not opted out)."""
    return os.name == "posix" and env.get(OPT_OUT) != "0"


def forkable(cmd: list[str], env: dict[str, str]) -> bool:
    """Whether a kernel launched as ``cmd`` in ``env`` can be forked from this process's server."""
    if not enabled(env) or cmd[:3] != [sys.executable, "-m", "ipykernel_launcher"]:
        return False
    server = kernel_server(env)
    if server is None:
        return False
    keys = (set(env) | set(server.env)) - PER_LAUNCH
    return all(env.get(key) == server.env.get(key) for key in keys)


class ForkedKernel:
    """The part of :class:`subprocess.Popen` that :class:`LocalProvisioner` uses, for a forked kernel."""

    stdin = stdout = stderr = None

    def __init__(self, server: KernelServer, pid: int) -> None:
        self._server = server
        self.pid = pid

    def poll(self) -> int | None:
        return self._server.exit_code(self.pid)

    def wait(self, timeout: float | None = None) -> int:
        code = self._server.exit_code(self.pid, timeout=1e9 if timeout is None else timeout)
        if code is None:
            raise subprocess.TimeoutExpired(["forked kernel", str(self.pid)], timeout or 0)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, forking the kernel where :func:`forkable` allows."""

    forked = False  # whether this provisioner's last kernel was forked

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env = dict(kwargs.get("env") or os.environ)
        self.forked = forkable(cmd, env)
        if self.forked:
            env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher sets it
            cwd = str(kwargs.get("cwd") or os.getcwd())
            server = _connection[0]
            try:
                pid = server.fork(cmd[3:], env, cwd)
            except OSError as err:
                self.log.warning("starting the kernel as a new process: %s", err)
                self.forked = False
            else:
                self.process = ForkedKernel(server, pid)
                self.pid = self.pgid = pid  # it leads its own session
                self.cwd = cwd
                return self.connection_info
        return await super().launch_kernel(cmd, **kwargs)
