import json
import os

import pytest

from cifarbench.record import atomic_write_text, final_status, read_record, write_record


def test_record_is_written_atomically_and_readable_by_others(tmp_path):
    path = write_record(tmp_path, {"schema_version": 1, "status": "running"})
    write_record(tmp_path, {"schema_version": 1, "status": "completed"})
    assert read_record(path)["status"] == "completed"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o444) == oct(0o444 & ~_umask())


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_text(path, json.dumps({"status": "running"}))

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_text(path, str(Unserialisable()))
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


@pytest.mark.parametrize("error, diverged, reached, status", [
    ("boom", False, True, "failed"), (None, True, False, "diverged"),
    (None, False, True, "completed"), (None, False, False, "not-reached"),
])
def test_status(error, diverged, reached, status):
    assert final_status(error, diverged, reached) == status


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
