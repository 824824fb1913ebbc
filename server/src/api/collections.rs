//! Collection routes: list, create, info, delete, exists, update, payload indexes.

use std::sync::Arc;

use hyper::Response;
use quiver_engine::filter::Condition;
use quiver_engine::{CollectionConfig, EngineError, Filter, PayloadFieldSchema};
use serde_json::{Map, Value, json};

use super::models::{CreateCollection, CreateFieldIndex, UpdateCollection, unsupported};
use super::response::{self, ApiError, Body};
use super::{AppState, Request};

/// Settings Qdrant reports when a collection did not set them.
fn defaults() -> [(&'static str, Value); 3] {
    [
        (
            "hnsw_config",
            json!({"m": 16, "ef_construct": 100, "full_scan_threshold": 10000, "max_indexing_threads": 0, "on_disk": false}),
        ),
        (
            "optimizers_config",
            json!({"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000, "default_segment_number": 0,
                   "max_segment_size": null, "memmap_threshold": null, "indexing_threshold": 10000,
                   "flush_interval_sec": 5, "max_optimization_threads": null}),
        ),
        ("wal_config", json!({"wal_capacity_mb": 32, "wal_segments_ahead": 0})),
    ]
}

/// Shallow merge: keys of `diff` that are not null replace those of `base`.
fn merge(base: &mut Value, diff: &Value) {
    if let (Some(b), Some(d)) = (base.as_object_mut(), diff.as_object()) {
        for (k, v) in d {
            if !v.is_null() {
                b.insert(k.clone(), v.clone());
            }
        }
    } else if !diff.is_null() {
        *base = diff.clone();
    }
}

pub fn list(state: &Arc<AppState>, req: &Request) -> Result<Response<Body>, ApiError> {
    let names: Vec<Value> = state
        .engine
        .list_collections()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect();
    Ok(response::ok(&json!({"collections": names}), req.started))
}

pub fn exists(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    Ok(response::ok(
        &json!({"exists": state.engine.collection(name).is_ok()}),
        req.started,
    ))
}

pub async fn create(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: CreateCollection = req.json()?;
    unsupported("init_from", &body.init_from)?;
    if body
        .sharding_method
        .as_ref()
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("custom"))
    {
        return Err(ApiError::bad("custom sharding is not supported by this server yet"));
    }
    let vectors = body.vectors.unwrap_or_default();
    if let Some((n, _)) = vectors
        .0
        .iter()
        .find(|(_, p)| p.extra.get("multivector_config").is_some_and(|v| !v.is_null()))
    {
        return Err(ApiError::bad(format!(
            "vectors.{n}.multivector_config: multivectors are not supported by this server yet"
        )));
    }
    let mut extra = Map::new();
    for (k, v) in [
        ("sharding_method", body.sharding_method),
        ("replication_factor", body.replication_factor),
        ("write_consistency_factor", body.write_consistency_factor),
        ("on_disk_payload", body.on_disk_payload),
        ("payload", body.payload),
        ("id_tracker", body.id_tracker),
        ("hnsw_config", body.hnsw_config),
        ("wal_config", body.wal_config),
        ("optimizers_config", body.optimizers_config),
        ("quantization_config", body.quantization_config),
        ("strict_mode_config", body.strict_mode_config),
        ("metadata", body.metadata),
    ] {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            extra.insert(k.to_string(), v);
        }
    }
    let mut config = CollectionConfig::single(1, quiver_engine::Distance::Dot);
    config.vectors = vectors;
    config.sparse_vectors = body.sparse_vectors.unwrap_or_default();
    config.shard_number = body.shard_number.unwrap_or(0);
    config.segment_max_points = state.settings.storage.segment_max_points;
    config.extra = extra;
    let engine = state.engine.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || engine.create_collection(&name, config))
        .await
        .map_err(|e| ApiError::new(hyper::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(response::ok(&true, req.started))
}

pub async fn delete(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let engine = state.engine.clone();
    let name = name.to_string();
    let existed = tokio::task::spawn_blocking(move || engine.delete_collection(&name))
        .await
        .map_err(|e| ApiError::new(hyper::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(response::ok(&existed, req.started))
}

pub async fn get(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let c = state.collection(name)?;
    let info = c.info().await?;
    let cfg = &info.config;
    let extra = &cfg.extra;
    let get = |k: &str| extra.get(k).cloned();
    let mut params = json!({
        "vectors": cfg.vectors,
        "shard_number": cfg.shard_number,
        "replication_factor": get("replication_factor").unwrap_or(json!(1)),
        "write_consistency_factor": get("write_consistency_factor").unwrap_or(json!(1)),
        "on_disk_payload": get("on_disk_payload").unwrap_or(json!(true)),
    });
    if let Some(m) = get("sharding_method") {
        params["sharding_method"] = m;
    }
    if !cfg.sparse_vectors.is_empty() {
        params["sparse_vectors"] = json!(cfg.sparse_vectors);
    }
    let mut config = json!({"params": params, "quantization_config": get("quantization_config")});
    for (key, mut default) in defaults() {
        if let Some(diff) = extra.get(key) {
            merge(&mut default, diff);
        }
        let out_key = if key == "optimizers_config" {
            "optimizer_config"
        } else {
            key
        };
        config[out_key] = default;
    }
    for key in ["strict_mode_config", "metadata"] {
        if let Some(v) = get(key) {
            config[key] = v;
        }
    }
    let mut schema = Map::new();
    for (key, field) in &cfg.payload_schema {
        let not_empty = Filter {
            must_not: vec![Condition::IsEmpty(key.clone())],
            ..Default::default()
        };
        let points = c.count(Some(not_empty)).await?;
        let mut entry = json!({"data_type": field.kind(), "points": points});
        if let PayloadFieldSchema::Params { kind, extra } = field {
            let mut p = extra.clone();
            p.insert("type".into(), json!(kind));
            entry["params"] = Value::Object(p);
        }
        schema.insert(key.clone(), entry);
    }
    let body = json!({
        "status": info.status,
        "optimizer_status": "ok",
        "indexed_vectors_count": info.indexed_vectors_count,
        "points_count": info.points_count,
        "segments_count": info.segments_count,
        "config": config,
        "payload_schema": schema,
    });
    Ok(response::ok(&body, req.started))
}

pub async fn update(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: UpdateCollection = req.json()?;
    let c = state.collection(name)?;
    c.update_config(move |cfg| {
        let merge_into = |extra: &mut Map<String, Value>, key: &str, diff: &Option<Value>| {
            if let Some(d) = diff.as_ref().filter(|d| !d.is_null()) {
                let slot = extra.entry(key.to_string()).or_insert(json!({}));
                merge(slot, d);
            }
        };
        merge_into(&mut cfg.extra, "optimizers_config", &body.optimizers_config);
        merge_into(&mut cfg.extra, "hnsw_config", &body.hnsw_config);
        merge_into(&mut cfg.extra, "strict_mode_config", &body.strict_mode_config);
        merge_into(&mut cfg.extra, "metadata", &body.metadata);
        if let Some(q) = body.quantization_config.filter(|q| !q.is_null()) {
            // Qdrant's `"Disabled"` removes quantization.
            if q == json!("Disabled") {
                cfg.extra.remove("quantization_config");
            } else {
                cfg.extra.insert("quantization_config".into(), q);
            }
        }
        if let Some(Value::Object(p)) = &body.params {
            for (k, v) in p.iter().filter(|(_, v)| !v.is_null()) {
                cfg.extra.insert(k.clone(), v.clone());
            }
        }
        for (name, diff) in body.vectors.iter().flatten() {
            let params = cfg
                .vectors
                .0
                .get_mut(name)
                .ok_or_else(|| EngineError::UnknownVector(name.clone()))?;
            for (k, v) in diff.iter().filter(|(_, v)| !v.is_null()) {
                if k == "size" || k == "distance" {
                    return Err(EngineError::bad(format!("vectors.{name}.{k} cannot be changed")));
                }
                params.extra.insert(k.clone(), v.clone());
            }
        }
        for (name, diff) in body.sparse_vectors.iter().flatten() {
            let params = cfg
                .sparse_vectors
                .get_mut(name)
                .ok_or_else(|| EngineError::UnknownVector(name.clone()))?;
            for (k, v) in diff.iter().filter(|(_, v)| !v.is_null()) {
                params.extra.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    })
    .await?;
    Ok(response::ok(&true, req.started))
}

pub async fn create_index(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: CreateFieldIndex = req.json()?;
    let wait = req.wait()?;
    let schema = body
        .field_schema
        .ok_or_else(|| ApiError::bad("field_schema is required"))?;
    let c = state.collection(name)?;
    c.create_index(body.field_name, schema).await?;
    Ok(response::ok(&state.update_result(wait), req.started))
}

pub async fn delete_index(
    state: &Arc<AppState>,
    req: &Request,
    name: &str,
    field: &str,
) -> Result<Response<Body>, ApiError> {
    let wait = req.wait()?;
    let c = state.collection(name)?;
    c.drop_index(field.to_string()).await?;
    Ok(response::ok(&state.update_result(wait), req.started))
}
