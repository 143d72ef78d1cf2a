//! `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews`: what
//! `kubectl auth can-i --list` asks. The body (JSON, or protobuf as
//! kubectl sends it) names a namespace; the answer lists the rules the
//! asking identity (after impersonation) has there, from
//! [`authz::rules_for`], which reads the tables `authorize` decides by.

use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use knit_api::ApiError;
use knit_api::protobuf::MAGIC;
use serde_json::{Value, json};

use super::{Identity, authz, json_response, status_response};

/// The review's kind.
const KIND: &str = "SelfSubjectRulesReview";

/// Answers one review for `who`.
pub(super) async fn self_subject_rules_review(who: &Identity, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match crate::request::read_body(&parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(e) => return status_response(&e),
    };
    let Some(mut review) = decode(&bytes) else {
        return status_response(&ApiError::BadRequest(format!("the body is not a {KIND}")));
    };
    let namespace = review["spec"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let rules = authz::rules_for(who, &namespace);
    review["status"] = serde_json::to_value(&rules).unwrap_or_default();
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!(KIND);
    json_response(StatusCode::CREATED, &review)
}

/// A JSON or protobuf review as a JSON object with `metadata` and `spec`;
/// `None` when the body is neither.
fn decode(bytes: &[u8]) -> Option<Value> {
    let mut review = if bytes.starts_with(MAGIC) {
        knit_api::protobuf::decode_rules_review(bytes).ok()?
    } else {
        serde_json::from_slice::<Value>(bytes).ok()?
    };
    let object = review.as_object_mut()?;
    if object.get("kind").and_then(Value::as_str).unwrap_or(KIND) != KIND {
        return None;
    }
    let spec = object.entry("spec").or_insert_with(|| json!({}));
    if !spec.is_object() || !matches!(spec["namespace"], Value::Null | Value::String(_)) {
        return None;
    }
    object.entry("metadata").or_insert_with(|| json!({}));
    Some(review)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length-delimited field.
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(tag << 3) | 2, u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    fn protobuf(kind: &str, namespace: &str) -> Vec<u8> {
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, kind.as_bytes()),
        ]
        .concat();
        let review = [field(1, b""), field(2, &field(1, namespace.as_bytes()))].concat();
        [MAGIC.as_slice(), &field(1, &type_meta), &field(2, &review)].concat()
    }

    #[test]
    fn reviews_decode_from_protobuf_and_json() {
        let review = decode(&protobuf(KIND, "kube-node-lease")).unwrap();
        assert_eq!(review["spec"]["namespace"], "kube-node-lease");
        let review = decode(br#"{"spec": {"namespace": "default"}}"#).unwrap();
        assert_eq!(review["spec"]["namespace"], "default");
        assert_eq!(review["metadata"], json!({}));
        assert!(decode(&protobuf("SelfSubjectAccessReview", "default")).is_none());
        assert!(decode(&MAGIC[..3]).is_none());
        assert!(decode(b"[1]").is_none());
        assert!(decode(br#"{"spec": {"namespace": 3}}"#).is_none());
        assert!(decode(br#"{"kind": "Pod", "spec": {}}"#).is_none());
    }
}
