"""The chapter runs' kernel client notices a message whose wake-up something else consumed."""
from __future__ import annotations

import asyncio
import glob
import os
import time

import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from qfail.site import kernel, runner


async def _first_message(channel_class: type, wait: float) -> dict:
    """Send one message to a waiting channel, consume its socket's wake-up the way pyzmq#2173
    describes (``ZMQ_EVENTS`` read behind the asyncio socket's back), and wait ``wait`` seconds."""
    session = Session()
    receiver = zmq.asyncio.Context.instance().socket(zmq.PAIR)
    sender = zmq.Context.instance().socket(zmq.PAIR)
    port = receiver.bind_to_random_port("tcp://127.0.0.1")
    sender.connect(f"tcp://127.0.0.1:{port}")
    try:
        channel = channel_class(receiver, session)
        task = asyncio.ensure_future(channel.get_msg(timeout=60))
        await asyncio.sleep(0.2)  # the wait is registered and asleep on the socket's FD
        session.send(sender, "probe", {"n": 1})
        deadline = time.monotonic() + 10
        # the message arrives while the event loop does not run, and the edge is spent here
        while not receiver._shadow_sock.get(zmq.EVENTS) & zmq.POLLIN:
            assert time.monotonic() < deadline, "the probe never arrived"
            time.sleep(0.01)  # noqa: ASYNC251 - on purpose: the event loop must not run
        return await asyncio.wait_for(task, wait)
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)


def test_a_plain_channel_sleeps_through_the_message():
    """The failure the sliced channel exists for: without it the wait outlasts the message."""
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(_first_message(AsyncZMQSocketChannel, wait=1.0))


def test_the_sliced_channel_notices_it_within_a_slice(monkeypatch):
    monkeypatch.setattr(kernel, "SLICE", 0.1)
    msg = asyncio.run(_first_message(kernel.SlicedChannel, wait=1.0))
    assert msg["msg_type"] == "probe" and msg["content"] == {"n": 1}


def test_chapter_runs_use_the_sliced_client_over_unix_sockets(tmp_path, toy_chapter, monkeypatch):
    assert isinstance(kernel.SlicedKernelManager().client(), kernel.SlicedKernelClient)
    waits, prefixes = [], []
    plain_get, plain_ip = kernel.SlicedChannel.get_msg, kernel.SlicedKernelManager._ip_default

    async def counted(self, timeout=None):
        waits.append(timeout)
        return await plain_get(self, timeout)

    def recorded(self):
        prefixes.append(plain_ip(self))
        return prefixes[-1]

    monkeypatch.setattr(kernel.SlicedChannel, "get_msg", counted)
    monkeypatch.setattr(kernel.SlicedKernelManager, "_ip_default", recorded)
    nbs = toy_chapter("tiny", "seed: int = 0  # {≥ 0} seed", "print(seed)")
    runner.run_chapter("tiny", {}, tmp_path / "out", notebook_dir=nbs, static_widgets=False)
    assert len(waits) > 3  # kernel_info, then every cell's reply and output
    if os.name == "posix":  # no TCP port to race for; the socket files are gone afterwards
        assert len(prefixes) == 1 and os.path.isabs(prefixes[0]) and len(prefixes[0]) + 3 < 108
        assert not glob.glob(prefixes[0] + "-*")


PIECES = """
import sys
from IPython.display import display

for word in ("one", "two", "three"):
    print(word, end=" ")
    sys.stdout.flush()  # each piece its own message, as the kernel's flush timer may cut them
print()
display("a table")
print("after", end=" ")
sys.stdout.flush()
print("it")
"""


def test_what_a_cell_prints_between_displays_is_one_output(tmp_path, toy_chapter):
    """However the kernel cut the prints into messages, the saved cell holds one stream output per
    run of prints, in place: a page reads the same on every build."""
    import nbformat

    nbs = toy_chapter("pieces", "seed: int = 0  # {≥ 0} seed", PIECES)
    path = runner.run_chapter("pieces", {}, tmp_path / "out", notebook_dir=nbs, static_widgets=False)
    outputs = nbformat.read(path, as_version=4).cells[-1].outputs
    assert [(o.output_type, o.get("text")) for o in outputs] == [
        ("stream", "one two three \n"), ("display_data", None), ("stream", "after it\n")]
