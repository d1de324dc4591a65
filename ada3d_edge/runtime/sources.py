"""Stream sources: parse a SRC, read it on its own thread into a clip buffer, emit windows.

A source is a camera index (``0``), a video file, an ``rtsp://`` / ``http(s)://`` URL, or a GStreamer
pipeline (any string containing ``!``). Each ``SourceReader`` thread keeps every ``stride``-th frame
in a ``ClipBuffer`` of ``T`` frames and, once it is full, emits a ``Window`` every ``hop`` sampled
frames into a bounded ``DropOldestQueue``: when inference falls behind the oldest window is dropped
and counted. A file ends with ``EndOfStream``. A live source that never delivered a frame fails
after ``open_attempts`` tries (each bounded by ``open_timeout_s``), saying why (``diagnose``); one
that delivered frames once is reopened with exponential backoff, forever unless ``max_reconnects``.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

log = logging.getLogger(__name__)
URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}
OPEN_TIMEOUT_S = 10.0  # default bound on one open of a network source (FFmpeg's open timeout)
OPEN_ATTEMPTS = 3  # default tries before a source that never delivered a frame fails


def quiet_video_logs() -> None:
    """Silence OpenCV's and FFmpeg's own console noise (our summary says what failed and why).

    ``OPENCV_FFMPEG_LOGLEVEL`` is read when FFmpeg is first used in the process, so call this
    before opening any capture; a value the user set is kept.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if os.environ["OPENCV_LOG_LEVEL"] == "ERROR":
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class SourceError(ValueError):
    """A source that cannot be parsed or opened; the message says what to do."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed SRC. ``kind`` is one of camera, file, url, gstreamer; ``target`` is what cv2 opens."""

    kind: str
    target: int | str
    name: str
    index: int = 0

    @property
    def live(self) -> bool:
        """Live sources are reopened when they fail; files end at EOF."""
        return self.kind != "file"


@dataclass(frozen=True)
class Window:
    """``frames`` is a copy of the T sampled frames, ``(T, H, W, 3) uint8 RGB``, oldest first."""

    source: str
    source_index: int
    frames: np.ndarray
    timestamp: float  # wall clock (time.time()) when the newest frame was read
    frame_index: int  # raw index of the newest frame since the source was started
    seq: int  # window number within the source
    new_frames: int  # sampled frames not in the previous window (T for the first one)
    fps: float  # sampled-frame rate (source fps / stride), 0.0 when unknown
    emitted_at: float  # time.perf_counter() at emission, for latency
    frame_ids: tuple[int, ...] = ()  # id of each sampled frame, unique within the source (ClipBuffer)
    generation: int = 0  # the ring buffer's reset count: windows of one generation share no gap


@dataclass(frozen=True)
class EndOfStream:
    """Put last on a source's queue; ``reason`` is eof, max_frames, stopped or error."""

    source: str
    source_index: int
    reason: str
    error: str | None = None


def _redact(url: str) -> str:
    """Hide a password in a URL so it never lands in logs or JSON lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def gstreamer_available() -> bool:
    """True when this OpenCV build was compiled with GStreamer."""
    return re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None


def parse_source(src: str | int, index: int = 0) -> SourceSpec:
    """Parse a SRC string into a ``SourceSpec`` (raises ``SourceError`` with the valid forms)."""
    text = str(src).strip()
    if not text:
        raise SourceError("empty --source; give a camera index (0), a video file, an rtsp:// or "
                          "http(s):// URL, or a GStreamer pipeline containing '!'")
    if text.isdigit():
        return SourceSpec("camera", int(text), f"camera:{text}", index)
    if "!" in text:
        return SourceSpec("gstreamer", text, f"gst:{index}", index)
    scheme = urlsplit(text).scheme.lower()
    if scheme in URL_SCHEMES:
        return SourceSpec("url", text, _redact(text), index)
    if scheme == "file":
        text = urlsplit(text).path
    if not os.path.isfile(text):
        raise SourceError(f"source {text!r} is not a camera index, a URL ({', '.join(URL_SCHEMES)}), "
                          "a GStreamer pipeline (contains '!') or an existing file; check the path")
    return SourceSpec("file", text, text, index)


def open_capture(spec: SourceSpec, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0) -> cv2.VideoCapture:
    """Open ``spec`` with OpenCV; returns the capture (check ``isOpened()``)."""
    if spec.kind == "camera":
        return cv2.VideoCapture(int(spec.target))
    if spec.kind == "gstreamer":
        if not gstreamer_available():
            raise SourceError(f"source {spec.target!r} is a GStreamer pipeline but this OpenCV build "
                              "has no GStreamer support (cv2.getBuildInformation()); install an "
                              "OpenCV built with GStreamer (e.g. JetPack's) or pass a URL/file/camera")
        return cv2.VideoCapture(str(spec.target), cv2.CAP_GSTREAMER)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
    return cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, params)


def diagnose(spec: SourceSpec, timeout_s: float = 2.0) -> str:
    """Why ``spec`` probably did not open, in words (OpenCV only says that it did not)."""
    if spec.kind == "camera":
        dev = f"/dev/video{spec.target}"
        if os.path.isdir("/dev") and not os.path.exists(dev):
            return f"no camera at index {spec.target} ({dev} does not exist)"
        return f"camera {spec.target} did not open (busy, no permission, or not a capture device)"
    if spec.kind != "url":
        return f"OpenCV could not open {spec.name}"
    parts = urlsplit(str(spec.target))
    scheme = parts.scheme.lower()
    host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(scheme)
    if not host or port is None or scheme in ("udp", "tcp") and parts.port is None:
        return f"OpenCV/FFmpeg could not open {spec.name}"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return f"host {host!r} not found (check the address in the URL)"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (no server listening there)"
    except OSError as exc:
        return f"no answer from {host}:{port} within {timeout_s:g} s ({exc.__class__.__name__})"
    hint = ("; an RTSP server that offers only UDP needs OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;udp"
            if scheme.startswith("rtsp") else "")
    return (f"{host}:{port} accepts connections but no video stream opened (check the path and "
            f"credentials{hint})")


def check_source(spec: SourceSpec) -> None:
    """Fail fast on what can never work: a pipeline without GStreamer, a file OpenCV cannot decode."""
    if spec.kind == "gstreamer" and not gstreamer_available():
        open_capture(spec)  # raises the SourceError
    if spec.kind == "file":
        cap = open_capture(spec)
        try:
            if not cap.isOpened():
                raise SourceError(f"OpenCV cannot open video file {spec.target!r} (not a video, or "
                                  "a codec this OpenCV/FFmpeg build lacks)")
        finally:
            cap.release()


class ClipBuffer:
    """Ring buffer of the last ``num_frames`` sampled frames (every ``stride``-th raw frame).

    ``push`` is called once per raw frame and returns a stacked copy ``(T, H, W, 3)`` when a window is
    due: first when the buffer fills, then every ``hop`` sampled frames. ``frame_ids`` are the ids of
    the buffered frames (a counter over every sampled frame, never reused, not even after ``reset``),
    ``generation`` counts resets: what the selection network's feature cache is keyed by.
    """

    def __init__(self, num_frames: int, stride: int = 1, hop: int | None = None) -> None:
        for name, value in (("num_frames", num_frames), ("stride", stride), ("hop", hop)):
            if value is None and name == "hop":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_frames, self.stride, self.hop = num_frames, stride, hop or num_frames
        self._frames: deque[np.ndarray] = deque(maxlen=num_frames)
        self._ids: deque[int] = deque(maxlen=num_frames)
        self._next_id = 0
        self.generation = -1
        self.reset()

    @property
    def frame_ids(self) -> tuple[int, ...]:
        """Ids of the buffered frames, oldest first (those of the window ``push`` just returned)."""
        return tuple(self._ids)

    def reset(self) -> None:
        """Forget buffered frames (after a reconnect a window must not span the gap)."""
        self._frames.clear()
        self._ids.clear()
        self.generation += 1
        self._raw = 0
        self._since_emit = 0
        self._emitted = False
        self.last_new_frames = 0

    @property
    def wants_next(self) -> bool:
        """Whether the next raw frame will be sampled (callers may skip decoding it otherwise)."""
        return self._raw % self.stride == 0

    def push(self, frame: np.ndarray | None) -> np.ndarray | None:
        """Offer one raw frame (``None`` is fine when ``wants_next`` is False); maybe return a window."""
        sampled = self.wants_next
        self._raw += 1
        if not sampled:
            return None
        if frame is None:
            raise ValueError("ClipBuffer.push got None for a frame it samples (check wants_next)")
        self._frames.append(frame)
        self._ids.append(self._next_id)
        self._next_id += 1
        self._since_emit += 1
        if len(self._frames) < self.num_frames:
            return None
        if self._emitted and self._since_emit < self.hop:
            return None
        self.last_new_frames = self.num_frames if not self._emitted else self._since_emit
        self._emitted, self._since_emit = True, 0
        return np.stack(self._frames)


class DropOldestQueue:
    """Bounded FIFO: a put on a full queue drops the oldest item and counts it in ``dropped``.

    ``notify`` (shared by all sources) is set on every put so one consumer can wait on many queues.
    """

    def __init__(self, maxsize: int, notify: threading.Event | None = None) -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"queue size must be a positive integer, got {maxsize!r}")
        self.maxsize, self.dropped = maxsize, 0
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._notify = notify or threading.Event()

    def put(self, item: Any, droppable: bool = True) -> None:
        """Append ``item``; end markers (``droppable=False``) never count against the bound."""
        with self._lock:
            if droppable:
                full = sum(1 for x in self._items if isinstance(x, Window)) >= self.maxsize
                if full:
                    for i, old in enumerate(self._items):
                        if isinstance(old, Window):
                            del self._items[i]
                            self.dropped += 1
                            break
            self._items.append(item)
        self._notify.set()

    def get_nowait(self) -> Any | None:
        """The oldest item, or None when empty."""
        with self._lock:
            return self._items.popleft() if self._items else None

    def pending_windows(self) -> int:
        """Windows still queued (not dropped, not yet consumed)."""
        with self._lock:
            return sum(1 for x in self._items if isinstance(x, Window))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True)
class SourceOptions:
    """Per-source reading options (the keyword arguments of ``SourceReader`` they name).

    ``max_reconnects``: consecutive failed reopens of a source that delivered frames (None: never
    give up). ``open_attempts``: tries before a source that never delivered a frame fails (None: no
    bound), each bounded by ``open_timeout_s``. ``realtime`` (None: live sources yes, files no):
    drop the oldest window when inference falls behind, instead of waiting.
    """

    max_reconnects: int | None = None
    open_attempts: int | None = OPEN_ATTEMPTS
    open_timeout_s: float = OPEN_TIMEOUT_S
    read_timeout_s: float = 10.0
    reconnect_backoff: tuple[float, float] = (0.5, 8.0)
    resize: tuple[int, int] | None = None
    max_frames: int | None = None
    realtime: bool | None = None


@dataclass
class SourceStats:
    """Counters a reader updates; read by the scheduler for the summary."""

    frames: int = 0
    windows: int = 0
    reconnects: int = 0  # successful reopens after a failure or a stall
    reconnect_attempts: int = 0  # every reopen tried
    status: str = "starting"  # starting, running, reconnecting, ended, error
    error: str | None = None


class SourceReader(threading.Thread):
    """Reads one source on its own thread; windows and a final ``EndOfStream`` go to ``self.queue``.

    Args:
        spec: the parsed source.
        num_frames, stride, hop: clip length T, frame sampling stride, sampled frames between windows.
        queue_size: windows kept before the oldest is dropped.
        max_reconnects: live sources that delivered frames once: consecutive failed reopens before
            giving up (None: never give up).
        open_attempts: tries to open a live source that has not delivered a frame yet before it
            fails (each try bounded by ``open_timeout_s``; None: no bound, as for a reopen).
        reconnect_backoff: (first, max) seconds between reopens, doubling after each failure.
        max_frames: stop after this many raw frames (tests); resize: (width, height) of kept frames.
        realtime: drop the oldest window when the queue is full (the default for live sources); when
            False (the default for files) the reader waits for room instead, so every window of a
            file is classified.
        frame_sink: called with ``(source index, frame BGR, source fps)`` for every raw frame (the
            overlay video); frames are then all decoded, not only the sampled ones.
    """

    def __init__(self, spec: SourceSpec, *, num_frames: int, stride: int = 1, hop: int | None = None,
                 queue_size: int = 4, notify: threading.Event | None = None,
                 max_reconnects: int | None = None, reconnect_backoff: tuple[float, float] = (0.5, 8.0),
                 max_frames: int | None = None, resize: tuple[int, int] | None = None,
                 open_timeout_s: float = OPEN_TIMEOUT_S, read_timeout_s: float = 10.0,
                 open_attempts: int | None = OPEN_ATTEMPTS, realtime: bool | None = None,
                 frame_sink: Callable[[int, np.ndarray, float], None] | None = None) -> None:
        super().__init__(name=f"ada3d-source-{spec.index}", daemon=True)
        self.realtime = spec.live if realtime is None else bool(realtime)
        self.spec, self.max_reconnects, self.backoff = spec, max_reconnects, reconnect_backoff
        self.max_frames, self.resize, self.open_attempts = max_frames, resize, open_attempts
        self.frame_sink = frame_sink
        self.timeouts = (open_timeout_s, read_timeout_s)
        self.buffer = ClipBuffer(num_frames, stride, hop)
        self.queue = DropOldestQueue(queue_size, notify)
        self.stats = SourceStats()
        self.stop_event = threading.Event()

    def stop(self) -> None:
        """Ask the thread to finish (it ends after at most one read timeout)."""
        self.stop_event.set()

    def run(self) -> None:
        reason, error = "stopped", None
        try:
            reason = self._loop()
        except Exception as exc:  # a reader must always leave its end marker behind
            reason, error = "error", f"{type(exc).__name__}: {exc}"
        self.stats.status = "error" if error or reason == "error" else "ended"
        self.stats.error = self.stats.error or error
        self.queue.put(EndOfStream(self.spec.name, self.spec.index, reason, self.stats.error),
                       droppable=False)

    def _loop(self) -> str:
        failures = 0  # consecutive opens (or reopens) that delivered no frame
        while not self.stop_event.is_set():
            cap = open_capture(self.spec, *self.timeouts)
            got = 0
            try:
                if cap.isOpened():
                    if self.stats.status in ("reconnecting",) and self.stats.frames:
                        self.stats.reconnects += 1
                    self.stats.status = "running"
                    got, end = self._read(cap)
                    if end is not None:
                        return end
                    if got:
                        failures, self.stats.error = 0, None
            finally:
                cap.release()
            if not self.spec.live:
                if self.stats.frames == 0:
                    self.stats.error = f"no frames decoded from {self.spec.name}"
                    return "error"
                return "eof"
            if not got:
                failures += 1
            never_opened = self.stats.frames == 0
            limit = self.open_attempts if never_opened else self.max_reconnects
            if never_opened and limit is not None and failures >= limit:
                self.stats.error = (f"never opened after {failures} attempt(s) with a "
                                    f"{self.timeouts[0]:g} s open timeout: {diagnose(self.spec)}")
                return "error"
            if not never_opened and limit is not None and failures >= limit:
                self.stats.error = (f"gave up after {failures} failed reconnect(s) "
                                    f"(last: {diagnose(self.spec)})")
                return "error"
            self.stats.error = "stream stopped" if got else f"cannot open {self.spec.name}"
            delay = min(self.backoff[0] * 2 ** max(failures - 1, 0), self.backoff[1])
            log.warning("%s: %s; reconnecting in %.1f s (attempt %d%s)", self.spec.name,
                        self.stats.error, delay, failures,
                        "" if limit is None else f" of {limit}")
            self.stats.status = "reconnecting"
            self.stats.reconnect_attempts += 1
            self.buffer.reset()
            self.stop_event.wait(delay)
        return "stopped"

    def _read(self, cap: cv2.VideoCapture) -> tuple[int, str | None]:
        """Read until the stream fails (returns frames read, None) or must end (returns n, reason)."""
        raw_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        raw_fps = raw_fps if 0 < raw_fps < 1000 else 0.0
        fps = raw_fps / self.buffer.stride
        got = 0
        while not self.stop_event.is_set():
            if self.max_frames is not None and self.stats.frames >= self.max_frames:
                return got, "max_frames"
            sampled = self.buffer.wants_next
            if sampled or self.frame_sink is not None:
                ok, frame = cap.read()
            else:
                ok, frame = cap.grab(), None
            if not ok:
                return got, None
            got += 1
            self.stats.frames += 1
            if frame is not None and self.resize is not None:
                frame = cv2.resize(frame, self.resize, interpolation=cv2.INTER_AREA)
            if self.frame_sink is not None:
                self.frame_sink(self.spec.index, frame, raw_fps)
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if sampled else None
            clip = self.buffer.push(frame)
            if clip is not None:
                while not self.realtime and self.queue.pending_windows() >= self.queue.maxsize:
                    if self.stop_event.wait(0.005):  # back-pressure: a file waits, it never drops
                        return got, "stopped"
                self.queue.put(Window(self.spec.name, self.spec.index, clip, time.time(),
                                      self.stats.frames - 1, self.stats.windows,
                                      self.buffer.last_new_frames, fps, time.perf_counter(),
                                      self.buffer.frame_ids, self.buffer.generation))
                self.stats.windows += 1
        return got, "stopped"
