"""The one atomic writer: a failed write leaves the old file and no temporary; a finished one replaces it whole."""

import json

import pytest

from clapforge.atomic import atomic_path, atomic_write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"clips": 1})
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_text('{"clips": 2, "half')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"clips": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_finished_write_replaces_the_file(tmp_path):
    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"clips": 1})
    atomic_write_json(target, {"clips": 2, "name": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"clips": 2, "name": "é"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
