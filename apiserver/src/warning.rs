//! Warnings for the client, sent as `Warning: 299 - "<text>"` response
//! headers as kube-apiserver does (kubectl prints them as `Warning: <text>`).
//! Handlers deep in a request add them with [`add`]; the dispatcher gathers
//! what one request added with [`collect`] and puts them on the response.
//! They live in a task-local rather than in every handler's return type
//! because any step of a request may have one to give.

use std::cell::RefCell;

use axum::response::Response;
use http::HeaderValue;
use http::header::WARNING;

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Runs `request`, returning its output with the warnings it added.
pub async fn collect<F: Future>(request: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(RefCell::new(Vec::new()), async {
            let out = request.await;
            (out, WARNINGS.with(RefCell::take))
        })
        .await
}

/// Adds a warning to the current request; the same text twice is sent once
/// (an update retried after a conflict finds the same things again).
/// Outside a request it is dropped.
pub fn add(text: String) {
    let _ = WARNINGS.try_with(|warnings| {
        let mut warnings = warnings.borrow_mut();
        if !warnings.contains(&text) {
            warnings.push(text);
        }
    });
}

/// Puts `warnings` on `response`, one `Warning` header each.
pub fn attach(response: &mut Response, warnings: Vec<String>) {
    for text in warnings {
        if let Some(value) = header_value(&text) {
            response.headers_mut().append(WARNING, value);
        }
    }
}

/// `299 - "<text>"`, with `"` and `\` escaped and anything a header cannot
/// carry replaced.
fn header_value(text: &str) -> Option<HeaderValue> {
    let mut quoted = String::with_capacity(text.len() + 10);
    quoted.push_str("299 - \"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            ' '..='~' => quoted.push(c),
            _ => quoted.push('?'),
        }
    }
    quoted.push('"');
    HeaderValue::from_str(&quoted).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn warnings_are_collected_once_and_quoted() {
        let ((), warnings) = collect(async {
            add("unknown field \"spec.foo\"".into());
            add("unknown field \"spec.foo\"".into());
            add("second".into());
        })
        .await;
        assert_eq!(warnings, vec!["unknown field \"spec.foo\"", "second"]);
        assert_eq!(
            header_value(&warnings[0]).unwrap(),
            r#"299 - "unknown field \"spec.foo\"""#
        );
        // Outside a request nothing happens.
        add("lost".into());
    }
}
