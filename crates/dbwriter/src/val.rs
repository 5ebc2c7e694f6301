//! `Val`: one SQL value that binds to, and reads from, both SQLite and PostgreSQL, so the writer's
//! statements are written once for both sinks.

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, Json, ToSql, Type};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Null,
    I64(i64),
    F64(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Json(serde_json::Value),
    /// JSON already written as text ([`json_text`]): SQLite text, PostgreSQL `json`/`jsonb`
    /// sent as it is, without building a `serde_json::Value` first.
    JsonText(String),
    /// A float vector: PostgreSQL `real[]`, SQLite BLOB of little-endian f32.
    F32s(Vec<f32>),
}

/// Integers above `i64::MAX` (never seen in practice) are clamped rather than wrapped.
pub(crate) fn u64v(v: u64) -> Val {
    Val::I64(i64::try_from(v).unwrap_or(i64::MAX))
}

pub(crate) fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Val) -> Val {
    v.map_or(Val::Null, f)
}

pub(crate) fn text(s: &str) -> Val {
    Val::Text(s.to_owned())
}

/// The SHA-256 of `b` (32 bytes): the key that stands for a path or a name in unique indexes,
/// whatever its length.
pub(crate) fn sha256(b: &[u8]) -> Val {
    use sha2::Digest;
    Val::Bytes(sha2::Sha256::digest(b).to_vec())
}

/// `v` as compact JSON text, every `f32` written as the `f64` it converts to: the text that
/// `serde_json::Value` gives (which holds numbers as `f64`), without building one. Keys come in
/// field order rather than sorted; JSON readers do not see the difference.
pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> Result<Val, serde_json::Error> {
    struct F32AsF64;
    impl serde_json::ser::Formatter for F32AsF64 {
        fn write_f32<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            v: f32,
        ) -> std::io::Result<()> {
            self.write_f64(w, f64::from(v))
        }
    }
    let mut out = Vec::with_capacity(512);
    v.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, F32AsF64,
    ))?;
    // serde_json writes UTF-8 only.
    Ok(Val::JsonText(
        String::from_utf8(out).map_err(serde::ser::Error::custom)?,
    ))
}

pub(crate) fn f32_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Val {
    pub fn i64(&self) -> Option<i64> {
        match self {
            Val::I64(v) => Some(*v),
            Val::Bool(b) => Some(i64::from(*b)),
            Val::F64(f) => Some(*f as i64),
            _ => None,
        }
    }

    /// A number as f64 (SQLite hands a whole REAL back as an integer).
    pub fn f64(&self) -> Option<f64> {
        match self {
            Val::F64(f) => Some(*f),
            Val::I64(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Val::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Val::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn f32s(&self) -> Option<Vec<f32>> {
        match self {
            Val::F32s(v) => Some(v.clone()),
            Val::Bytes(b) => Some(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// JSON text (SQLite) or jsonb (PostgreSQL) as a value.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Val::Json(v) => v.clone(),
            Val::Text(s) | Val::JsonText(s) => {
                serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Plain rendering for reports; bytes become lossy text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Val::Null => J::Null,
            Val::I64(v) => J::from(*v),
            Val::F64(v) => J::from(*v),
            Val::Bool(b) => J::Bool(*b),
            Val::Text(s) => J::String(s.clone()),
            Val::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
            Val::Json(v) => v.clone(),
            Val::JsonText(s) => serde_json::from_str(s).unwrap_or(J::Null),
            Val::F32s(v) => J::from(v.clone()),
        }
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Val::Null => ToSqlOutput::Owned(Value::Null),
            Val::I64(v) => ToSqlOutput::Owned(Value::Integer(*v)),
            Val::F64(v) => ToSqlOutput::Owned(Value::Real(*v)),
            Val::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(*b))),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Val::Json(v) => ToSqlOutput::Owned(Value::Text(v.to_string())),
            Val::JsonText(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::F32s(v) => ToSqlOutput::Owned(Value::Blob(f32_le(v))),
        })
    }
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::I64(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Val::I64(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Val::I64(v) => v.to_sql(ty, out),
            Val::F64(v) if *ty == Type::FLOAT4 => (*v as f32).to_sql(ty, out),
            Val::F64(v) => v.to_sql(ty, out),
            Val::Bool(b) => b.to_sql(ty, out),
            Val::Text(s) if *ty == Type::JSONB || *ty == Type::JSON => {
                let v: serde_json::Value = serde_json::from_str(s)?;
                Json(v).to_sql(ty, out)
            }
            Val::Text(s) => s.to_sql(ty, out),
            Val::Bytes(b) => b.to_sql(ty, out),
            Val::Json(v) => Json(v).to_sql(ty, out),
            // jsonb's binary form is a version byte (1) and the text; json's is the text.
            Val::JsonText(s) if *ty == Type::JSONB || *ty == Type::JSON => {
                if *ty == Type::JSONB {
                    out.extend_from_slice(&[1]);
                }
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Val::JsonText(s) => s.to_sql(ty, out),
            Val::F32s(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackmill_types::{Features, Stat};

    #[test]
    fn json_text_is_the_text_of_a_value() {
        let f = Features {
            integrated_lufs: -14.1,
            bpm: 0.1,
            spectral_flux: Stat {
                mean: f32::NAN,
                std: 1e-7,
            },
            chroma: [1.0 / 3.0; 12],
            ..Default::default()
        };
        let Val::JsonText(text) = json_text(&f).unwrap() else {
            panic!("json_text gave another variant");
        };
        let value = serde_json::to_value(&f).unwrap().to_string();
        // The same document (both texts read by the same parser), and every number written as
        // the Value writes it (an f32 as the f64 it converts to; NaN as null).
        let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
        assert_eq!(parse(&text), parse(&value));
        assert!(text.contains("\"bpm\":0.10000000149011612"), "{text}");
        assert!(text.contains("\"mean\":null"), "{text}");
        let mut sorted: Vec<char> = text.chars().collect();
        let mut expected: Vec<char> = value.chars().collect();
        sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(
            sorted, expected,
            "the same characters, keys in another order"
        );
    }
}
