//! Schema-driven decoding of one protobuf message into the JSON `Value`
//! Go's encoding/json would write for the same Go object.
//!
//! gogo-protobuf writes every non-pointer Go field, so the wire carries
//! zero values (`""`, `false`, `0`) that the JSON form leaves out. A field's
//! `keep_zero` (from the generated schema) says whether its JSON form
//! carries zeros: true for fields without `omitempty` (k8s-openapi's
//! required ones) and for Go pointers, which are on the wire only when set.
//! Nested messages are always kept, as encoding/json never omits structs
//! (`resources: {}`); zero `Time`s are dropped, as Go writes them as `null`.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::DecodeError;
use super::schema::MESSAGES;
use super::wire::{Raw, Reader};

/// Deeper nesting than any Kubernetes object has; bounds the recursion on
/// hostile input.
pub const MAX_DEPTH: usize = 64;

/// One message of the schema.
#[derive(Debug)]
pub struct Message {
    /// The k8s-pb path, `api.apps.v1.Deployment`.
    pub name: &'static str,
    pub fields: &'static [Field],
}

/// One field: its number on the wire and its name and shape in JSON.
#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    /// The JSON key; empty for an `Inline` field.
    pub json: &'static str,
    pub kind: Kind,
    pub repeat: Repeat,
    /// Whether a zero scalar stays in the JSON (see the module docs).
    pub keep_zero: bool,
}

/// What a field (or a map's or list's element) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Bool,
    Int32,
    Int64,
    Double,
    /// Base64 in JSON, as Go writes `[]byte`.
    Bytes,
    /// Another message, by its index in the schema.
    Message(usize),
    /// `metav1.Time`: RFC 3339 to the second.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `metav1.Duration`: Go's duration string (`1h2m3s`).
    Duration,
    /// `resource.Quantity`: its canonical string.
    Quantity,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrString,
    /// `runtime.RawExtension`: the embedded JSON object.
    RawExtension,
    /// `metav1.FieldsV1`: the embedded JSON object.
    FieldsV1,
}

/// How a field appears in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    Single,
    /// A JSON array, one element per occurrence (or a packed run).
    Repeated,
    /// A JSON object from repeated `{1: key, 2: value}` entries.
    Map,
    /// A Go embedded struct: its fields join the enclosing object.
    Inline,
}

/// Decodes `bytes` as the schema's message `index`.
pub fn message(
    index: usize,
    bytes: &[u8],
    depth: usize,
) -> Result<Map<String, Value>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let schema = &MESSAGES[index];
    let mut out = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, raw)) = reader.next_field()? {
        // Fields this schema does not know (newer API versions) are skipped,
        // as gogo's generated unmarshalers do.
        let Some(field) = schema.fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        let at = || format!("{}.{}", schema.name, field.json);
        match field.repeat {
            Repeat::Single => match value(field.kind, raw, depth, &at)? {
                Some(v) if field.keep_zero || !is_zero_scalar(field.kind, &v) => {
                    out.insert(field.json.to_string(), v);
                }
                // The last occurrence wins, as in proto2.
                _ => {
                    out.remove(field.json);
                }
            },
            Repeat::Repeated => {
                let list = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = list else {
                    unreachable!("only repeated fields write this key")
                };
                match (field.kind, raw) {
                    (Kind::Int32 | Kind::Int64 | Kind::Bool | Kind::Double, Raw::Len(packed)) => {
                        unpack(field.kind, packed, list, &at)?
                    }
                    (kind, raw) => list.push(value(kind, raw, depth, &at)?.unwrap_or(Value::Null)),
                }
            }
            Repeat::Map => {
                let (key, v) = map_entry(field.kind, raw, depth, &at)?;
                let map = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, v);
                }
            }
            Repeat::Inline => {
                let (Kind::Message(inner), Raw::Len(bytes)) = (field.kind, raw) else {
                    return Err(wire_type(&at, raw, "a message"));
                };
                out.extend(message(inner, bytes, depth + 1)?);
            }
        }
    }
    Ok(out)
}

/// The JSON form of one value of `kind`; `None` for a value Go writes as
/// `null` (a zero `Time`, an empty `RawExtension`).
fn value(
    kind: Kind,
    raw: Raw<'_>,
    depth: usize,
    at: &dyn Fn() -> String,
) -> Result<Option<Value>, DecodeError> {
    let v = match (kind, raw) {
        (Kind::String, Raw::Len(bytes)) => Value::String(utf8(bytes, at)?),
        (Kind::Bool, Raw::Varint(n)) => Value::Bool(n != 0),
        // Negative int32s are sign-extended to ten bytes; truncating is the
        // protobuf rule.
        (Kind::Int32, Raw::Varint(n)) => Value::from(n as i32),
        (Kind::Int64, Raw::Varint(n)) => Value::from(n as i64),
        (Kind::Double, Raw::Fixed64(bits)) => double(f64::from_bits(bits), at)?,
        (Kind::Bytes, Raw::Len(bytes)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        (Kind::Message(index), Raw::Len(bytes)) => Value::Object(message(index, bytes, depth + 1)?),
        (Kind::Time, Raw::Len(bytes)) => return timestamp(bytes, false, at),
        (Kind::MicroTime, Raw::Len(bytes)) => return timestamp(bytes, true, at),
        (Kind::Duration, Raw::Len(bytes)) => {
            let nanos = read_scalars(bytes, at)?.0;
            Value::String(go_duration(nanos))
        }
        (Kind::Quantity, Raw::Len(bytes)) => {
            let text = read_string_field(bytes, 1, at)?;
            // A zero Quantity prints as "0".
            Value::String(if text.is_empty() { "0".into() } else { text })
        }
        (Kind::IntOrString, Raw::Len(bytes)) => int_or_string(bytes, at)?,
        (Kind::RawExtension | Kind::FieldsV1, Raw::Len(bytes)) => return embedded_json(bytes, at),
        (Kind::String | Kind::Bytes | Kind::Message(_), raw) => {
            return Err(wire_type(at, raw, "length-delimited bytes"));
        }
        (Kind::Bool | Kind::Int32 | Kind::Int64, raw) => {
            return Err(wire_type(at, raw, "a varint"));
        }
        (Kind::Double, raw) => return Err(wire_type(at, raw, "a 64-bit number")),
        (_, raw) => return Err(wire_type(at, raw, "a message")),
    };
    Ok(Some(v))
}

/// Whether `v` is a zero scalar that a Go `omitempty` field leaves out.
fn is_zero_scalar(kind: Kind, v: &Value) -> bool {
    let scalar = matches!(
        kind,
        Kind::String | Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Double | Kind::Bytes
    );
    scalar
        && match v {
            Value::String(s) => s.is_empty(),
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            _ => false,
        }
}

/// A packed run of numbers (proto3 style; gogo writes them unpacked, but a
/// decoder must take both).
fn unpack(
    kind: Kind,
    bytes: &[u8],
    list: &mut Vec<Value>,
    at: &dyn Fn() -> String,
) -> Result<(), DecodeError> {
    let mut reader = Reader::new(bytes);
    while !reader.is_empty() {
        let v = match kind {
            Kind::Double => double(f64::from_bits(reader.fixed64()?), at)?,
            Kind::Bool => Value::Bool(reader.varint()? != 0),
            Kind::Int32 => Value::from(reader.varint()? as i32),
            _ => Value::from(reader.varint()? as i64),
        };
        list.push(v);
    }
    Ok(())
}

/// One `{1: key, 2: value}` map entry; a missing part is its zero value.
fn map_entry(
    kind: Kind,
    raw: Raw<'_>,
    depth: usize,
    at: &dyn Fn() -> String,
) -> Result<(String, Value), DecodeError> {
    let Raw::Len(bytes) = raw else {
        return Err(wire_type(at, raw, "a map entry"));
    };
    let mut key = String::new();
    let mut v = None;
    let mut reader = Reader::new(bytes);
    while let Some((tag, raw)) = reader.next_field()? {
        match (tag, raw) {
            (1, Raw::Len(bytes)) => key = utf8(bytes, at)?,
            (1, raw) => return Err(wire_type(at, raw, "a string map key")),
            (2, raw) => v = value(kind, raw, depth, at)?,
            _ => {}
        }
    }
    let v = match v {
        Some(v) => v,
        None => match kind {
            Kind::String | Kind::Bytes => Value::String(String::new()),
            Kind::Quantity => Value::String("0".into()),
            Kind::Message(_) => Value::Object(Map::new()),
            _ => Value::Null,
        },
    };
    Ok((key, v))
}

/// The varint fields 1 and 2 of a small message (Time's seconds and nanos,
/// Duration's nanoseconds).
fn read_scalars(bytes: &[u8], at: &dyn Fn() -> String) -> Result<(i64, i64), DecodeError> {
    let (mut first, mut second) = (0, 0);
    let mut reader = Reader::new(bytes);
    while let Some((tag, raw)) = reader.next_field()? {
        match (tag, raw) {
            (1, Raw::Varint(n)) => first = n as i64,
            (2, Raw::Varint(n)) => second = n as i64,
            (1 | 2, raw) => return Err(wire_type(at, raw, "a varint")),
            _ => {}
        }
    }
    Ok((first, second))
}

fn read_string_field(
    bytes: &[u8],
    want: u32,
    at: &dyn Fn() -> String,
) -> Result<String, DecodeError> {
    Ok(read_bytes_field(bytes, want, at)?
        .map(|b| utf8(b, at))
        .transpose()?
        .unwrap_or_default())
}

fn read_bytes_field<'a>(
    bytes: &'a [u8],
    want: u32,
    at: &dyn Fn() -> String,
) -> Result<Option<&'a [u8]>, DecodeError> {
    let mut found = None;
    let mut reader = Reader::new(bytes);
    while let Some((tag, raw)) = reader.next_field()? {
        match (tag == want, raw) {
            (true, Raw::Len(b)) => found = Some(b),
            (true, raw) => return Err(wire_type(at, raw, "length-delimited bytes")),
            _ => {}
        }
    }
    Ok(found)
}

fn timestamp(
    bytes: &[u8],
    micro: bool,
    at: &dyn Fn() -> String,
) -> Result<Option<Value>, DecodeError> {
    let (seconds, nanos) = read_scalars(bytes, at)?;
    if seconds == 0 && nanos == 0 {
        return Ok(None);
    }
    let invalid = || DecodeError::InvalidValue {
        field: at(),
        reason: format!("time out of range: {seconds}s {nanos}ns"),
    };
    let nanos = i32::try_from(nanos).map_err(|_| invalid())?;
    let ts = jiff::Timestamp::new(seconds, nanos).map_err(|_| invalid())?;
    let text = if micro {
        ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    };
    Ok(Some(Value::String(text)))
}

fn int_or_string(bytes: &[u8], at: &dyn Fn() -> String) -> Result<Value, DecodeError> {
    let (mut kind, mut int, mut text) = (0u64, 0i32, String::new());
    let mut reader = Reader::new(bytes);
    while let Some((tag, raw)) = reader.next_field()? {
        match (tag, raw) {
            (1, Raw::Varint(n)) => kind = n,
            (2, Raw::Varint(n)) => int = n as i32,
            (3, Raw::Len(b)) => text = utf8(b, at)?,
            (1..=3, raw) => return Err(wire_type(at, raw, "an IntOrString part")),
            _ => {}
        }
    }
    // Type 1 is intstr.String; anything else reads as the integer.
    Ok(if kind == 1 {
        Value::String(text)
    } else {
        Value::from(int)
    })
}

fn embedded_json(bytes: &[u8], at: &dyn Fn() -> String) -> Result<Option<Value>, DecodeError> {
    match read_bytes_field(bytes, 1, at)? {
        None | Some([]) => Ok(None),
        Some(raw) => serde_json::from_slice(raw)
            .map(Some)
            .map_err(|e| DecodeError::InvalidValue {
                field: at(),
                reason: format!("embedded object is not JSON: {e}"),
            }),
    }
}

/// Go's `time.Duration.String`: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    fn scaled(value: u64, unit: u64) -> String {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let text = format!("{whole}.{rest:0digits$}");
        text.trim_end_matches('0').to_string()
    }
    if nanos == 0 {
        return "0s".into();
    }
    let u = nanos.unsigned_abs();
    const SECOND: u64 = 1_000_000_000;
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", scaled(u, 1_000))
    } else if u < SECOND {
        format!("{}ms", scaled(u, 1_000_000))
    } else {
        let (hours, minutes) = (u / (3600 * SECOND), u / (60 * SECOND) % 60);
        let seconds = scaled(u % (60 * SECOND), SECOND);
        if hours > 0 {
            format!("{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            format!("{minutes}m{seconds}s")
        } else {
            format!("{seconds}s")
        }
    };
    if nanos < 0 { format!("-{body}") } else { body }
}

fn double(f: f64, at: &dyn Fn() -> String) -> Result<Value, DecodeError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| DecodeError::InvalidValue {
            field: at(),
            reason: format!("{f} is not a JSON number"),
        })
}

fn utf8(bytes: &[u8], at: &dyn Fn() -> String) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidValue {
        field: at(),
        reason: "string is not valid UTF-8".into(),
    })
}

fn wire_type(at: &dyn Fn() -> String, raw: Raw<'_>, expected: &'static str) -> DecodeError {
    DecodeError::WireType {
        field: at(),
        got: raw.wire_type(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1), "1ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(1_000_000_000), "1s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
    }
}
