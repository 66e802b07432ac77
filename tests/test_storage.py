"""Storage: local paths and URIs through one object, its options never shown; writes whole or not at all."""

import os
import subprocess
import sys
import time

import pytest
import requests

from conftest import REPO, link_lifetime
from nst_core import storage
from nst_core.storage import Storage, join_uri


def test_storage_writes_lists_and_signs_local_files(tmp_path):
    local = Storage()
    folder = str(tmp_path / "results")
    assert local.list(folder, "part-*.parquet") == []  # a missing folder lists nothing
    for name in ("part-b.parquet", "part-a.parquet", "other.txt"):
        local.write_atomic(join_uri(folder, name), b"x")
    assert local.list(folder, "part-*.parquet") == [
        join_uri(folder, "part-a.parquet"),
        join_uri(folder, "part-b.parquet"),
    ]
    assert local.exists(join_uri(folder, "other.txt")) and not local.exists(join_uri(folder, "missing"))
    assert local.sign(join_uri(folder, "other.txt")) == (tmp_path / "results" / "other.txt").as_uri()
    assert join_uri("s3://bucket/prefix/", "a/../b.png") == "s3://bucket/prefix/b.png"


def test_a_storage_shows_its_options_names_not_their_values():
    shown = repr(Storage({"endpoint_url": "http://secret-host:9000", "profile": "night"}))
    assert "secret-host" not in shown and "night" not in shown and "endpoint_url" in shown


def test_local_path_is_the_path_on_this_disk_and_none_for_object_storage(tmp_path):
    assert Storage().local_path(str(tmp_path / "a.png")) == str(tmp_path / "a.png")
    assert Storage().local_path((tmp_path / "a.png").as_uri()) == str(tmp_path / "a.png")
    assert Storage().local_path("s3://bucket/a.png") is None


def test_a_block_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.npz"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with Storage().open_atomic(str(target)) as handle:
            handle.write(b"half of it")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"the previous checkpoint"
    assert os.listdir(tmp_path) == ["a.npz"]


def test_a_write_over_a_link_replaces_the_link_not_the_file_it_leads_to(tmp_path):
    """An output path that is a symbolic link to a file outside the output root (OUT/a.png -> /etc/x)."""
    (tmp_path / "out").mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not yours")
    (tmp_path / "out" / "a.png").symlink_to(outside)
    Storage().write_atomic(str(tmp_path / "out" / "a.png"), b"the output")
    assert outside.read_bytes() == b"not yours"
    assert not (tmp_path / "out" / "a.png").is_symlink() and (tmp_path / "out" / "a.png").read_bytes() == b"the output"


def test_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    """A real writer held mid-write (NST_FAULT_WRITE_DELAY): its temporary is kept while it lives,
    removed once it is SIGKILLed; another host's is kept unless an hour old."""
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from nst_core.storage import Storage; Storage().write_atomic(sys.argv[1], b'row')",
            str(tmp_path / "part-1.parquet"),
        ],
        cwd=REPO,
        env={**os.environ, storage.FAULT_WRITE_DELAY_ENV: "60"},
    )
    deadline = time.time() + 30
    while time.time() < deadline and not list(tmp_path.glob(".part-1.parquet.*.tmp")):
        time.sleep(0.05)
    (temporary,) = tmp_path.glob(".part-1.parquet.*.tmp")
    assert f"-{writer.pid}-" in temporary.name
    elsewhere = tmp_path / ".b.png.abcdef-1-0123abcd.tmp"  # a host hash that is not this host's
    old = tmp_path / ".c.png.abcdef-2-0123abcd.tmp"
    for path in (elsewhere, old, tmp_path / ".notes.tmp"):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert storage.remove_orphan_temporaries(str(tmp_path)) == [str(old)]
    assert temporary.exists()  # its writer is alive
    writer.kill()
    writer.wait()
    assert storage.remove_orphan_temporaries(str(tmp_path)) == [str(temporary)]
    assert sorted(os.listdir(tmp_path)) == [elsewhere.name, ".notes.tmp"]
    assert storage.remove_orphan_temporaries("s3://nst-test/results") == []  # one PUT there: no temporaries


def test_write_atomic_to_s3(s3):
    fs, options = s3
    Storage(options).write_atomic("s3://nst-test/results/part-1.parquet", b"payload")
    assert fs.cat_file("nst-test/results/part-1.parquet") == b"payload"


def test_a_presigned_link_lives_an_hour_and_holds_the_key_id_never_the_secret(s3, monkeypatch):
    fs, options = s3
    fs.pipe("nst-test/a.png", b"picture")
    link = Storage(options).sign("s3://nst-test/a.png")
    assert 3590 < link_lifetime(link) <= 3600
    assert os.environ["AWS_ACCESS_KEY_ID"] in link and os.environ["AWS_SECRET_ACCESS_KEY"] not in link  # README
    assert requests.get(link, timeout=10).content == b"picture"
    monkeypatch.setenv("NST_LINK_SECONDS", "600")
    assert 590 < link_lifetime(Storage(options).sign("s3://nst-test/a.png")) <= 600
    for bad in ("0", "604801", "1h"):
        monkeypatch.setenv("NST_LINK_SECONDS", bad)
        with pytest.raises(ValueError, match=f"NST_LINK_SECONDS='{bad}': give whole seconds from 1 to 604800"):
            Storage(options).sign("s3://nst-test/a.png")
