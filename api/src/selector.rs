//! Label and field selectors, with kube-apiserver's grammar, validation,
//! error messages and matching rules (`k8s.io/apimachinery/pkg/labels` and
//! `pkg/fields`).
//!
//! This module owns the `labelSelector` and `fieldSelector` query parameters,
//! the `metav1.LabelSelector` objects of workload specs, the equality maps of
//! `Service.spec.selector`, and the canonical string form written to
//! `Scale.status.selector`. It knows nothing of which fields a resource
//! supports: callers look at [`FieldSelector::fields`] for that.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

/// A selector that could not be parsed or built. The message is the one
/// kube-apiserver gives, e.g.
/// `unable to parse requirement: found '(', expected: identifier`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// How a label [`Requirement`] relates its key to its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key in (a,b)`: the label is present and has one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key=a`.
    Equals,
    /// `key==a`: the same as [`Operator::Equals`], but kept apart so the
    /// selector prints back the way it was written.
    DoubleEquals,
    /// `key!=a`: the label is absent or has another value.
    NotEquals,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>1`: the label is present and is an integer greater than the value.
    GreaterThan,
    /// `key<1`: the label is present and is an integer less than the value.
    LessThan,
}

/// One term of a [`LabelSelector`]; the terms are ANDed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// As given; the parser hands them over sorted and without duplicates,
    /// a `metav1.LabelSelector` in its own order.
    values: Vec<String>,
}

impl Requirement {
    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values: none for `Exists`/`DoesNotExist`, one for the exact and
    /// integer operators, one or more for `in`/`notin`.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement; `get(key)` returns the
    /// label value if present.
    pub fn matches<'v>(&self, get: impl Fn(&str) -> Option<&'v str>) -> bool {
        let label = get(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                label.is_some_and(|v| self.has_value(v))
            }
            Operator::NotIn | Operator::NotEquals => label.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = label.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }

    fn has_value(&self, value: &str) -> bool {
        self.values.iter().any(|v| v == value)
    }

    /// Checks a requirement as `labels.NewRequirement` does, with its field
    /// paths (`key`, `values[0][app]`) and aggregate formatting.
    fn new(key: String, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errs = Vec::new();
        if let Err(detail) = validate_qualified_name(&key) {
            errs.push(invalid("key", &go_quote(&key), &detail));
        }
        let shape = match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                Some("for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                Some("exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                Some("values set must be empty for exists and does not exist")
            }
            Operator::GreaterThan | Operator::LessThan if values.len() != 1 => {
                Some("for 'Gt', 'Lt' operators, exactly one value is required")
            }
            _ => None,
        };
        if let Some(detail) = shape {
            errs.push(invalid("values", &go_json_strings(&values), detail));
        }
        if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(invalid(
                        &format!("values[{i}]"),
                        &go_quote(v),
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            if let Err(detail) = validate_label_value(v) {
                errs.push(invalid(
                    &format!("values[{i}][{key}]"),
                    &go_quote(v),
                    &detail,
                ));
            }
        }
        if errs.is_empty() {
            Ok(Self {
                key,
                operator,
                values,
            })
        } else {
            Err(aggregate(errs))
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_char('!')?;
        }
        f.write_str(&self.key)?;
        let (op, open, close) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", "", ""),
            Operator::DoubleEquals => ("==", "", ""),
            Operator::NotEquals => ("!=", "", ""),
            Operator::GreaterThan => (">", "", ""),
            Operator::LessThan => ("<", "", ""),
            Operator::In => (" in ", "(", ")"),
            Operator::NotIn => (" notin ", "(", ")"),
        };
        f.write_str(op)?;
        f.write_str(open)?;
        // Values print sorted (duplicates kept), without reordering the
        // requirement itself, as Kubernetes does.
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        f.write_str(close)
    }
}

/// A label selector: requirements that must all hold.
///
/// The default (no requirements) matches everything; [`LabelSelector::nothing`]
/// matches nothing, which is what a null `metav1.LabelSelector` means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key (stably), as Kubernetes sorts them.
    requirements: Vec<Requirement>,
    /// `labels.Nothing()`: matches no label set.
    nothing: bool,
}

impl LabelSelector {
    /// Parses the query-string form: `a=b,c!=d,e in (x,y),f notin (z),g,!h`,
    /// also `==`, and `a>1`/`a<1` (integer comparisons). An empty or blank
    /// string matches everything.
    ///
    /// As in Kubernetes, `a in ()` is accepted and means `a in ("")`, and the
    /// requirements are sorted by key.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Parser::new(s).parse().map_err(SelectorError)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON object
    /// (`{"matchLabels": {..}, "matchExpressions": [{"key", "operator",
    /// "values"}]}`) as `metav1.LabelSelectorAsSelector` does.
    ///
    /// An object with no labels and no expressions (`{}`) matches everything.
    /// JSON `null` (a nil selector) gives [`LabelSelector::nothing`], which
    /// matches no object: callers that require a selector (Deployment,
    /// ReplicaSet, StatefulSet...) should reject a missing one in validation
    /// before getting here.
    pub fn from_label_selector(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(obj) => obj,
            other => {
                return Err(SelectorError(format!(
                    "label selector must be an object, got {other}"
                )));
            }
        };
        let labels = match obj.get("matchLabels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(SelectorError("matchLabels must be an object".into())),
        };
        let exprs: &[Value] = match obj.get("matchExpressions") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(_) => return Err(SelectorError("matchExpressions must be an array".into())),
        };
        let mut requirements = Vec::new();
        for (key, value) in labels.into_iter().flatten() {
            let Some(value) = value.as_str() else {
                return Err(SelectorError(format!(
                    "matchLabels[{key}] must be a string"
                )));
            };
            let r = Requirement::new(key.clone(), Operator::Equals, vec![value.to_string()])
                .map_err(SelectorError)?;
            requirements.push(r);
        }
        for (i, expr) in exprs.iter().enumerate() {
            requirements.push(expression(i, expr)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Builds an equality selector from a map (`Service.spec.selector`), as
    /// `labels.SelectorFromValidatedSet` does: no validation, and an empty
    /// map matches everything (callers decide what an empty map means). A
    /// value that is not a string is compared as its JSON text.
    pub fn from_map(m: &Map<String, Value>) -> Self {
        let mut requirements: Vec<Requirement> = m
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.as_str().map_or_else(|| v.to_string(), str::to_owned)],
            })
            .collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            requirements,
            nothing: false,
        }
    }

    /// A selector that matches nothing (`labels.Nothing()`). It prints as the
    /// empty string, like Kubernetes', so do not round-trip it through text.
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Whether the selector does not restrict anything (matches every label
    /// set). False for [`LabelSelector::nothing`].
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a label set matches; `get(key)` returns the label value if
    /// present.
    pub fn matches<'v>(&self, get: impl Fn(&str) -> Option<&'v str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(&get))
    }

    /// Matches against an object's `metadata.labels` (absent labels = no
    /// labels; a label whose value is not a string counts as absent).
    pub fn matches_object(&self, object: &Value) -> bool {
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.matches(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }
}

/// The canonical string form, requirements sorted by key and values sorted:
/// `a in (x,y),!b,c=d`. This is what goes into `Scale.status.selector`.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One `matchExpressions[i]` entry of a `metav1.LabelSelector`.
fn expression(i: usize, expr: &Value) -> Result<Requirement, SelectorError> {
    let shape = |what: &str| SelectorError(format!("matchExpressions[{i}].{what}"));
    let Some(expr) = expr.as_object() else {
        return Err(SelectorError(format!(
            "matchExpressions[{i}] must be an object"
        )));
    };
    let text = |field: &str| match expr.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(shape(&format!("{field} must be a string"))),
    };
    let key = text("key")?;
    let operator = match text("operator")? {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err(SelectorError(format!(
                "{} is not a valid label selector operator",
                go_quote(other)
            )));
        }
    };
    let values = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| shape("values must be an array of strings"))?,
        Some(_) => return Err(shape("values must be an array of strings")),
    };
    Requirement::new(key.to_string(), operator, values).map_err(SelectorError)
}

// ---------------------------------------------------------------------------
// Label selector lexer and parser.
//
// This follows the byte-level lexer of `pkg/labels` closely, quirks included,
// because the error messages and the corner cases (`in ()`, `in` as a key or
// value, a NUL byte ending the input) are part of what clients see.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    OpenPar,
    ClosePar,
    Comma,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    Identifier,
}

/// Where the parser is: `in` and `notin` are operators after a key, but
/// plain identifiers where a key or a value is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol_token(s: &[u8]) -> Option<Token> {
    Some(match s {
        b"(" => Token::OpenPar,
        b")" => Token::ClosePar,
        b"," => Token::Comma,
        b"!" => Token::Not,
        b"=" => Token::Equals,
        b"==" => Token::DoubleEquals,
        b"!=" => Token::NotEquals,
        b">" => Token::GreaterThan,
        b"<" => Token::LessThan,
        _ => return None,
    })
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The next byte, or 0 at the end. A NUL byte also reads as 0 (and is
    /// consumed), which is how Kubernetes treats it.
    fn read(&mut self) -> u8 {
        match self.s.as_bytes().get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn lex(&mut self) -> (Token, &'a str) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            return (Token::End, "");
        }
        self.pos -= 1;
        if is_special(ch) {
            self.symbol()
        } else {
            self.identifier_or_keyword()
        }
    }

    /// The longest run of special characters that is a token (`!=`, `==`).
    fn symbol(&mut self) -> (Token, &'a str) {
        let start = self.pos;
        let mut found = None;
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special(ch) {
                self.pos -= 1;
                break;
            }
            match symbol_token(&self.s.as_bytes()[start..self.pos]) {
                Some(tok) => found = Some((tok, self.pos)),
                None => {
                    self.pos -= 1;
                    break;
                }
            }
        }
        // Every special character is a token by itself, so `found` is set.
        match found {
            Some((tok, end)) => (tok, &self.s[start..end]),
            None => (Token::End, ""),
        }
    }

    fn identifier_or_keyword(&mut self) -> (Token, &'a str) {
        let start = self.pos;
        let lit = loop {
            let end = self.pos;
            let ch = self.read();
            if ch == 0 {
                break &self.s[start..end];
            }
            if is_special(ch) || is_whitespace(ch) {
                self.pos = end;
                break &self.s[start..end];
            }
        };
        let tok = match lit {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier,
        };
        (tok, lit)
    }
}

struct Parser<'a> {
    items: Vec<(Token, &'a str)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        let mut lexer = Lexer { s, pos: 0 };
        let mut items = Vec::new();
        loop {
            let item = lexer.lex();
            items.push(item);
            if item.0 == Token::End {
                break;
            }
        }
        Self { items, pos: 0 }
    }

    fn lookahead(&self, ctx: Context) -> (Token, &'a str) {
        // The token list always ends with `End`, and nothing reads past it.
        let (tok, lit) = self.items[self.pos.min(self.items.len() - 1)];
        match tok {
            Token::In | Token::NotIn if ctx == Context::Values => (Token::Identifier, lit),
            _ => (tok, lit),
        }
    }

    fn consume(&mut self, ctx: Context) -> (Token, &'a str) {
        let item = self.lookahead(ctx);
        self.pos += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (tok, lit) = self.consume(Context::Values);
                    match tok {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (next, lit) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::Not {
                                return Err(format!(
                                    "found '{lit}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{lit}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.key_and_inferred_operator()?;
        if let Some(op) = inferred {
            return Requirement::new(key.to_string(), op, Vec::new());
        }
        let op = self.operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.values()?,
            _ => self.exact_value()?,
        };
        Requirement::new(key.to_string(), op, values.into_iter().collect())
    }

    /// The key, and `Exists`/`DoesNotExist` when the requirement is just
    /// `key` or `!key` (a `!` always makes it `DoesNotExist`).
    fn key_and_inferred_operator(&mut self) -> Result<(&'a str, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::Not {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        if let Err(detail) = validate_qualified_name(lit) {
            // The parser validates the key with no field path, which Go
            // prints as `<nil>`.
            return Err(invalid("<nil>", &go_quote(lit), &detail));
        }
        let (next, _) = self.lookahead(Context::Values);
        if op.is_none() && matches!(next, Token::End | Token::Comma) {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    /// `(a,b,c)`; empty members are the empty value, and `()` is `("")`.
    fn values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let set = self.identifiers()?;
                // `identifiers` only returns before a `)`.
                if self.consume(Context::Values).0 != Token::ClosePar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Token::ClosePar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn identifiers(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit.to_string());
                    let (next, lit) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => {}
                        Token::ClosePar => return Ok(set),
                        _ => return Err(format!("found '{lit}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosePar => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<`; nothing before a
    /// `,` or the end is the empty value.
    fn exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        if matches!(self.lookahead(Context::Values).0, Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(BTreeSet::from([lit.to_string()]))
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------
// Label key and value validation (`k8s.io/apimachinery/pkg/util/validation`).

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_EXAMPLES: &[&str] = &["MyName", "my.name", "123-abc"];
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const DNS_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const DNS_SUBDOMAIN_MAX: usize = 253;

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        let _ = write!(s, "'{e}', ");
    }
    let _ = write!(s, "regex used for validation is '{fmt}')");
    s
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, the name part of a label key
/// and any non-empty label value.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// `validation.IsQualifiedName`: `[prefix/]name`, the detail messages joined
/// with `; `.
fn validate_qualified_name(value: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > DNS_SUBDOMAIN_MAX {
                    errs.push(format!("prefix part {}", max_len_error(DNS_SUBDOMAIN_MAX)));
                }
                if !prefix.split('.').all(is_dns1123_label) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(DNS_SUBDOMAIN_MSG, DNS_SUBDOMAIN_FMT, &["example.com"])
                    ));
                }
            }
            *name
        }
        _ => {
            return Err(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' \
                 (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    QUALIFIED_NAME_EXAMPLES
                )
            ));
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > NAME_MAX {
        errs.push(format!("name part {}", max_len_error(NAME_MAX)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                QUALIFIED_NAME_EXAMPLES
            )
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// `validation.IsValidLabelValue`.
fn validate_label_value(value: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// A `field.Invalid` error as Go prints it: `path: Invalid value: "v": detail`.
fn invalid(path: &str, bad_value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {bad_value}: {detail}")
}

/// An aggregate of field errors: duplicates dropped, one message alone, more
/// in brackets separated by `, `.
fn aggregate(errs: Vec<String>) -> String {
    let mut seen = BTreeSet::new();
    let unique: Vec<String> = errs
        .into_iter()
        .filter(|e| seen.insert(e.clone()))
        .collect();
    if unique.len() == 1 {
        unique.into_iter().collect()
    } else {
        format!("[{}]", unique.join(", "))
    }
}

/// A string as Go's `%q` prints it (close enough: Go's printable-rune tables
/// are approximated by Rust's control, whitespace and format checks).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c == ' ' || !(c.is_control() || c.is_whitespace() || is_format_char(c)) => {
                out.push(c);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// The common Unicode format (Cf) and private-use characters, which Go does
/// not print as they are.
fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xe000..=0xf8ff
        | 0xfeff | 0xfff9..=0xfffb | 0xf0000..)
}

/// A `[]string` as Go's `encoding/json` renders it inside an error (nil is
/// `null`; `<`, `>`, `&` and the line separators are escaped).
fn go_json_strings(values: &[String]) -> String {
    if values.is_empty() {
        return "null".to_string();
    }
    let json = Value::from(values.to_vec()).to_string();
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

// ---------------------------------------------------------------------------
// Field selectors.

/// How a field term compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    /// Unescaped.
    value: String,
}

/// A field selector: `metadata.name=x,spec.nodeName!=` terms that must all
/// hold. Fields are compared as strings; an absent field reads as "".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// In the order Kubernetes keeps them: the raw terms sorted as strings.
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=,status.phase==Running`.
    /// Operators are `=`, `==` and `!=`; values may contain the escapes
    /// `\,`, `\=` and `\\`, and nothing is trimmed (`a = b` compares field
    /// `"a "` with `" b"`). An empty string matches everything, and so does a
    /// term with neither field nor value (`=`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_term(part) else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(raw)?;
            if field.is_empty() && value.is_empty() {
                continue;
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(Self { terms })
    }

    /// Whether the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The field paths the selector uses, in order, possibly repeated (so the
    /// caller can reject unknown fields with 400).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// The value `field` must equal, if a `field=value` term requires one
    /// (to narrow a list or watch to one name, say).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.op == FieldOp::Equals && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// Whether an object matches; `get(field)` returns the field's value as a
    /// string ("" when absent).
    pub fn matches(&self, get: impl Fn(&str) -> String) -> bool {
        self.terms.iter().all(|t| {
            let have = get(&t.field);
            match t.op {
                FieldOp::Equals => have == t.value,
                FieldOp::NotEquals => have != t.value,
            }
        })
    }
}

/// `field=value,field!=value` with values escaped; `==` prints as `=`.
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            let op = match t.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            write!(f, "{}{op}", t.field)?;
            for c in t.value.chars() {
                if matches!(c, '\\' | ',' | '=') {
                    f.write_char('\\')?;
                }
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Splits on commas not escaped by a backslash; the escapes stay in place.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, then `==`, then `=` at each
/// position); the field part has no escapes.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    let b = term.as_bytes();
    (0..b.len()).find_map(|i| match &b[i..] {
        [b'!', b'=', ..] => Some((&term[..i], FieldOp::NotEquals, &term[i + 2..])),
        [b'=', b'=', ..] => Some((&term[..i], FieldOp::Equals, &term[i + 2..])),
        [b'=', ..] => Some((&term[..i], FieldOp::Equals, &term[i + 1..])),
        _ => None,
    })
}

/// Undoes `\\`, `\,` and `\=`; any other escape, a trailing backslash or a
/// bare `=` or `,` is an error.
fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )));
            }
            c => out.push(c),
        }
    }
    if escaped {
        return Err(SelectorError(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel_matches(sel: &str, pairs: &[(&str, &str)]) -> bool {
        let l = labels(pairs);
        LabelSelector::parse(sel)
            .unwrap()
            .matches(|k| l.get(k).map(String::as_str))
    }

    fn parse_err(sel: &str) -> String {
        LabelSelector::parse(sel).unwrap_err().0
    }

    const NAME_REGEX_ERR: &str = "name part must consist of alphanumeric characters, '-', '_' or \
        '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or \
        'my.name',  or '123-abc', regex used for validation is \
        '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const VALUE_REGEX_ERR: &str = "a valid label must be an empty string or consist of \
        alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
        character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
        '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    #[test]
    fn empty_and_blank_match_everything() {
        for s in ["", "   ", "\t\n"] {
            let sel = LabelSelector::parse(s).unwrap();
            assert!(sel.is_empty());
            assert_eq!(sel, LabelSelector::default());
            assert!(sel.matches(|_| None));
            assert_eq!(sel.to_string(), "");
        }
    }

    #[test]
    fn equals_and_double_equals() {
        assert!(sel_matches("app=web", &[("app", "web")]));
        assert!(!sel_matches("app=web", &[("app", "db")]));
        assert!(!sel_matches("app=web", &[]));
        assert!(sel_matches("app==web", &[("app", "web")]));
        assert!(!sel_matches("app==web", &[("app", "db")]));
        // An empty value matches only an empty label, not a missing one.
        assert!(sel_matches("app=", &[("app", "")]));
        assert!(!sel_matches("app=", &[]));
        let sel = LabelSelector::parse("app==web").unwrap();
        assert_eq!(sel.requirements()[0].operator(), Operator::DoubleEquals);
        assert_eq!(sel.to_string(), "app==web");
    }

    #[test]
    fn not_equals_matches_missing_key() {
        assert!(sel_matches("app!=web", &[("app", "db")]));
        assert!(!sel_matches("app!=web", &[("app", "web")]));
        assert!(sel_matches("app!=web", &[]));
        assert!(sel_matches("app!=web", &[("other", "web")]));
    }

    #[test]
    fn in_and_notin() {
        assert!(sel_matches("env in (prod,qa)", &[("env", "qa")]));
        assert!(!sel_matches("env in (prod,qa)", &[("env", "dev")]));
        assert!(!sel_matches("env in (prod,qa)", &[]));
        assert!(sel_matches("env notin (prod,qa)", &[("env", "dev")]));
        assert!(!sel_matches("env notin (prod,qa)", &[("env", "prod")]));
        assert!(sel_matches("env notin (prod,qa)", &[]));
    }

    #[test]
    fn exists_and_does_not_exist() {
        assert!(sel_matches("app", &[("app", "")]));
        assert!(!sel_matches("app", &[]));
        assert!(sel_matches("!app", &[]));
        assert!(!sel_matches("!app", &[("app", "x")]));
        let sel = LabelSelector::parse("a,!b").unwrap();
        let ops: Vec<_> = sel
            .requirements()
            .iter()
            .map(Requirement::operator)
            .collect();
        assert_eq!(ops, [Operator::Exists, Operator::DoesNotExist]);
    }

    #[test]
    fn greater_and_less_than() {
        assert!(sel_matches("n>1", &[("n", "2")]));
        assert!(!sel_matches("n>1", &[("n", "1")]));
        assert!(sel_matches("n<10", &[("n", "9")]));
        assert!(!sel_matches("n<10", &[("n", "10")]));
        assert!(sel_matches("n<10", &[("n", "-5")]));
        assert!(sel_matches("n > 007", &[("n", "8")]));
        // Only labels that are integers take part; a missing one never matches.
        assert!(!sel_matches("n>1", &[("n", "two")]));
        assert!(!sel_matches("n>1", &[("n", "1.5")]));
        assert!(!sel_matches("n<1", &[]));
        assert!(!sel_matches("n>1", &[("n", "99999999999999999999")]));
        assert_eq!(LabelSelector::parse("n>1").unwrap().to_string(), "n>1");
        assert_eq!(LabelSelector::parse("n<1").unwrap().to_string(), "n<1");
    }

    #[test]
    fn whitespace_around_tokens() {
        let sel =
            LabelSelector::parse("  a = b ,\tc in ( x , y ) ,\n! d , e notin(z),f!=g  ").unwrap();
        assert_eq!(sel.to_string(), "a=b,c in (x,y),!d,e notin (z),f!=g");
        let compact = LabelSelector::parse("a=b,c in (x,y),!d,e notin (z),f!=g").unwrap();
        assert_eq!(sel, compact);
    }

    #[test]
    fn several_requirements_are_anded() {
        let sel = "app=web,tier in (front,back),!legacy";
        assert!(sel_matches(sel, &[("app", "web"), ("tier", "front")]));
        assert!(!sel_matches(
            sel,
            &[("app", "web"), ("tier", "front"), ("legacy", "1")]
        ));
        assert!(!sel_matches(sel, &[("app", "web"), ("tier", "mid")]));
    }

    #[test]
    fn keywords_are_identifiers_where_a_key_or_value_goes() {
        assert!(sel_matches("in=notin", &[("in", "notin")]));
        assert!(sel_matches("notin in (in)", &[("notin", "in")]));
        assert!(sel_matches("in", &[("in", "x")]));
    }

    #[test]
    fn prefixed_keys() {
        assert!(sel_matches(
            "app.kubernetes.io/name=web",
            &[("app.kubernetes.io/name", "web")]
        ));
        assert!(LabelSelector::parse("example.com/My_Name.x-1").is_ok());
    }

    #[test]
    fn empty_members_of_a_value_set() {
        // Kubernetes reads `()` as the set holding only the empty value.
        let sel = LabelSelector::parse("a in ()").unwrap();
        assert_eq!(sel.requirements()[0].values(), [""]);
        assert!(sel_matches("a in ()", &[("a", "")]));
        assert!(!sel_matches("a in ()", &[("a", "x")]));
        assert!(!sel_matches("a in ()", &[]));
        assert!(sel_matches("a notin ()", &[("a", "x")]));
        let sel = LabelSelector::parse("a in (x,,y)").unwrap();
        assert_eq!(sel.requirements()[0].values(), ["", "x", "y"]);
        assert_eq!(sel.to_string(), "a in (,x,y)");
        let sel = LabelSelector::parse("a in (,)").unwrap();
        assert_eq!(sel.requirements()[0].values(), [""]);
        let sel = LabelSelector::parse("a in (y,x,y)").unwrap();
        assert_eq!(sel.requirements()[0].values(), ["x", "y"]);
    }

    #[test]
    fn display_sorts_by_key() {
        let sel = LabelSelector::parse("z=1,a in (y,x),!m,b").unwrap();
        assert_eq!(sel.to_string(), "a in (x,y),b,!m,z=1");
        assert_eq!(LabelSelector::parse(&sel.to_string()).unwrap(), sel);
    }

    #[test]
    fn syntax_errors() {
        let cases = [
            (
                "a=(",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "a in (x",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "a in (x,",
                "unable to parse requirement: found '', expected: ',', or identifier",
            ),
            (
                "a in (x y)",
                "unable to parse requirement: found 'y', expected: ',' or ')'",
            ),
            (
                "a in x",
                "unable to parse requirement: found 'x' expected: '('",
            ),
            (
                "a in (=)",
                "unable to parse requirement: found '=', expected: ',', ')' or identifier",
            ),
            (
                "a in",
                "unable to parse requirement: found '' expected: '('",
            ),
            (
                "in ()",
                "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "=b",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            (
                ",a",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            (
                "!=a",
                "found '!=', expected: !, identifier, or 'end of string'",
            ),
            (
                "!!a",
                "unable to parse requirement: found '!', expected: identifier",
            ),
            ("a=b,", "found '', expected: identifier after ','"),
            ("a=b,,c", "found ',', expected: identifier after ','"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a=b)", "found ')', expected: ',' or 'end of string'"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            (
                "a===b",
                "unable to parse requirement: found '=', expected: identifier",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_err(input), want, "input {input:?}");
        }
    }

    #[test]
    fn bad_keys() {
        assert_eq!(
            parse_err("a@b=c"),
            format!("unable to parse requirement: <nil>: Invalid value: \"a@b\": {NAME_REGEX_ERR}")
        );
        assert_eq!(
            parse_err("-a"),
            format!("unable to parse requirement: <nil>: Invalid value: \"-a\": {NAME_REGEX_ERR}")
        );
        let long = "k".repeat(64);
        assert_eq!(
            parse_err(&long),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"{long}\": \
                 name part must be no more than 63 characters"
            )
        );
        assert_eq!(
            parse_err("/a"),
            "unable to parse requirement: <nil>: Invalid value: \"/a\": \
             prefix part must be non-empty"
        );
        assert_eq!(
            parse_err("a/"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"a/\": \
                 name part must be non-empty; {NAME_REGEX_ERR}"
            )
        );
        assert_eq!(
            parse_err("Example.com/a"),
            "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part \
             a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert!(parse_err("a/b/c").starts_with(
            "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must"
        ));
        assert!(parse_err("a/b/c").ends_with(
            "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
        assert!(parse_err("ключ").contains("Invalid value: \"ключ\""));
        assert!(parse_err("a\u{1}b").contains("Invalid value: \"a\\x01b\""));
        assert!(LabelSelector::parse(&format!("{}.com/a", "d".repeat(250))).is_err());
    }

    #[test]
    fn bad_values() {
        let long = "v".repeat(64);
        assert_eq!(
            parse_err(&format!("a={long}")),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"{long}\": \
                 must be no more than 63 characters"
            )
        );
        assert!(LabelSelector::parse(&format!("a={}", "v".repeat(63))).is_ok());
        assert_eq!(
            parse_err("a=-x"),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"-x\": {VALUE_REGEX_ERR}"
            )
        );
        // Several bad values are aggregated in brackets.
        assert_eq!(
            parse_err("a in (-x,ok,y_)"),
            format!(
                "unable to parse requirement: [values[0][a]: Invalid value: \"-x\": \
                 {VALUE_REGEX_ERR}, values[2][a]: Invalid value: \"y_\": {VALUE_REGEX_ERR}]"
            )
        );
    }

    #[test]
    fn integer_operators_need_an_integer() {
        assert_eq!(
            parse_err("a>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": \
             for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            parse_err("a<"),
            "unable to parse requirement: values[0]: Invalid value: \"\": \
             for 'Gt', 'Lt' operators, the value must be an integer"
        );
        // Signs are not allowed in label values.
        assert_eq!(
            parse_err("a>-1"),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"-1\": {VALUE_REGEX_ERR}"
            )
        );
        assert!(parse_err("a>(1)").contains("found '(', expected: identifier"));
    }

    #[test]
    fn nul_byte_ends_input_at_a_token_boundary() {
        assert_eq!(
            LabelSelector::parse("a=b, \0c").unwrap_err().0,
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            LabelSelector::parse("a=b \0 c=d").unwrap().to_string(),
            "a=b"
        );
        // Right after a symbol or inside a word, the NUL is only a separator.
        assert_eq!(
            LabelSelector::parse("a=b,\0c").unwrap().to_string(),
            "a=b,c"
        );
        assert_eq!(LabelSelector::parse("a\0=b").unwrap().to_string(), "a=b");
    }

    #[test]
    fn from_label_selector_combines_labels_and_expressions() {
        let v = json!({
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["qa", "prod"]},
                {"key": "track", "operator": "NotIn", "values": ["canary"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []}
            ]
        });
        let sel = LabelSelector::from_label_selector(&v).unwrap();
        assert_eq!(
            sel.to_string(),
            "app=web,env in (prod,qa),!legacy,team,tier=front,track notin (canary)"
        );
        // Values keep their given order inside; only the text is sorted.
        let env = &sel.requirements()[1];
        assert_eq!(env.values(), ["qa", "prod"]);
        let base = [
            ("app", "web"),
            ("tier", "front"),
            ("env", "qa"),
            ("team", "a"),
        ];
        assert!(sel_matches_sel(&sel, &base));
        let mut canary = base.to_vec();
        canary.push(("track", "canary"));
        assert!(!sel_matches_sel(&sel, &canary));
        let mut legacy = base.to_vec();
        legacy.push(("legacy", "yes"));
        assert!(!sel_matches_sel(&sel, &legacy));
        assert!(!sel_matches_sel(&sel, &base[..3]));
        let round = LabelSelector::parse(&sel.to_string()).unwrap();
        assert_eq!(round.to_string(), sel.to_string());
    }

    fn sel_matches_sel(sel: &LabelSelector, pairs: &[(&str, &str)]) -> bool {
        let l = labels(pairs);
        sel.matches(|k| l.get(k).map(String::as_str))
    }

    #[test]
    fn from_label_selector_empty_and_null() {
        for v in [
            json!({}),
            json!({"matchLabels": {}, "matchExpressions": []}),
        ] {
            let sel = LabelSelector::from_label_selector(&v).unwrap();
            assert!(sel.is_empty());
            assert!(sel.matches(|_| None));
        }
        let nothing = LabelSelector::from_label_selector(&Value::Null).unwrap();
        assert_eq!(nothing, LabelSelector::nothing());
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(|_| None));
        assert!(!nothing.matches_object(&json!({"metadata": {"labels": {"a": "b"}}})));
        assert_eq!(nothing.to_string(), "");
    }

    #[test]
    fn from_label_selector_errors() {
        let err = |v: Value| LabelSelector::from_label_selector(&v).unwrap_err().0;
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})),
            "\"Gt\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a"}]})),
            "\"\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})),
            "values: Invalid value: [\"x\"]: values set must be empty for exists and does not exist"
        );
        assert_eq!(
            err(json!({"matchLabels": {"a b": "x"}})),
            format!("key: Invalid value: \"a b\": {NAME_REGEX_ERR}")
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": "x y"}})),
            format!("values[0][a]: Invalid value: \"x y\": {VALUE_REGEX_ERR}")
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "", "operator": "In", "values": ["<"]}]})),
            format!(
                "[key: Invalid value: \"\": name part must be non-empty; {NAME_REGEX_ERR}, \
                 values[0][]: Invalid value: \"<\": {VALUE_REGEX_ERR}]"
            )
        );
        assert!(err(json!([])).contains("must be an object"));
        assert!(err(json!({"matchLabels": []})).contains("matchLabels"));
        assert!(err(json!({"matchLabels": {"a": 1}})).contains("matchLabels[a]"));
        assert!(err(json!({"matchExpressions": {}})).contains("matchExpressions"));
        assert!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}))
                .contains("values must be an array of strings")
        );
    }

    #[test]
    fn from_map_is_an_equality_selector() {
        let m = json!({"tier": "front", "app": "web"});
        let sel = LabelSelector::from_map(m.as_object().unwrap());
        assert_eq!(sel.to_string(), "app=web,tier=front");
        assert!(sel_matches_sel(
            &sel,
            &[("app", "web"), ("tier", "front"), ("x", "y")]
        ));
        assert!(!sel_matches_sel(&sel, &[("app", "web")]));
        let empty = LabelSelector::from_map(&Map::new());
        assert!(empty.is_empty());
        assert!(empty.matches(|_| None));
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let sel = LabelSelector::parse("app=web,!legacy").unwrap();
        assert!(sel.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!sel.matches_object(&json!({"metadata": {"labels": {"app": "db"}}})));
        assert!(!sel.matches_object(&json!({"metadata": {}})));
        assert!(!sel.matches_object(&json!({})));
        let not = LabelSelector::parse("app!=web").unwrap();
        assert!(not.matches_object(&json!({"metadata": {"name": "x"}})));
        assert!(not.matches_object(&json!({"metadata": {"labels": null}})));
        assert!(LabelSelector::default().matches_object(&json!({})));
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\n\t\u{7f}\u{0}"), r#""\n\t\x7f\x00""#);
        assert_eq!(go_quote("é\u{200b}\u{85}"), "\"é\\u200b\\u0085\"");
        assert_eq!(
            go_json_strings(&["<&>".into()]),
            r#"["\u003c\u0026\u003e"]"#
        );
    }

    #[test]
    fn field_selector_parses_and_matches() {
        let sel =
            FieldSelector::parse("metadata.name=x,spec.nodeName!=,status.phase==Running").unwrap();
        assert!(!sel.is_empty());
        assert_eq!(
            sel.fields().collect::<Vec<_>>(),
            ["metadata.name", "spec.nodeName", "status.phase"]
        );
        let obj = |name: &str, node: &str, phase: &str| {
            let m = BTreeMap::from([
                ("metadata.name", name.to_string()),
                ("spec.nodeName", node.to_string()),
                ("status.phase", phase.to_string()),
            ]);
            move |f: &str| m.get(f).cloned().unwrap_or_default()
        };
        assert!(sel.matches(obj("x", "n1", "Running")));
        assert!(!sel.matches(obj("x", "", "Running")));
        assert!(!sel.matches(obj("y", "n1", "Running")));
        assert!(!sel.matches(obj("x", "n1", "Pending")));
        assert_eq!(sel.requires_exact_match("metadata.name"), Some("x"));
        assert_eq!(sel.requires_exact_match("spec.nodeName"), None);
        assert_eq!(
            sel.to_string(),
            "metadata.name=x,spec.nodeName!=,status.phase=Running"
        );
    }

    #[test]
    fn field_selector_empty() {
        for s in ["", ",", ",,", "=", "!=", "==,"] {
            let sel = FieldSelector::parse(s).unwrap();
            assert!(sel.is_empty(), "{s:?}");
            assert!(sel.matches(|_| String::new()));
        }
    }

    #[test]
    fn field_selector_escapes() {
        let sel = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(sel.requires_exact_match("metadata.name"), Some(r"a,b=c\d"));
        assert!(sel.matches(|_| r"a,b=c\d".to_string()));
        assert_eq!(sel.to_string(), r"metadata.name=a\,b\=c\\d");
        // No trimming: spaces belong to the field and the value.
        let sel = FieldSelector::parse("a = b").unwrap();
        assert_eq!(sel.fields().collect::<Vec<_>>(), ["a "]);
        assert_eq!(sel.requires_exact_match("a "), Some(" b"));
        // A term with an empty field is kept (the caller rejects the field).
        let sel = FieldSelector::parse("=b").unwrap();
        assert_eq!(sel.fields().collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn field_selector_errors() {
        let err = |s: &str| FieldSelector::parse(s).unwrap_err().0;
        assert_eq!(err("a"), "invalid selector: 'a'; can't understand 'a'");
        assert_eq!(
            err("x=1,a!b"),
            "invalid selector: 'x=1,a!b'; can't understand 'a!b'"
        );
        assert_eq!(
            err(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            err("a=b=c"),
            "invalid field selector: unescaped character in value: ="
        );
        assert_eq!(
            err("a!==b"),
            "invalid field selector: unescaped character in value: ="
        );
        assert_eq!(
            err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
    }

    #[test]
    fn field_selector_terms_are_sorted() {
        let sel = FieldSelector::parse("spec.nodeName=n,metadata.name!=x").unwrap();
        assert_eq!(sel.to_string(), "metadata.name!=x,spec.nodeName=n");
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        let name = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?";
        let prefix = "[a-z0-9]([-a-z0-9]{0,4}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}";
        prop_oneof![
            3 => name.prop_map(String::from),
            1 => (prefix, name).prop_map(|(p, n)| format!("{p}/{n}")),
            1 => Just("in".to_string()),
            1 => Just("notin".to_string()),
        ]
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?".prop_map(String::from),
            1 => Just(String::new()),
            1 => Just("in".to_string()),
        ]
    }

    fn requirement_text() -> impl Strategy<Value = String> {
        let ws = "[ \t]{0,2}";
        (
            key_strategy(),
            0..9usize,
            prop::collection::vec(value_strategy(), 1..4),
            any::<u32>(),
            ws,
            ws,
        )
            .prop_map(|(key, op, mut values, n, a, b)| {
                // Empty member first and once: Kubernetes rejects `(x,,)`
                // and `(,,)`.
                values.sort();
                values.dedup();
                match op {
                    0 => format!("{a}{key}{b}={a}{}", values[0]),
                    1 => format!("{a}{key}{b}=={a}{}", values[0]),
                    2 => format!("{a}{key}{b}!={a}{}", values[0]),
                    3 => format!("{a}{key} in{b}({})", values.join(&format!("{a},{b}"))),
                    4 => format!("{a}{key} notin ({a}{}{b})", values.join(",")),
                    5 => format!("{a}{key}{b}"),
                    6 => format!("{a}!{b}{key}"),
                    7 => format!("{key}>{a}{n}"),
                    _ => format!("{key}{b}<{n}"),
                }
            })
    }

    proptest! {
        #[test]
        fn display_of_parsed_selector_parses_back_equal(
            reqs in prop::collection::vec(requirement_text(), 0..6)
        ) {
            let text = reqs.join(",");
            let sel = LabelSelector::parse(&text).unwrap();
            let shown = sel.to_string();
            let again = LabelSelector::parse(&shown).unwrap();
            prop_assert_eq!(&again, &sel);
            prop_assert_eq!(again.to_string(), shown);
        }

        #[test]
        fn arbitrary_input_never_panics_and_round_trips(
            text in "[a-c0-9 =!(),<>/.\\-_]{0,24}|in|notin|\\PC{0,12}"
        ) {
            if let Ok(sel) = LabelSelector::parse(&text) {
                let again = LabelSelector::parse(&sel.to_string()).unwrap();
                prop_assert_eq!(again, sel);
            }
        }

        #[test]
        fn field_display_parses_back_equal(
            terms in prop::collection::vec(
                ("[a-z]{1,3}(\\.[a-z]{1,3}){0,2}", any::<bool>(), "[a-z\\\\,=! ]{0,6}"),
                0..5,
            )
        ) {
            let mut sel = FieldSelector::default();
            for (field, eq, value) in terms {
                let op = if eq { FieldOp::Equals } else { FieldOp::NotEquals };
                sel.terms.push(FieldTerm { field, op, value });
            }
            let shown = sel.to_string();
            let parsed = FieldSelector::parse(&shown).unwrap();
            // Parsing sorts the terms; the text of the parse is stable.
            prop_assert_eq!(parsed.terms.len(), sel.terms.len());
            prop_assert_eq!(&FieldSelector::parse(&parsed.to_string()).unwrap(), &parsed);
        }
    }
}
