"""Snapshot round trips through the official qdrant-client: create, download, delete, recover
from file://, from http:// (a local server) and from an upload; every point must come back."""

import functools
import hashlib
import http.server
import threading
import urllib.request

import numpy as np
from qdrant_client import QdrantClient, models

N = 2000
DIM = 8


def everything(client, name):
    points, offset = [], None
    while True:
        page, offset = client.scroll(name, limit=500, offset=offset, with_vectors=True)
        points.extend(page)
        if offset is None:
            return {p.id: (p.payload, p.vector) for p in points}


def assert_same(got, want):
    assert got.keys() == want.keys()
    for k, (payload, vector) in want.items():
        assert got[k][0] == payload
        np.testing.assert_allclose(got[k][1], vector, rtol=1e-6)


def test_snapshot_round_trip_through_every_recovery_path(server, tmp_path):
    client = QdrantClient(url=server.url, timeout=120)
    client.create_collection("snap", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    rng = np.random.default_rng(3)
    data = rng.normal(size=(N, DIM)).astype(np.float32)
    for start in range(0, N, 500):
        client.upsert(
            "snap",
            points=[models.PointStruct(id=i, vector=data[i].tolist(), payload={"i": i, "even": i % 2 == 0}) for i in range(start, start + 500)],
            wait=True,
        )
    want = everything(client, "snap")
    assert len(want) == N

    desc = client.create_snapshot("snap", wait=True)
    assert desc.name in [s.name for s in client.list_snapshots("snap")]
    with urllib.request.urlopen(f"{server.url}/collections/snap/snapshots/{desc.name}") as r:
        blob = r.read()
    assert hashlib.sha256(blob).hexdigest() == desc.checksum
    assert len(blob) == desc.size
    (tmp_path / "downloaded.snapshot").write_bytes(blob)

    client.delete_collection("snap")
    assert not client.collection_exists("snap")

    # file:// (must be inside the snapshots folder, as in Qdrant), with its checksum.
    location = f"file://{server.snapshots_path}/snap/{desc.name}"
    assert client.recover_snapshot("snap", location=location, priority=models.SnapshotPriority.SNAPSHOT, checksum=desc.checksum, wait=True)
    assert_same(everything(client, "snap"), want)

    # http:// from a local web server.
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}/downloaded.snapshot"
        assert client.recover_snapshot("snap-http", location=url, priority=models.SnapshotPriority.REPLICA, wait=True)
    finally:
        web.shutdown()
    assert_same(everything(client, "snap-http"), want)

    # Upload (multipart), through the client's generated API.
    with open(tmp_path / "downloaded.snapshot", "rb") as f:
        client.http.snapshots_api.recover_from_uploaded_snapshot(
            collection_name="snap-upload", wait=True, priority=models.SnapshotPriority.NO_SYNC, checksum=desc.checksum, snapshot=f
        )
    assert_same(everything(client, "snap-upload"), want)
    assert client.delete_snapshot("snap", desc.name, wait=True)
    assert desc.name not in [s.name for s in client.list_snapshots("snap")]


def test_https_location_with_untrusted_certificate_is_refused(server, tmp_path):
    """https works through rustls; a certificate no root vouches for is refused cleanly."""
    import ssl
    import subprocess

    from qdrant_client.http.exceptions import UnexpectedResponse

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )
    (tmp_path / "x.snapshot").write_bytes(b"not reached")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    web.socket = ctx.wrap_socket(web.socket, server_side=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    client = QdrantClient(url=server.url, timeout=60)
    try:
        url = f"https://127.0.0.1:{web.server_address[1]}/x.snapshot"
        try:
            client.recover_snapshot("tls", location=url, wait=True)
            raise AssertionError("an untrusted certificate must be refused")
        except UnexpectedResponse as e:
            assert e.status_code == 400
            assert "download" in e.content.decode().lower()
    finally:
        web.shutdown()
    assert not client.collection_exists("tls")
