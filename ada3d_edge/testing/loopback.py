"""Loopback stream servers: ffmpeg serving a video over HTTP (or pushing RTSP to a relay) on 127.0.0.1.

Not part of the on-device runtime (it lives beside it, in ``ada3d_edge.testing``).

Used by `ada3d demo` to show the runtime on a real stream, and by the stream tests. Processes are
started with `subprocess.Popen` and stopped by their own PID only (`stop_process`).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

FFMPEG = shutil.which("ffmpeg")
RTSP_RELAY = shutil.which("rtsp-server-perl") or (
    "/usr/bin/rtsp-server-perl" if os.path.exists("/usr/bin/rtsp-server-perl") else None
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> bool:
    """True once a TCP socket listens on port ``port`` (read from /proc/net/tcp, without connecting:
    ``ffmpeg -listen 1`` serves exactly one client, so a probing connection would use it up)."""
    deadline = time.monotonic() + timeout
    needle = f":{port:04X} "
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            # columns: sl local_address rem_address st ...; st 0A = LISTEN
            if any(needle in ln.split()[1] + " " and ln.split()[3] == "0A" for ln in lines):
                return True
        time.sleep(0.05)
    return False


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """Terminate one process we started (by its PID), then kill it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _quiet(cmd: list) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _ffmpeg_live(clip: Path, *output: str) -> subprocess.Popen:
    """ffmpeg encoding ``clip`` looped, in real time, as low-latency H.264 to ``output``."""
    return _quiet([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                   "-i", str(clip), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                   "-g", "10", *output])


def start_http_server(clip: Path, port: int) -> subprocess.Popen:
    """ffmpeg serving ``clip`` looped, in real time, as MPEG-TS over HTTP on 127.0.0.1:port."""
    return _ffmpeg_live(clip, "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/live.ts")


def start_rtsp_relay(client_port: int, source_port: int, rtp_port: int) -> subprocess.Popen:
    """rtsp-server-perl: takes an RTSP push on ``source_port`` and serves clients on ``client_port``."""
    cmd = [RTSP_RELAY, "--clientport", str(client_port), "--serverport", str(source_port),
           "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
           "--rtp_start_port", str(rtp_port), "--loglevel", "1"]
    return _quiet(cmd)


def start_rtsp_push(clip: Path, source_port: int) -> subprocess.Popen:
    """ffmpeg pushing ``clip`` looped, in real time, to the relay (RTSP over UDP)."""
    return _ffmpeg_live(clip, "-f", "rtsp", "-rtsp_transport", "udp", f"rtsp://127.0.0.1:{source_port}/live")
