"""Snapshots in S3, driven by the official qdrant-client: Quiver stores them in a moto S3 server
(started here on loopback), and boto3 checks what the bucket holds."""

import hashlib
import os
import shutil
import socket
import subprocess
import time

import boto3
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from conftest import Server, free_port

BUCKET = "quiver-snapshots"


@pytest.fixture(scope="module")
def s3():
    exe = os.environ.get("MOTO_SERVER") or shutil.which("moto_server")
    assert exe, "moto_server not found: install moto[server] (tests/python/requirements.txt)"
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, "moto_server did not start"
            time.sleep(0.05)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_server(s3):
    endpoint, _ = s3
    p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__"
    s = Server(
        {
            "QDRANT__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE": "s3",
            p + "BUCKET": BUCKET,
            p + "ENDPOINT_URL": endpoint,
            p + "REGION": "us-east-1",
            # Credentials from the standard AWS variables this time.
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            p + "PART_SIZE_MB": "5",
        }
    )
    yield s
    s.stop()


def test_snapshot_cycle_through_qdrant_client(s3, s3_server):
    _, bucket = s3
    client = QdrantClient(url=s3_server.url, timeout=120)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3000, 512)).astype(np.float32)  # ~6 MiB: two parts
    client.create_collection("docs", vectors_config=models.VectorParams(size=512, distance=models.Distance.COSINE))
    client.upsert(
        "docs",
        points=[models.PointStruct(id=i, vector=vectors[i].tolist(), payload={"i": i}) for i in range(len(vectors))],
        wait=True,
    )

    snap = client.create_snapshot("docs", wait=True)
    assert snap is not None and snap.checksum and snap.size > 5 << 20
    listed = client.list_snapshots("docs")
    assert [(s.name, s.size, s.checksum) for s in listed] == [(snap.name, snap.size, snap.checksum)]
    key = f"snapshots/docs/{snap.name}"
    body = bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == snap.checksum
    assert bucket.get_object(Bucket=BUCKET, Key=key + ".checksum")["Body"].read().decode().strip() == snap.checksum
    assert not os.listdir(s3_server.snapshots_path) or "docs" not in os.listdir(s3_server.snapshots_path)

    full = client.create_full_snapshot(wait=True)
    assert [s.name for s in client.list_full_snapshots()] == [full.name]
    assert [s.name for s in client.list_snapshots("docs")] == [snap.name]

    # Recover by name after deleting points, and into a new collection by s3:// location.
    client.delete("docs", points_selector=models.PointIdsList(points=list(range(100))), wait=True)
    assert client.count("docs", exact=True).count == 2900
    assert client.recover_snapshot("docs", location=snap.name, checksum=snap.checksum, wait=True)
    assert client.count("docs", exact=True).count == 3000
    assert client.recover_snapshot("copy", location=f"s3://{BUCKET}/{key}", wait=True)
    hits = client.query_points("copy", query=vectors[42].tolist(), limit=1).points
    assert hits[0].id == 42 and hits[0].payload == {"i": 42}

    with pytest.raises(UnexpectedResponse) as e:
        client.recover_snapshot("docs", location=snap.name, checksum="0" * 64, wait=True)
    assert e.value.status_code == 400
    assert client.count("docs", exact=True).count == 3000

    assert client.delete_snapshot("docs", snap.name, wait=True)
    assert client.delete_full_snapshot(full.name, wait=True)
    assert client.list_snapshots("docs") == []
    assert client.list_full_snapshots() == []
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == []
