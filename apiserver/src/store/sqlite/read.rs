//! Reads on pooled connections: point gets, lists at the current or a past
//! revision, and change-log replay. A list reads `objects` (current up to
//! its `meta.applied`) and then the part of the log between `applied` and
//! the revision asked for.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::{ReadConn, backend, parse};
use crate::store::{Change, ChangeKind, Key, ListPage, ListQuery, Object, Result, StoreError};

type SqlValue = rusqlite::types::Value;

pub(super) fn meta_value(conn: &Connection, key: &str) -> Result<u64> {
    let value: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?")
        .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
        .map_err(backend)?;
    Ok(value.unwrap_or(0) as u64)
}

/// The folded row of a key, its revision and JSON (callers look at
/// unfolded changes first).
pub(super) fn object_row(conn: &Connection, key: &Key) -> Result<Option<(u64, String)>> {
    conn.prepare_cached(
        "SELECT rev, value FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![key.resource, key.namespace, key.name], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get(1)?))
        })
        .optional()
    })
    .map_err(backend)
}

/// The folded state of a key.
pub(super) fn get(conn: &Connection, key: &Key) -> Result<Option<Object>> {
    object_row(conn, key)?
        .map(|(rev, text)| {
            Ok(Object {
                rev,
                value: Arc::new(parse(&text)?),
            })
        })
        .transpose()
}

/// (namespace, name): the order lists come in.
type ListKey = (String, String);

pub(super) fn list(conn: &mut ReadConn, query: &ListQuery) -> Result<ListPage> {
    let ReadConn { log, objects } = conn;
    // The log is never compacted past what `objects` holds, but `objects`
    // may have moved on (and the log been compacted) between the two reads:
    // then read again.
    for _ in 0..3 {
        let objects_tx = objects.transaction().map_err(backend)?;
        let applied = meta_value(&objects_tx, "applied")?;
        let log_tx = log.transaction().map_err(backend)?;
        let now = meta_value(&log_tx, "rev")?;
        let compacted = meta_value(&log_tx, "compacted")?;
        let at = query.at_rev.unwrap_or(now).min(now);
        if at < compacted {
            return Err(StoreError::Compacted {
                requested: at,
                compacted,
            });
        }
        if applied < compacted {
            continue;
        }
        // How the log turns `objects` (as of `applied`) into the state at
        // `at`: key -> its JSON then, or None where it did not exist.
        let overlay = if at >= applied {
            changes_forward(&log_tx, query, applied, at)?
        } else {
            changes_back(&log_tx, query, at, applied)?
        };
        let base = rows(
            &objects_tx,
            query,
            query.limit.map(|l| l + 1 + overlay.len()),
        )?;
        log_tx.commit().map_err(backend)?;
        objects_tx.commit().map_err(backend)?;
        return page(query, base, overlay, at);
    }
    Err(backend("objects kept moving past the log; try again"))
}

/// Applies the overlay to the rows of `objects` and cuts the page.
fn page(
    query: &ListQuery,
    base: Vec<(ListKey, String)>,
    overlay: BTreeMap<ListKey, Option<String>>,
    at: u64,
) -> Result<ListPage> {
    let mut rows: BTreeMap<ListKey, String> = base.into_iter().collect();
    for (key, value) in overlay {
        if query.after.as_ref().is_some_and(|after| key <= *after) {
            continue;
        }
        match value {
            Some(value) => rows.insert(key, value),
            None => rows.remove(&key),
        };
    }
    // With a limit, `objects` gave `limit + 1 + overlay` rows: the overlay
    // removes at most one each, so the first `limit + 1` are right.
    let take = query.limit.map_or(usize::MAX, |l| l + 1);
    let mut objects = rows
        .into_values()
        .take(take)
        .map(|text| parse(&text).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let more = query.limit.is_some_and(|limit| objects.len() > limit);
    if let Some(limit) = query.limit {
        objects.truncate(limit);
    }
    Ok(ListPage {
        objects,
        rev: at,
        more,
    })
}

/// The WHERE clause and parameters that scope a list to its resource and
/// namespace.
fn scope(query: &ListQuery, table: &str) -> (String, Vec<SqlValue>) {
    let mut sql = format!("{table}.resource = ?");
    let mut params: Vec<SqlValue> = vec![query.resource.clone().into()];
    if let Some(ns) = &query.namespace {
        sql.push_str(&format!(" AND {table}.namespace = ?"));
        params.push(ns.clone().into());
    }
    (sql, params)
}

/// Rows of `objects` in scope and after the query's key, in key order.
fn rows(
    conn: &Connection,
    query: &ListQuery,
    limit: Option<usize>,
) -> Result<Vec<(ListKey, String)>> {
    let (scope, mut params) = scope(query, "objects");
    let mut sql = format!("SELECT namespace, name, value FROM objects WHERE {scope}");
    if let Some((ns, name)) = &query.after {
        sql.push_str(" AND (namespace, name) > (?, ?)");
        params.push(ns.clone().into());
        params.push(name.clone().into());
    }
    sql.push_str(" ORDER BY namespace, name");
    if let Some(limit) = limit {
        sql.push_str(" LIMIT ?");
        params.push((limit as i64).into());
    }
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    stmt.query_map(params_from_iter(params), |row| {
        Ok(((row.get(0)?, row.get(1)?), row.get(2)?))
    })
    .and_then(|rows| rows.collect())
    .map_err(backend)
}

/// The newest change in `(from, to]` of each key in scope.
fn changes_forward(
    conn: &Connection,
    query: &ListQuery,
    from: u64,
    to: u64,
) -> Result<BTreeMap<ListKey, Option<String>>> {
    let (scope, params) = scope(query, "changes");
    let sql = format!(
        "SELECT namespace, name, kind, value FROM changes
         WHERE {scope} AND rev > ? AND rev <= ? ORDER BY rev"
    );
    overlay(conn, &sql, params, (from, to), ChangeKind::Deleted)
}

/// For each key in scope changed in `(from, to]`: its state before the
/// first of those changes (None if that change created it).
fn changes_back(
    conn: &Connection,
    query: &ListQuery,
    from: u64,
    to: u64,
) -> Result<BTreeMap<ListKey, Option<String>>> {
    let (scope, params) = scope(query, "changes");
    let sql = format!(
        "SELECT c.namespace, c.name, c.kind, c.prev FROM changes c JOIN (
             SELECT namespace, name, MIN(rev) AS first FROM changes
             WHERE {scope} AND rev > ? AND rev <= ? GROUP BY namespace, name) f
         ON c.rev = f.first"
    );
    overlay(conn, &sql, params, (from, to), ChangeKind::Added)
}

/// Runs a query over a range of the log whose rows are (namespace, name,
/// kind, JSON): a row of kind `absent` says the key did not exist. A later
/// row of a key replaces an earlier one.
fn overlay(
    conn: &Connection,
    sql: &str,
    mut params: Vec<SqlValue>,
    (from, to): (u64, u64),
    absent: ChangeKind,
) -> Result<BTreeMap<ListKey, Option<String>>> {
    params.push((from as i64).into());
    params.push((to as i64).into());
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map(params_from_iter(params), |row| {
            let kind: String = row.get(2)?;
            let json = (kind != absent.as_str()).then(|| row.get(3)).transpose()?;
            Ok(((row.get(0)?, row.get(1)?), json))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(backend)?;
    Ok(rows.into_iter().collect())
}

/// Changes after `rev`, oldest first.
pub(super) fn changes_since(
    conn: &mut Connection,
    rev: u64,
    resource: Option<&str>,
) -> Result<Vec<Change>> {
    let tx = conn.transaction().map_err(backend)?;
    let compacted = meta_value(&tx, "compacted")?;
    if rev < compacted {
        return Err(StoreError::Compacted {
            requested: rev,
            compacted,
        });
    }
    let changes = log_range(&tx, rev, u64::MAX, resource)?;
    tx.commit().map_err(backend)?;
    Ok(changes)
}

/// The log entries in `(from, to]`, of one resource or all, oldest first.
pub(super) fn log_range(
    conn: &Connection,
    from: u64,
    to: u64,
    resource: Option<&str>,
) -> Result<Vec<Change>> {
    let sql = format!(
        "SELECT rev, resource, namespace, name, kind, value, prev FROM changes
         WHERE rev > ? AND rev <= ? {} ORDER BY rev",
        if resource.is_some() {
            "AND resource = ?"
        } else {
            ""
        }
    );
    let mut params: Vec<SqlValue> = vec![
        (from as i64).into(),
        (to.min(i64::MAX as u64) as i64).into(),
    ];
    if let Some(resource) = resource {
        params.push(resource.to_string().into());
    }
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let rows = stmt
        .query_map(params_from_iter(params), |row| {
            Ok((
                row.get::<_, i64>(0)?,
                Key::new(
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ),
                row.get::<_, String>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, Option<String>>(6)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(backend)?;
    rows.into_iter()
        .map(|(rev, key, kind, value, prev)| {
            Ok(Change {
                rev: rev as u64,
                key,
                kind: ChangeKind::from_str(&kind).ok_or_else(|| backend("bad change kind"))?,
                object: Arc::new(parse(&value)?),
                object_json: Bytes::from(value),
                prev: prev.as_deref().map(parse).transpose()?.map(Arc::new),
            })
        })
        .collect()
}
