//! Name and string formats, with kube-apiserver's messages: RFC 1123 and
//! RFC 1035 names, wildcard subdomains, path segments, IANA port names,
//! environment variable names and config keys.

use super::{LABEL_MAX, SUBDOMAIN_MAX};

const LABEL_REGEX: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const SUBDOMAIN_REGEX: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// Kubernetes' `RegexError`: the message, examples and the pattern.
pub(super) fn regex_error(message: &str, regex: &str, examples: &[&str]) -> String {
    let mut out = format!("{message} (");
    if !examples.is_empty() {
        out.push_str("e.g. ");
        for (i, example) in examples.iter().enumerate() {
            if i > 0 {
                out.push_str(" or ");
            }
            out.push_str(&format!("'{example}', "));
        }
    }
    out.push_str(&format!("regex used for validation is '{regex}')"));
    out
}

pub(super) fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

pub(super) fn qualified_regex_error() -> String {
    regex_error(
        "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]",
        &["MyName", "my.name", "123-abc"],
    )
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn starts_and_ends(s: &str, f: fn(char) -> bool) -> bool {
    s.chars().next().is_some_and(f) && s.chars().next_back().is_some_and(f)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
pub(super) fn matches_label(s: &str) -> bool {
    s.chars().all(|c| is_lower_alnum(c) || c == '-') && starts_and_ends(s, is_lower_alnum)
}

/// Labels joined by dots.
pub(super) fn matches_subdomain(s: &str) -> bool {
    s.split('.').all(matches_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
pub(super) fn matches_qualified(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && starts_and_ends(s, |c| c.is_ascii_alphanumeric())
}

pub(super) fn dns1123_label_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > LABEL_MAX {
        out.push(max_len(LABEL_MAX));
    }
    if !matches_label(s) {
        if matches_subdomain(s) {
            out.push("must not contain dots".to_string());
        } else {
            out.push(regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                LABEL_REGEX,
                &["my-name", "123-abc"],
            ));
        }
    }
    out
}

pub(super) fn dns1123_subdomain_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        out.push(max_len(SUBDOMAIN_MAX));
    }
    if !matches_subdomain(s) {
        out.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            SUBDOMAIN_REGEX,
            &["example.com"],
        ));
    }
    out
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`: an RFC 1123 label that starts with a letter.
pub(super) fn dns1035_label_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > LABEL_MAX {
        out.push(max_len(LABEL_MAX));
    }
    if !(matches_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        out.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            "[a-z]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "abc-123"],
        ));
    }
    out
}

pub(super) fn wildcard_subdomain_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        out.push(max_len(SUBDOMAIN_MAX));
    }
    if !s.strip_prefix("*.").is_some_and(matches_subdomain) {
        out.push(regex_error(
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character",
            &format!("\\*\\.{SUBDOMAIN_REGEX}"),
            &["*.example.com"],
        ));
    }
    out
}

pub(super) fn path_segment_problems(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .into_iter()
        .filter(|bad| s.contains(bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// An IANA service name (`http`, `metrics-2`), the form of named ports.
pub(super) fn port_name_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push(max_len(15));
    }
    if s.is_empty() || !s.chars().all(|c| is_lower_alnum(c) || c == '-') {
        out.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".to_string());
    }
    out
}

/// `[-._a-zA-Z][-._a-zA-Z0-9]*`
pub(super) fn env_var_name_problems(s: &str) -> Vec<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let ok = s.chars().all(allowed) && s.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if ok {
        return Vec::new();
    }
    vec![regex_error(
        "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
        "[-._a-zA-Z][-._a-zA-Z0-9]*",
        &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
    )]
}

/// Keys of ConfigMap and Secret data: they become file names in volumes.
pub(super) fn config_key_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        out.push(max_len(SUBDOMAIN_MAX));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if s.is_empty() || !s.chars().all(allowed) {
        out.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." || s == ".." {
        out.push(format!("must not be '{s}'"));
    } else if s.starts_with("..") {
        out.push("must not start with '..'".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_are_iana_service_names() {
        assert!(port_name_problems("http").is_empty());
        assert!(port_name_problems("metrics-2").is_empty());
        assert_eq!(
            port_name_problems("8080"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            port_name_problems("a--b"),
            vec!["must contain consecutive hyphens".replace("must", "must not")]
        );
        assert_eq!(
            port_name_problems("-ab"),
            vec!["must not begin or end with a hyphen"]
        );
        assert_eq!(
            port_name_problems("Http"),
            vec!["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]
        );
        assert_eq!(
            port_name_problems("a-very-long-port-name"),
            vec!["must be no more than 15 characters"]
        );
    }
}
