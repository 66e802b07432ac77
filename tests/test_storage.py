"""Storage: local paths and URIs through one object, its options never shown."""

from flows.storage import Storage, join_uri


def test_storage_writes_lists_and_signs_local_files(tmp_path):
    storage = Storage()
    folder = str(tmp_path / "results")
    assert storage.list(folder, "part-*.parquet") == []  # a missing folder lists nothing
    for name in ("part-b.parquet", "part-a.parquet", "other.txt"):
        storage.write_atomic(join_uri(folder, name), b"x")
    assert storage.list(folder, "part-*.parquet") == [
        join_uri(folder, "part-a.parquet"),
        join_uri(folder, "part-b.parquet"),
    ]
    assert storage.exists(join_uri(folder, "other.txt")) and not storage.exists(join_uri(folder, "missing"))
    assert storage.sign(join_uri(folder, "other.txt")) == (tmp_path / "results" / "other.txt").as_uri()
    assert join_uri("s3://bucket/prefix/", "a/../b.png") == "s3://bucket/prefix/b.png"


def test_a_storage_shows_its_options_names_not_their_values():
    shown = repr(Storage({"endpoint_url": "http://secret-host:9000", "profile": "night"}))
    assert "secret-host" not in shown and "night" not in shown and "endpoint_url" in shown
