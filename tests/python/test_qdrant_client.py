"""Quiver driven by the official qdrant-client, checked against numpy brute force."""

import uuid
import warnings

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

DIM = 32
N = 10_000
BATCH = 500

DISTANCES = [models.Distance.COSINE, models.Distance.DOT, models.Distance.EUCLID, models.Distance.MANHATTAN]


def client_for(server, **kw) -> QdrantClient:
    return QdrantClient(url=server.url, timeout=60, **kw)


def brute_force(distance, data, query, mask, limit):
    """Ids and user-visible scores, best first, over rows where mask is true."""
    idx = np.nonzero(mask)[0]
    x = data[idx].astype(np.float64)
    q = query.astype(np.float64)
    if distance == models.Distance.COSINE:
        scores = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
        order = np.argsort(-scores, kind="stable")
    elif distance == models.Distance.DOT:
        scores = x @ q
        order = np.argsort(-scores, kind="stable")
    elif distance == models.Distance.EUCLID:
        scores = np.sqrt(((x - q) ** 2).sum(axis=1))
        order = np.argsort(scores, kind="stable")
    else:
        scores = np.abs(x - q).sum(axis=1)
        order = np.argsort(scores, kind="stable")
    top = order[:limit]
    return [int(idx[i]) for i in top], [float(scores[i]) for i in top]


def assert_matches(points, want_ids, want_scores):
    got_ids = [p.id for p in points]
    got_scores = [p.score for p in points]
    assert len(got_ids) == len(want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-3, atol=1e-3)
    # Ids must agree except where two reference scores tie within float32 rounding.
    for g, w, s in zip(got_ids, want_ids, want_scores):
        if g != w:
            alt = want_scores[want_ids.index(g)] if g in want_ids else None
            assert alt is not None and abs(alt - s) < 1e-3, (g, w)


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(7)
    data = rng.normal(size=(N, DIM)).astype(np.float32)
    groups = np.arange(N) % 10
    prices = rng.uniform(0, 100, size=N).round(2)
    return data, groups, prices


@pytest.mark.parametrize("distance", DISTANCES, ids=lambda d: d.value)
def test_full_workflow_against_numpy(server, dataset, distance):
    data, groups, prices = dataset
    client = client_for(server)
    name = f"flow_{distance.value.lower()}"
    assert client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=distance))
    assert client.collection_exists(name)
    assert name in [c.name for c in client.get_collections().collections]

    for start in range(0, N, BATCH):
        client.upsert(
            name,
            points=[
                models.PointStruct(
                    id=i,
                    vector=data[i].tolist(),
                    payload={"group": int(groups[i]), "price": float(prices[i]), "tag": f"t{i % 7}"},
                )
                for i in range(start, start + BATCH)
            ],
            wait=True,
        )
    info = client.get_collection(name)
    assert info.points_count == N
    assert info.config.params.vectors.size == DIM
    assert info.config.params.vectors.distance == distance

    client.create_payload_index(name, "group", field_schema=models.PayloadSchemaType.INTEGER)
    assert "group" in client.get_collection(name).payload_schema

    rng = np.random.default_rng(11)
    everything = np.ones(N, dtype=bool)
    for _ in range(5):
        q = rng.normal(size=DIM).astype(np.float32)
        res = client.query_points(name, query=q.tolist(), limit=10).points
        assert_matches(res, *brute_force(distance, data, q, everything, 10))

        flt = models.Filter(
            must=[
                models.FieldCondition(key="group", match=models.MatchValue(value=3)),
                models.FieldCondition(key="price", range=models.Range(gte=20.0, lt=80.0)),
            ]
        )
        mask = (groups == 3) & (prices >= 20.0) & (prices < 80.0)
        res = client.query_points(name, query=q.tolist(), query_filter=flt, limit=7, with_payload=True).points
        assert_matches(res, *brute_force(distance, data, q, mask, 7))
        assert all(p.payload["group"] == 3 and 20 <= p.payload["price"] < 80 for p in res)

    # A batch (plain queries share one scan) answers exactly as the queries one by one.
    queries = [rng.normal(size=DIM).astype(np.float32).tolist() for _ in range(4)]
    group_filter = models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value=1))])
    requests = [models.QueryRequest(query=q, limit=6, filter=group_filter if i % 2 else None) for i, q in enumerate(queries)]
    batch = client.query_batch_points(name, requests=requests)
    for r, b in zip(requests, batch):
        single = client.query_points(name, query=r.query, limit=6, query_filter=r.filter).points
        assert [p.id for p in b.points] == [p.id for p in single]

    # Retrieve.
    got = client.retrieve(name, ids=[0, 17, 9999], with_vectors=True)
    assert sorted(p.id for p in got) == [0, 17, 9999]
    rec = next(p for p in got if p.id == 17)
    assert rec.payload == {"group": 7, "price": float(prices[17]), "tag": "t3"}
    if distance != models.Distance.COSINE:
        np.testing.assert_allclose(rec.vector, data[17], rtol=1e-6)

    # Scroll through everything.
    seen, offset = [], None
    while True:
        page, offset = client.scroll(name, limit=1000, offset=offset, with_payload=False)
        seen.extend(p.id for p in page)
        if offset is None:
            break
    assert seen == list(range(N))

    # Count, with and without a filter.
    assert client.count(name).count == N
    tag_filter = models.Filter(must=[models.FieldCondition(key="tag", match=models.MatchAny(any=["t1", "t2"]))])
    assert client.count(name, count_filter=tag_filter).count == sum(1 for i in range(N) if i % 7 in (1, 2))

    # Delete by id and by filter.
    client.delete(name, points_selector=models.PointIdsList(points=[0, 1, 2]), wait=True)
    assert client.count(name).count == N - 3
    client.delete(
        name,
        points_selector=models.FilterSelector(
            filter=models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value=5))])
        ),
        wait=True,
    )
    assert client.count(name).count == N - 3 - N // 10
    assert client.count(name, count_filter=models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value=5))])).count == 0

    # Set and delete payload.
    client.set_payload(name, payload={"color": "red"}, points=[10, 11], wait=True)
    client.delete_payload(name, keys=["tag"], points=[11], wait=True)
    p10, p11 = sorted(client.retrieve(name, ids=[10, 11]), key=lambda p: p.id)
    assert p10.payload["color"] == "red" and p10.payload["tag"] == "t3"
    assert p11.payload["color"] == "red" and "tag" not in p11.payload
    client.overwrite_payload(name, payload={"only": True}, points=[12], wait=True)
    assert client.retrieve(name, ids=[12])[0].payload == {"only": True}
    client.clear_payload(name, points_selector=[13], wait=True)
    assert client.retrieve(name, ids=[13])[0].payload == {}

    assert client.delete_collection(name)
    assert not client.collection_exists(name)


def test_error_statuses(server):
    client = client_for(server)
    client.create_collection("errs", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    client.upsert("errs", points=[models.PointStruct(id=1, vector=[1, 2, 3, 4])], wait=True)
    with pytest.raises(UnexpectedResponse) as e:
        client.upsert("errs", points=[models.PointStruct(id=2, vector=[1, 2, 3])], wait=True)
    assert e.value.status_code == 400
    assert "dimension" in e.value.content.decode()
    with pytest.raises(UnexpectedResponse) as e:
        client.query_points("errs", query=[1.0, 2.0], limit=3)
    assert e.value.status_code == 400
    with pytest.raises(UnexpectedResponse) as e:
        client.query_points("missing", query=[1.0, 2.0, 3.0, 4.0])
    assert e.value.status_code == 404
    with pytest.raises(UnexpectedResponse) as e:
        client.get_collection("missing")
    assert e.value.status_code == 404
    with pytest.raises(UnexpectedResponse) as e:
        client.create_collection("errs", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    assert e.value.status_code == 409
    with pytest.raises(UnexpectedResponse) as e:
        client.set_payload("errs", payload={"a": 1}, points=[424242], wait=True)
    assert e.value.status_code == 404
    # Nothing above changed the stored point.
    assert client.count("errs").count == 1
    assert client.retrieve("errs", ids=[1], with_vectors=True)[0].vector == [1.0, 2.0, 3.0, 4.0]


def test_api_key(secured_server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the client warns about keys over plain HTTP
        with pytest.raises(UnexpectedResponse) as e:
            client_for(secured_server, check_compatibility=False).get_collections()
        assert e.value.status_code == 401
        with pytest.raises(UnexpectedResponse) as e:
            client_for(secured_server, api_key="wrong", check_compatibility=False).get_collections()
        assert e.value.status_code == 403
        good = client_for(secured_server, api_key="s3cret")
        good.create_collection("secure", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
        reader = client_for(secured_server, api_key="reader")
        assert reader.count("secure").count == 0
        with pytest.raises(UnexpectedResponse) as e:
            reader.upsert("secure", points=[models.PointStruct(id=1, vector=[1, 2])])
        assert e.value.status_code == 403


def test_named_sparse_prefetch_and_fusion(server):
    client = client_for(server)
    client.create_collection(
        "hybrid",
        vectors_config={"dense": models.VectorParams(size=3, distance=models.Distance.COSINE)},
        sparse_vectors_config={"kw": models.SparseVectorParams()},
    )
    u = str(uuid.UUID(int=7))
    client.upsert(
        "hybrid",
        points=[
            models.PointStruct(id=1, vector={"dense": [1, 0, 0], "kw": models.SparseVector(indices=[1, 5], values=[1.0, 0.5])}),
            models.PointStruct(id=2, vector={"dense": [0.9, 0.1, 0], "kw": models.SparseVector(indices=[5], values=[2.0])}),
            models.PointStruct(id=3, vector={"dense": [0, 1, 0]}),
            models.PointStruct(id=u, vector={"kw": models.SparseVector(indices=[9], values=[1.0])}, payload={"k": "uuid"}),
        ],
        wait=True,
    )
    dense = client.query_points("hybrid", query=[1, 0, 0], using="dense", limit=3).points
    assert [p.id for p in dense] == [1, 2, 3]
    sparse = client.query_points("hybrid", query=models.SparseVector(indices=[5], values=[1.0]), using="kw").points
    assert [(p.id, round(p.score, 4)) for p in sparse] == [(2, 2.0), (1, 0.5)]
    by_id = client.query_points("hybrid", query=1, using="dense", limit=2).points
    assert [p.id for p in by_id] == [2, 3], "the query point itself is excluded"
    fused = client.query_points(
        "hybrid",
        prefetch=[
            models.Prefetch(query=[0, 1, 0], using="dense", limit=2),
            models.Prefetch(query=models.SparseVector(indices=[5, 9], values=[1.0, 1.0]), using="kw", limit=3),
        ],
        query=models.FusionQuery(fusion=models.Fusion.RRF),
        limit=10,
        with_payload=True,
    ).points
    assert {p.id for p in fused} == {1, 2, 3, u}
    rescored = client.query_points(
        "hybrid",
        prefetch=models.Prefetch(query=models.SparseVector(indices=[5], values=[1.0]), using="kw", limit=5),
        query=[0, 1, 0],
        using="dense",
        limit=5,
    ).points
    assert [p.id for p in rescored] == [2, 1], "only prefetched points are re-scored"
    got = client.retrieve("hybrid", ids=[u], with_vectors=True)[0]
    assert got.payload == {"k": "uuid"} and got.vector["kw"].indices == [9]


def test_hnsw_index_through_qdrant_client(server):
    """HNSW built in the background (yellow, then green with indexed_vectors_count), searched
    with search_params; recall@10 against numpy brute force; exact=True is exact."""
    import time

    client = client_for(server)
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(40, DIM)).astype(np.float32)
    data = (centres[np.arange(20_000) % 40] + 0.3 * rng.normal(size=(20_000, DIM))).astype(np.float32)
    client.create_collection(
        "ann",
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        hnsw_config=models.HnswConfigDiff(m=16, ef_construct=100, full_scan_threshold=100),
        shard_number=1,
    )
    for start in range(0, len(data), 2000):
        client.upsert(
            "ann",
            points=models.Batch(ids=list(range(start, start + 2000)), vectors=data[start : start + 2000].tolist()),
            wait=True,
        )
    deadline = time.time() + 120
    while True:
        info = client.get_collection("ann")
        if info.status == models.CollectionStatus.GREEN and (info.indexed_vectors_count or 0) > 0:
            break
        assert time.time() < deadline, f"never indexed: {info.status} {info.indexed_vectors_count}"
        time.sleep(0.1)
    queries = (centres[rng.integers(0, 40, size=50)] + 0.3 * rng.normal(size=(50, DIM))).astype(np.float32)
    found = 0
    for q in queries:
        truth, scores = brute_force(models.Distance.COSINE, data, q, np.ones(len(data), bool), 10)
        got = client.query_points("ann", query=q.tolist(), limit=10, search_params=models.SearchParams(hnsw_ef=64)).points
        found += len(set(p.id for p in got) & set(truth))
        exact = client.query_points("ann", query=q.tolist(), limit=10, search_params=models.SearchParams(exact=True)).points
        assert_matches(exact, truth, scores)
    assert found / 500 >= 0.95, found / 500
