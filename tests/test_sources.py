"""Sources: SRC parsing, the clip ring buffer, the drop-oldest queue, the reader thread on files and dead URLs."""
from __future__ import annotations

import time

import numpy as np
import pytest

from ada3d_edge.runtime.sources import (ClipBuffer, DropOldestQueue, EndOfStream, SourceError,
                                        SourceReader, Window, check_source, gstreamer_available,
                                        open_capture, parse_source)
from stream_helpers import free_port, make_clip


def _frame(i: int) -> np.ndarray:
    return np.full((2, 2, 3), i, np.uint8)


def _drain(reader: SourceReader, timeout: float = 20.0) -> list:
    """Everything the reader put on its queue up to its EndOfStream (bounded in time)."""
    items, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = reader.queue.get_nowait()
        if item is None:
            time.sleep(0.01)
            continue
        items.append(item)
        if isinstance(item, EndOfStream):
            break
    reader.stop()
    reader.join(timeout=5)
    assert not reader.is_alive()
    return items


def test_clip_buffer_samples_at_stride_and_emits_every_hop():
    buf = ClipBuffer(num_frames=4, stride=2, hop=2)
    windows = []
    for i in range(20):
        frame = _frame(i) if buf.wants_next else None
        clip = buf.push(frame)
        if clip is not None:
            windows.append((i, clip[:, 0, 0, 0].tolist(), buf.last_new_frames))
    # sampled raw frames 0,2,4,...; first window when 4 are in, then every 2 sampled frames
    assert windows == [(6, [0, 2, 4, 6], 4), (10, [4, 6, 8, 10], 2),
                       (14, [8, 10, 12, 14], 2), (18, [12, 14, 16, 18], 2)]


def test_clip_buffer_default_hop_is_t_and_windows_are_copies():
    buf = ClipBuffer(num_frames=3)
    out = [buf.push(_frame(i)) for i in range(9)]
    clips = [c for c in out if c is not None]
    assert [c[:, 0, 0, 0].tolist() for c in clips] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    clips[0][:] = 99  # a window must not alias the ring buffer
    buf.reset()
    assert buf.push(_frame(1)) is None and buf.wants_next


def test_clip_buffer_rejects_bad_arguments():
    for kwargs in ({"num_frames": 0}, {"num_frames": 4, "stride": 0}, {"num_frames": 4, "hop": 0},
                   {"num_frames": 2.5}):
        with pytest.raises(ValueError, match="positive integer"):
            ClipBuffer(**kwargs)
    buf = ClipBuffer(num_frames=2)
    with pytest.raises(ValueError, match="wants_next"):
        buf.push(None)


def test_drop_oldest_queue_counts_drops_and_keeps_end_marker():
    q = DropOldestQueue(2)
    for i in range(5):
        q.put(Window("s", 0, np.zeros(1), 0.0, i, i, 1, 0.0, 0.0))
    q.put(EndOfStream("s", 0, "eof"), droppable=False)
    assert q.dropped == 3
    items = [q.get_nowait() for _ in range(3)]
    assert [w.frame_index for w in items[:2]] == [3, 4]  # the newest windows survive
    assert isinstance(items[2], EndOfStream) and q.get_nowait() is None
    with pytest.raises(ValueError, match="queue size"):
        DropOldestQueue(0)


def test_parse_source_kinds(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 4)
    assert parse_source("0").kind == "camera" and parse_source("0").target == 0
    assert parse_source(str(clip), 3).kind == "file" and parse_source(str(clip), 3).index == 3
    assert not parse_source(str(clip)).live and parse_source("1").live
    url = parse_source("rtsp://admin:secret@127.0.0.1:8554/cam")
    assert url.kind == "url" and "secret" not in url.name and "secret" in url.target
    assert parse_source("http://127.0.0.1:1/live.ts").kind == "url"
    gst = parse_source("videotestsrc ! videoconvert ! appsink")
    assert gst.kind == "gstreamer" and gst.live


def test_parse_source_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="not a camera index.*existing file"):
        parse_source(str(tmp_path / "nope.mp4"))
    with pytest.raises(SourceError, match="empty --source"):
        parse_source("  ")


def test_check_source_rejects_a_file_that_is_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(SourceError, match="cannot open video file"):
        check_source(parse_source(str(bad)))


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer; the error path is moot")
def test_gstreamer_without_support_is_a_clear_error():
    spec = parse_source("videotestsrc ! appsink")
    with pytest.raises(SourceError, match="no GStreamer support"):
        check_source(spec)
    with pytest.raises(SourceError, match="no GStreamer support"):
        open_capture(spec)


def test_reader_file_emits_windows_then_ends_cleanly(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 30, size=32)
    reader = SourceReader(parse_source(str(clip)), num_frames=4, stride=2, hop=2, queue_size=100,
                          resize=(16, 12))
    reader.start()
    items = _drain(reader)
    windows, end = items[:-1], items[-1]
    assert isinstance(end, EndOfStream) and end.reason == "eof" and end.error is None
    # 15 sampled frames (0,2,..,28): windows after 4, 6, ..., 14 sampled -> 6 windows
    assert len(windows) == 6 and reader.stats.windows == 6 and reader.stats.frames == 30
    assert [w.frame_index for w in windows] == [6, 10, 14, 18, 22, 26]
    assert [w.new_frames for w in windows] == [4, 2, 2, 2, 2, 2]
    w = windows[0]
    assert w.frames.shape == (4, 12, 16, 3) and w.frames.dtype == np.uint8
    assert w.fps == pytest.approx(12.5) and w.source == str(clip)
    # RGB order: the clip paints a red square on grey, so red must outweigh blue after BGR->RGB
    assert w.frames[..., 0].mean() > w.frames[..., 2].mean() + 5
    assert reader.stats.status == "ended" and reader.queue.dropped == 0


def test_reader_max_frames_stops_early(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 30)
    reader = SourceReader(parse_source(str(clip)), num_frames=2, max_frames=10, queue_size=50)
    reader.start()
    items = _drain(reader)
    assert items[-1].reason == "max_frames" and reader.stats.frames == 10 and len(items) == 6


@pytest.mark.parametrize("url, why", [
    ("rtsp://127.0.0.1:9/x", "connection refused by 127.0.0.1:9"),
    ("http://127.0.0.1:9/x", "connection refused by 127.0.0.1:9"),
    ("rtsp://camera/stream", "host 'camera' not found"),  # the README's example URL
    ("57", "no camera at index 57"),
])
def test_source_that_never_opened_fails_after_open_attempts(url, why):
    reader = SourceReader(parse_source(url), num_frames=4, max_reconnects=None, open_attempts=2,
                          reconnect_backoff=(0.05, 0.1), open_timeout_s=2, read_timeout_s=2)
    t0 = time.monotonic()
    reader.start()
    items = _drain(reader, timeout=20)
    assert time.monotonic() - t0 < 10  # bounded although reconnects are unbounded (None)
    assert len(items) == 1 and items[0].reason == "error"
    assert "never opened after 2 attempt(s) with a 2 s open timeout" in items[0].error
    assert why in items[0].error, items[0].error
    assert reader.stats.reconnect_attempts == 1 and reader.stats.reconnects == 0
    assert reader.stats.status == "error"


class _FakeCapture:
    """A capture that opens (or not) and delivers ``frames`` frames, then fails a read."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def isOpened(self) -> bool:
        return self.frames > 0

    def read(self):
        if self.frames <= 0:
            return False, None
        self.frames -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def grab(self) -> bool:
        return self.read()[0]

    def get(self, prop) -> float:
        return 25.0

    def release(self) -> None:
        pass


def _scripted(monkeypatch, frames_per_open):
    """open_capture returns captures delivering these frame counts in turn (then dead ones)."""
    import ada3d_edge.runtime.sources as sources

    script = iter(frames_per_open)
    monkeypatch.setattr(sources, "open_capture", lambda spec, *a: _FakeCapture(next(script, 0)))


def test_source_that_opened_once_reconnects_past_open_attempts(monkeypatch):
    _scripted(monkeypatch, [10, 0, 0, 0, 0, 0, 10])  # five failed reopens, then it is back
    reader = SourceReader(parse_source("rtsp://127.0.0.1:9/x"), num_frames=4, open_attempts=1,
                          reconnect_backoff=(0.001, 0.002), max_frames=20)
    reader.start()
    items = _drain(reader)
    assert items[-1].reason == "max_frames" and reader.stats.frames == 20
    assert reader.stats.reconnects == 1 and reader.stats.reconnect_attempts == 6


def test_source_that_opened_once_gives_up_after_max_reconnects(monkeypatch):
    _scripted(monkeypatch, [10])
    reader = SourceReader(parse_source("http://127.0.0.1:9/x"), num_frames=4, max_reconnects=2,
                          reconnect_backoff=(0.001, 0.002))
    reader.start()
    items = _drain(reader)
    assert items[-1].reason == "error" and reader.stats.status == "error"
    assert "gave up after 2 failed reconnect(s)" in items[-1].error
    assert "connection refused by 127.0.0.1:9" in items[-1].error
    assert reader.stats.reconnect_attempts == 2 and reader.stats.reconnects == 0


def test_reader_stop_interrupts_reconnect_backoff():
    url = f"http://127.0.0.1:{free_port()}/live.ts"
    reader = SourceReader(parse_source(url), num_frames=4, reconnect_backoff=(5.0, 5.0),
                          open_timeout_s=2, read_timeout_s=2)
    reader.start()
    deadline = time.monotonic() + 10
    while reader.stats.reconnect_attempts < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    reader.stop()
    reader.join(timeout=5)
    assert not reader.is_alive() and time.monotonic() - t0 < 3
    assert isinstance(reader.queue.get_nowait(), EndOfStream)


def test_cli_open_defaults_are_the_readers():
    from ada3d_edge.cli import main
    from ada3d_edge.runtime.sources import OPEN_ATTEMPTS, OPEN_TIMEOUT_S, SourceOptions

    defaults = {p.name: p.default for p in main.commands["run"].params}
    assert defaults["open_timeout"] == OPEN_TIMEOUT_S == SourceOptions().open_timeout_s
    assert defaults["open_attempts"] == OPEN_ATTEMPTS == SourceOptions().open_attempts
