"""List and classes files: parsing, multi-label, and errors that name the file, line and option."""
from __future__ import annotations

import os

import pytest

from ada3d_edge.data.lists import VideoRecord, is_multi_label, load_classes, load_list


def _write(path, text):
    path.write_text(text)
    return path


def test_single_label_list_with_comments(tmp_path):
    lst = _write(tmp_path / "train.txt", "# header\n\na/x.mp4 0\n  b/y.mp4 2  \n/abs/z.mp4 1\n")
    recs = load_list(lst, tmp_path, num_classes=3)
    assert recs == [VideoRecord(os.path.join(str(tmp_path), "a/x.mp4"), (0,)),
                    VideoRecord(os.path.join(str(tmp_path), "b/y.mp4"), (2,)),
                    VideoRecord("/abs/z.mp4", (1,))]
    assert recs[1].label == 2 and not is_multi_label(recs)


def test_multi_label(tmp_path):
    lst = _write(tmp_path / "l.txt", "a.mp4 1,3\nb.mp4 0\n")
    recs = load_list(lst, tmp_path, num_classes=4)
    assert recs[0].labels == (1, 3) and is_multi_label(recs)
    with pytest.raises(ValueError, match="multi-label"):
        _ = recs[0].label


@pytest.mark.parametrize("line, match", [
    ("c.mp4", "2 fields"), ("c.mp4 1 2", "2 fields"), ("c.mp4 cat", "not an integer"),
    ("c.mp4 1,,2", "not an integer"), ("c.mp4 -1", "out of range"), ("c.mp4 5", "out of range"),
    ("c.mp4 1,1", "repeated"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, match):
    lst = _write(tmp_path / "bad.txt", f"a.mp4 0\n# c\n{line}\n")
    with pytest.raises(ValueError, match=match) as info:
        load_list(lst, tmp_path, num_classes=3)
    assert "bad.txt:3" in str(info.value)


def test_missing_paths_name_the_option(tmp_path):
    lst = _write(tmp_path / "l.txt", "a.mp4 0\n")
    with pytest.raises(FileNotFoundError, match="list file .*nope.txt.* data.train_list"):
        load_list(tmp_path / "nope.txt", tmp_path, list_option="data.train_list")
    with pytest.raises(FileNotFoundError, match="data root .*absent.*set it with root"):
        load_list(lst, tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="classes file .*cls.txt.*classes_file"):
        load_classes(tmp_path / "cls.txt")


def test_empty_list_raises(tmp_path):
    with pytest.raises(ValueError, match="no videos"):
        load_list(_write(tmp_path / "e.txt", "# nothing\n\n"), tmp_path)


def test_classes_file(tmp_path):
    assert load_classes(_write(tmp_path / "c.txt", "walk\n\nrun\n jump \n")) == ["walk", "run", "jump"]
    with pytest.raises(ValueError, match="c2.txt:3.*repeats line 1"):
        load_classes(_write(tmp_path / "c2.txt", "walk\nrun\nwalk\n"))
    with pytest.raises(ValueError, match="no classes"):
        load_classes(_write(tmp_path / "c3.txt", "\n"))
