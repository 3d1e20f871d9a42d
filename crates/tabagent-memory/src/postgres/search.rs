//! Hybrid search in PostgreSQL: pgvector's nearest neighbours and full-text matches, fused by
//! reciprocal rank exactly as the embedded store fuses them.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Object};

use super::pg_error;
use super::records::{filter_sql, row_to_record, space, Params, RECORD_COLUMNS};
use super::schema::{distance_operator, MAX_INDEXED_DIMENSIONS};
use crate::record::check_width;
use crate::search::{fuse, keyword_terms, sort_best_first, Hit, Plan};
use crate::vector::Metric;
use crate::{Embedding, Filter, MemoryError, Record, SearchRequest, SearchResults};

/// pgvector's largest `hnsw.ef_search`.
const MAX_EF_SEARCH: usize = 1000;

pub(crate) async fn search(
    client: &mut Object,
    request: &SearchRequest,
    plan: &Plan,
    iterative_scan: bool,
) -> Result<SearchResults, MemoryError> {
    // One transaction, so that the search settings below stay with these queries.
    let tx = client.transaction().await.map_err(pg_error)?;
    let (vector_list, method) = match (&request.vector, plan.vector) {
        (Some(query), true) => {
            let (list, method) =
                nearest(&tx, query, &request.filter, plan.depth, iterative_scan).await?;
            (list, Some(method))
        }
        _ => (Vec::new(), None),
    };
    let keyword_list = match &plan.keyword {
        Some(text) => keyword(&tx, text, &request.filter, plan.depth).await?,
        None => Vec::new(),
    };
    let page: Vec<_> = fuse(&vector_list, &keyword_list)
        .into_iter()
        .skip(request.offset)
        .take(request.limit)
        .collect();
    let ids: Vec<i64> = page.iter().map(|(id, _)| *id).collect();
    let mut records: HashMap<i64, Record> = tx
        .query(
            &format!("SELECT {RECORD_COLUMNS} FROM records r WHERE r.id = ANY($1)"),
            &[&ids],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| {
            let record = row_to_record(row);
            (record.id, record)
        })
        .collect();
    tx.commit().await.map_err(pg_error)?;
    Ok(SearchResults {
        hits: page
            .into_iter()
            .filter_map(|(id, why)| records.remove(&id).map(|record| Hit { record, why }))
            .collect(),
        vector_method: method,
    })
}

/// The `depth` nearest records `filter` allows, with their scores, best first; and whether
/// the space has an HNSW index (`hnsw`) or is scanned (`exact`).
async fn nearest(
    tx: &impl GenericClient,
    query: &Embedding,
    filter: &Filter,
    depth: usize,
    iterative_scan: bool,
) -> Result<(Vec<(i64, f32)>, &'static str), MemoryError> {
    let Some((space_id, dimensions, metric)) = space(tx, &query.space).await? else {
        return Ok((Vec::new(), "exact"));
    };
    check_width(&query.space, dimensions, query.vector.len())?;
    let indexed = dimensions <= MAX_INDEXED_DIMENSIONS;
    if indexed {
        // Filtered searches keep walking the graph until enough rows pass (pgvector 0.8+).
        let mut settings = format!(
            "SET LOCAL hnsw.ef_search = {};",
            depth.clamp(64, MAX_EF_SEARCH)
        );
        if iterative_scan {
            settings.push_str("SET LOCAL hnsw.iterative_scan = relaxed_order;");
        }
        tx.batch_execute(&settings).await.map_err(pg_error)?;
    }
    // The index is on the cast to the space's width, so the query names the same expression.
    let column = if indexed {
        format!("(v.vector::vector({dimensions}))")
    } else {
        "v.vector".to_string()
    };
    let op = distance_operator(metric);
    let mut params = Params::default();
    let vector = params.push(pgvector::Vector::from(query.vector.clone()));
    let space = params.push(space_id);
    let clause = filter_sql(filter, &mut params);
    let sql = format!(
        "SELECT v.record_id, ({column} {op} {vector}::vector)::float4 AS distance
         FROM vectors v JOIN records r ON r.id = v.record_id
         WHERE v.space_id = {space} AND {clause}
         ORDER BY {column} {op} {vector}::vector LIMIT {depth}"
    );
    let mut found: Vec<(i64, f32)> = tx
        .query(&sql, &params.refs())
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| {
            let distance: f32 = row.get(1);
            let score = match metric {
                Metric::Cosine => 1.0 - distance,
                Metric::Euclidean => distance,
            };
            (row.get(0), score)
        })
        .collect();
    // An iterative scan returns rows in nearly, not strictly, best-first order.
    sort_best_first(metric, &mut found);
    Ok((found, if indexed { "hnsw" } else { "exact" }))
}

/// Full-text matches for any of the words, best `ts_rank_cd` first.
async fn keyword(
    tx: &impl GenericClient,
    text: &str,
    filter: &Filter,
    depth: usize,
) -> Result<Vec<(i64, f64)>, MemoryError> {
    // Each word quoted, any may match; words hold only letters and digits, so none is syntax.
    let query: Vec<String> = keyword_terms(text)
        .iter()
        .map(|w| format!("'{w}'"))
        .collect();
    if query.is_empty() {
        return Ok(Vec::new());
    }
    let mut params = Params::default();
    let words = params.push(query.join(" | "));
    let clause = filter_sql(filter, &mut params);
    let sql = format!(
        "SELECT r.id, ts_rank_cd(r.search, q)::float8 AS score
         FROM records r, to_tsquery('english', {words}) q
         WHERE r.search @@ q AND {clause} ORDER BY score DESC, r.id DESC LIMIT {depth}"
    );
    Ok(tx
        .query(&sql, &params.refs())
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
