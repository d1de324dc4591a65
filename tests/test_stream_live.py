"""Real loopback streams: ffmpeg serves a tiny clip over HTTP (and RTSP through rtsp-server-perl);
the test kills the server mid-run, restarts it on the same port, and checks the runtime reconnected
and kept producing windows. Every server is ours, stopped by PID in teardown.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from ada3d_edge.runtime.app import RunOptions, run_streams
from ada3d_edge.runtime.sources import SourceOptions
from stream_helpers import (FFMPEG, RTSP_RELAY, StandInPredictor, free_port, make_clip,
                            start_http_server, start_rtsp_push, start_rtsp_relay, stop_process,
                            wait_port)

pytestmark = [pytest.mark.stream,
              pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed (apt-get install ffmpeg)")]

SOURCE_OPTIONS = SourceOptions(max_reconnects=30, reconnect_backoff=(0.2, 1.0), open_timeout_s=3.0,
                               read_timeout_s=2.0)


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


class _Run:
    """run_streams on a background thread, stoppable, with its summary kept."""

    def __init__(self, url: str) -> None:
        self.pred = StandInPredictor(num_frames=4, stride=2)
        self.stop = threading.Event()
        self.summary: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, args=(url,), daemon=True)
        self.thread.start()

    def _main(self, url: str) -> None:
        try:
            self.summary = run_streams(None, [url], RunOptions(hop=2, jsonl=os.devnull, duration=40,
                                                              source=SOURCE_OPTIONS),
                                       predictor=self.pred, stop_event=self.stop).to_json()
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def windows_after(self, t: float) -> int:
        return sum(1 for x in list(self.pred.times) if x > t)

    def finish(self) -> dict:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "runtime did not stop within 15 s"
        if self.error is not None:
            raise self.error
        return self.summary


def _kill_restart_check(run: _Run, kill: Callable[[], None], restart: Callable[[], None]) -> dict:
    assert _wait(lambda: len(run.pred.times) >= 3, 15), "no windows from the stream within 15 s"
    kill()
    time.sleep(1.0)  # the runtime sees the stream stop and starts reconnecting
    restart()
    t_restart = time.monotonic()
    assert _wait(lambda: run.windows_after(t_restart) >= 3, 15), "no windows after the restart"
    summary = run.finish()
    src = summary["sources"][0]
    assert src["reconnects"] >= 1 and src["reconnect_attempts"] >= 1, src
    assert summary["windows"] >= 6 and src["status"] in ("ended", "running")
    return summary


@pytest.fixture
def clip(tmp_path) -> Path:
    return make_clip(tmp_path / "clip.mp4", num_frames=50, size=64)


def test_http_stream_reconnects_after_server_restart(clip):
    port = free_port()
    procs = [start_http_server(clip, port)]
    run = None
    try:
        assert wait_port(port, 10), "ffmpeg did not start listening"
        run = _Run(f"http://127.0.0.1:{port}/live.ts")

        def kill() -> None:
            procs[0].kill()  # a crash, not a clean shutdown; our PID only
            procs[0].wait(timeout=5)

        def restart() -> None:
            procs.append(start_http_server(clip, port))
            assert wait_port(port, 10), "ffmpeg did not listen again on the same port"

        _kill_restart_check(run, kill, restart)
    finally:
        if run is not None:
            run.stop.set()
            run.thread.join(timeout=15)
        for p in procs:
            stop_process(p)


@pytest.mark.skipif(RTSP_RELAY is None, reason="rtsp-server-perl not installed "
                                              "(apt-get install rtsp-server-perl)")
def test_rtsp_stream_reconnects_after_server_restart(clip, monkeypatch):
    # The relay serves RTP over UDP only; OpenCV asks for TCP unless told otherwise.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp")
    client_port, source_port = free_port(), free_port()
    rtp_port = 20000 + 2 * (os.getpid() % 10000)
    procs = {"relay": start_rtsp_relay(client_port, source_port, rtp_port)}
    run = None
    try:
        if not (wait_port(client_port, 10) and wait_port(source_port, 10)):
            pytest.skip("rtsp-server-perl did not start listening")
        procs["push"] = start_rtsp_push(clip, source_port)
        time.sleep(1.0)
        if procs["push"].poll() is not None:
            pytest.skip("ffmpeg could not push to the rtsp-server-perl relay")
        run = _Run(f"rtsp://127.0.0.1:{client_port}/live")

        def kill() -> None:  # the whole server side goes away: pusher and relay
            for name in ("push", "relay"):
                procs[name].kill()
                procs[name].wait(timeout=5)

        def restart() -> None:
            procs["relay"] = start_rtsp_relay(client_port, source_port, rtp_port)
            assert wait_port(client_port, 10) and wait_port(source_port, 10), "relay did not restart"
            procs["push"] = start_rtsp_push(clip, source_port)

        _kill_restart_check(run, kill, restart)
    finally:
        if run is not None:
            run.stop.set()
            run.thread.join(timeout=15)
        for p in procs.values():
            stop_process(p)
