//! `/openapi/v3` and `/openapi/v3/<api|apis/group>/<version>`: the OpenAPI
//! v3 documents of `knit_api::openapi`, rendered once on first use and then
//! served as bytes. Each document's URL in the index carries a hash of its
//! bytes; a request with the current hash may be cached forever, one with
//! a stale hash is redirected to the current one, as kube-apiserver does.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderValue, StatusCode};
use knit_api::ApiError;
use knit_api::openapi;
use serde_json::{Map, Value, json};

use crate::error_response;

struct Document {
    hash: String,
    bytes: Bytes,
}

struct Documents {
    index: Bytes,
    by_key: HashMap<String, Document>,
}

fn hash_of(bytes: &[u8]) -> String {
    // Two differently seeded hashes make a 128-bit tag; it only has to
    // change when the document does.
    let mut a = DefaultHasher::new();
    bytes.hash(&mut a);
    let mut b = DefaultHasher::new();
    0xc0ffee_u32.hash(&mut b);
    bytes.hash(&mut b);
    format!("{:016X}{:016X}", a.finish(), b.finish())
}

fn documents() -> &'static Documents {
    static DOCUMENTS: OnceLock<Documents> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        let mut by_key = HashMap::new();
        let mut paths = Map::new();
        for gv in openapi::group_versions() {
            let bytes = Bytes::from(serde_json::to_vec(&gv.document()).unwrap_or_default());
            let hash = hash_of(&bytes);
            let key = gv.index_key();
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
            by_key.insert(key, Document { hash, bytes });
        }
        let index = json!({"paths": Value::Object(paths)});
        Documents {
            index: Bytes::from(serde_json::to_vec(&index).unwrap_or_default()),
            by_key,
        }
    })
}

/// `GET /openapi/v3`: where each group/version's document is.
pub async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache, private")),
        ],
        documents().index.clone(),
    )
        .into_response()
}

/// `GET /openapi/v3/<key>[?hash=...]`.
pub async fn document(Path(key): Path<String>, RawQuery(query): RawQuery) -> Response {
    let Some(document) = documents().by_key.get(key.trim_matches('/')) else {
        return error_response(&ApiError::NotFound {
            group: String::new(),
            resource: "openapi".into(),
            name: key,
        });
    };
    let asked = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("hash="))
            .map(str::to_string)
    });
    let etag = HeaderValue::from_str(&format!("\"{}\"", document.hash))
        .unwrap_or(HeaderValue::from_static("\"\""));
    let cache = match asked.as_deref() {
        None => "no-cache, private",
        Some(hash) if hash == document.hash => "public, immutable",
        Some(_) => {
            let location = format!(
                "/openapi/v3/{}?hash={}",
                key.trim_matches('/'),
                document.hash
            );
            return (StatusCode::MOVED_PERMANENTLY, [(LOCATION, location)]).into_response();
        }
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (CACHE_CONTROL, HeaderValue::from_static(cache)),
            (ETAG, etag),
        ],
        document.bytes.clone(),
    )
        .into_response()
}
