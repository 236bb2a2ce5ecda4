"""How every chapter run talks to its kernel: no message goes unnoticed for more than a second,
no output goes missing without an error, and no TCP port is left to race for.

zmq.asyncio learns that a message has arrived through the socket's ``ZMQ_FD``, which is
edge-triggered: when the edge is consumed elsewhere (pyzmq#2173), a wait on the socket sleeps until
its timeout although the message is already there. nbclient waits for a cell's reply with the
cell's whole time limit, so a chapter run then stalls for that long with its kernel idle, and goes
on as if nothing happened when the limit expires and the last check finds the reply (under load:
a 15 s primer run took 216 s with a 200 s limit; a test run on CI took 30 minutes). A wait in
slices of at most :data:`SLICE` seconds bounds the stall to one slice: every new wait looks at
the socket before it sleeps. nbclient also stops waiting for a cell's outputs 4 s after its reply
and drops the rest with a warning; :data:`CLIENT_OPTIONS` waits :data:`OUTPUT_SECONDS` and then
fails the run. It also joins a cell's consecutive prints into one output
(:func:`join_adjacent_streams`), however the kernel cut them into messages.

    papermill.execute_notebook(..., **CLIENT_OPTIONS)
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type, default

__all__ = ["SLICE", "KERNEL_MANAGER", "OUTPUT_SECONDS", "CLIENT_OPTIONS", "SlicedChannel", "SlicedKernelClient",
           "SlicedKernelManager", "join_adjacent_streams", "unix_socket_prefix"]

SLICE = 1.0  # seconds: the longest a message can wait unnoticed
KERNEL_MANAGER = "qfail.site.kernel.SlicedKernelManager"  # the name nbclient and jupyter-cache take
OUTPUT_SECONDS = 30  # how long a cell's outputs may trail its reply before the run fails


def join_adjacent_streams(cell: dict[str, Any], **_: Any) -> None:
    """Join each run of a cell's consecutive outputs on the same stream into one output.

    The kernel sends what a cell prints in pieces, cut wherever its flush timer fires, so one
    ``print`` could come out as one block on one build and two on the next (Hu's "lowest shifted
    rate" line did). Joined, the page is the same on every build; nothing moves past a table or
    figure (nbclient's own ``coalesce_streams`` gathers a stream's every piece into its first).
    """
    joined: list[Any] = []
    for output in cell.get("outputs", []):
        previous = joined[-1] if joined else None
        if (output.get("output_type") == "stream" and previous is not None
                and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
            previous["text"] += output["text"]
        else:
            joined.append(output)
    if "outputs" in cell:
        cell["outputs"] = joined


# what every chapter run passes to nbclient (through papermill or jupyter-cache)
CLIENT_OPTIONS = {"kernel_manager_class": KERNEL_MANAGER, "iopub_timeout": OUTPUT_SECONDS,
                  "raise_on_iopub_timeout": True, "on_cell_executed": join_adjacent_streams}


class SlicedChannel(AsyncZMQSocketChannel):
    """A channel whose ``get_msg`` waits at most :data:`SLICE` seconds at a time."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=SLICE if left is None else min(SLICE, left))
            except Empty:
                if left is not None and left <= SLICE:
                    raise


class SlicedKernelClient(AsyncKernelClient):
    shell_channel_class = Type(SlicedChannel)
    iopub_channel_class = Type(SlicedChannel)
    stdin_channel_class = Type(SlicedChannel)
    control_channel_class = Type(SlicedChannel)


class SlicedKernelManager(AsyncKernelManager):
    """An asynchronous kernel manager with :class:`SlicedKernelClient` clients and, on POSIX,
    Unix sockets instead of TCP ports: a TCP port is chosen free here and bound by the kernel a
    moment later, and any connection made in between (a browser's, Ray's) can take it."""

    client_class = DottedObjectName("qfail.site.kernel.SlicedKernelClient")
    client_factory = Type(klass=SlicedKernelClient)  # what ``client()`` builds (not derived from client_class)

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"

    def _ip_default(self) -> str:
        return unix_socket_prefix() if self.transport == "ipc" else super()._ip_default()

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        """Start kernels through :class:`~qfail.site.warm_start.ForkProvisioner` (it forks the
        kernel where it can, and launches it as jupyter_client does where not)."""
        if self.provisioner is None and not (self.kernel_spec.metadata or {}).get("kernel_provisioner"):
            from qfail.site.warm_start import ForkProvisioner

            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = ForkProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)


def unix_socket_prefix() -> str:
    """A fresh absolute path prefix for a kernel's Unix sockets (``<prefix>-1`` ...; a socket's
    path must stay under 108 bytes, so not under pytest's or a build's deep folders)."""
    return os.path.join(tempfile.gettempdir(), f"qfail-kernel-{uuid.uuid4().hex[:12]}")
