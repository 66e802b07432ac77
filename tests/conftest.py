"""Shared fixtures: real VGG weights, a real S3 endpoint on loopback, sample images.

The S3 endpoint is moto's server mode, the way s3fs's own test suite does it:
one server per test session, reset between tests.
"""

from __future__ import annotations

import http.client
import http.server
import json
import math
import os
import shutil
import struct
import sys
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
NO_TENSORFLOW = REPO / "tests" / "no_tensorflow"

# `make test`'s JAX line: TensorFlow must be impossible to import, here and in every process the
# tests start, before anything below imports Keras.
if os.environ.get("NST_BLOCK_TENSORFLOW") == "1":
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NO_TENSORFLOW), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(NO_TENSORFLOW))
    import sitecustomize  # noqa: E402,F401 - installs the refusing finder in this process

from flows.server import free_port  # noqa: E402

SAMPLES = REPO / "manifests" / "samples"
SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "vgg16_imagenet_notop.weights.h5"

# Fake credentials for moto only; never real ones.
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def weights_path() -> str:
    """Real ImageNet VGG weights: NST_TEST_WEIGHTS (CI passes ../shared), else the
    shared file, else "imagenet" (Keras downloads it on a user's machine)."""
    path = os.environ.get("NST_TEST_WEIGHTS") or (str(SHARED_WEIGHTS) if SHARED_WEIGHTS.exists() else "imagenet")
    return path


def numeric_fields() -> list:
    """The StyleParams fields holding one number (an integer, or a number or none)."""
    from typing import Optional

    from nst_core.params import StyleParams

    return [s for s in StyleParams.specs() if s.hint in (int, float, Optional[float])]


def extremes(spec) -> tuple[list[str], list[str]]:
    """A numeric field's (accepted, refused) values as typed: the ends of its declared range, and past
    them: one step, 2^63 and beyond, 1e20, inf, nan, 1e400. Every integer field declares both ends."""
    schema, past = spec.check.schema, ["inf", "-inf", "nan", "1e400", "-1e400"]
    if spec.hint is int:
        low, high = schema["minimum"], schema["maximum"]
        return [str(low), str(high)], [str(low - 1), str(high + 1), str(2**63), str(-(2**63) - 1), "1e20", *past]
    if "minimum" in schema:
        accepted, refused = [str(schema["minimum"])], [str(schema["minimum"] - 1)]
    else:
        accepted, refused = ["5e-324"], [str(schema["exclusiveMinimum"]), "-1"]  # the smallest positive float
    if "maximum" in schema:
        accepted.append(str(schema["maximum"]))
        refused.append(str(schema["maximum"] + 1))
    elif "exclusiveMaximum" in schema:
        accepted.append(repr(math.nextafter(schema["exclusiveMaximum"], 0)))
        refused.append(str(schema["exclusiveMaximum"]))
    else:
        accepted.append("1.7976931348623157e308")  # the largest float
    return accepted, refused + past


def first(**fields):
    """StyleParams as the first tables' defaults made them (the oldest of params.EARLIER_DEFAULTS:
    pinned pair ids are of them), with `fields` set."""
    from nst_core.params import EARLIER_DEFAULTS, StyleParams

    return StyleParams(**{**EARLIER_DEFAULTS[-1], **fields})


def nst(*args) -> list[str]:
    """The command line of `nst` run by this Python, arguments as text: nst("run", manifest, "--size", 32)."""
    return [sys.executable, "-m", "flows.cli", *map(str, args)]


def tiny_run(weights_path: str, iterations: int = 3) -> list[str]:
    """Flags for the cheapest real stylization: 32 px, a few steps, never stopped early."""
    return ["--size", "32", "--iterations", str(iterations), "--tolerance", "0", "--weights", weights_path]


def png_header(width: int, height: int) -> bytes:
    """A well-formed 1-bit PNG that claims width x height but holds a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    for key, value in S3_TEST_ENV.items():
        os.environ.setdefault(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server):
    """A clean S3 endpoint with bucket `nst-test`; yields (s3fs filesystem, storage_options)."""
    import requests
    import s3fs

    requests.post(f"{s3_server}/moto-api/reset", timeout=10)
    s3fs.S3FileSystem.clear_instance_cache()
    storage_options = {"endpoint_url": s3_server}
    fs = s3fs.S3FileSystem(**storage_options)
    fs.mkdir("nst-test")
    yield fs, storage_options
    s3fs.S3FileSystem.clear_instance_cache()


class _IgnoresIfNoneMatch(http.server.BaseHTTPRequestHandler):
    """Forwards each request to moto without its If-None-Match header: what an S3-compatible store
    that ignores conditional creates does. Records (method, path) of every request in `seen`."""

    protocol_version = "HTTP/1.1"  # keep-alive and 100-continue, as botocore expects
    upstream = ""  # host:port of moto, set per fixture
    seen: list = []

    def _forward(self) -> None:
        self.seen.append((self.command, self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("if-none-match", "expect")}
        upstream = http.client.HTTPConnection(self.upstream, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=headers)
        reply = upstream.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("server", "date", "connection", "transfer-encoding", "content-length"):
                self.send_header(key, value)
        length = reply.getheader("Content-Length") if self.command == "HEAD" else str(len(data))  # HEAD: no body
        self.send_header("Content-Length", length)
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, *args) -> None:  # quiet, like moto's server here
        pass


@pytest.fixture
def s3_ignoring_conditions(s3, s3_server):
    """An S3 endpoint that ignores If-None-Match (moto behind a header-dropping proxy), on the same
    buckets as `s3`; yields (storage_options, the (method, path) of every request it forwarded)."""
    handler = type("Handler", (_IgnoresIfNoneMatch,), {"upstream": s3_server.removeprefix("http://"), "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"endpoint_url": f"http://127.0.0.1:{server.server_address[1]}"}, handler.seen
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def prefect_api():
    """A real temporary Prefect server (SQLite), started once per test session.

    Yields its API URL, so subprocesses (`nst run`) can report to the same server.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()


@pytest.fixture
def s3_iam_enforced(s3):
    """Moto with IAM enforced: a user who may list the bucket but not GetObject under private/.

    Moto checks signatures and IAM policies only once auth is switched on through its
    /moto-api/reset-auth endpoint; it is switched back off after the test, since the
    server is shared by the whole session.
    """
    import boto3
    import requests

    fs, options = s3
    endpoint = options["endpoint_url"]
    fs.pipe_file("nst-test/private/a.jpg", (SAMPLES / "content" / "chelsea.jpg").read_bytes())
    iam = boto3.client("iam", endpoint_url=endpoint)
    iam.create_user(UserName="reader")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::nst-test/private/*"},
        ],
    }
    iam.put_user_policy(UserName="reader", PolicyName="no-private", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield {"endpoint_url": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


@pytest.fixture
def samples(tmp_path):
    """Copies sample images (photos and paintings alike, by name) into the test's tmp_path, which it
    returns: samples("photos", "chelsea", "coffee") gives photos/chelsea.jpg and photos/coffee.jpg;
    "" is tmp_path itself; name="file" copies under another name: samples("", the_scream="scream.jpg")."""

    def copy(folder: str, *names: str, **renamed: str) -> Path:
        (tmp_path / folder).mkdir(exist_ok=True)
        for name, file in {**{name: f"{name}.jpg" for name in names}, **renamed}.items():
            shutil.copy(next(SAMPLES.glob(f"*/{name}.jpg")), tmp_path / folder / file)
        return tmp_path

    return copy


@pytest.fixture
def tree(tmp_path):
    """photos/{a,b,c}.png, styles/{x,y}.png as real tiny images, plus files expansion must skip."""
    for folder, names in (("photos", "abc"), ("styles", "xy")):
        (tmp_path / folder).mkdir()
        for name in names:
            Image.new("RGB", (8, 6), "red").save(tmp_path / folder / f"{name}.png")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 6)).save(tmp_path / "photos" / ".hidden.png")  # e.g. a half-written temporary file
    return tmp_path


def link_lifetime(link: str) -> float:
    """Seconds a presigned S3 link has left: SigV4 states it (X-Amz-Expires); SigV2, which botocore
    signs with where the endpoint allows it (moto here), gives the moment it expires (Expires)."""
    query = parse_qs(urlsplit(link).query)
    if "X-Amz-Expires" in query:
        return float(query["X-Amz-Expires"][0])
    return float(query["Expires"][0]) - time.time()


def artifacts(key: str):
    """The artifacts with this key on the test's Prefect server, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )
