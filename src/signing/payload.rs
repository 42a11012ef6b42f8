//! The "simple signing" payload (containers-signature(5)): the JSON document a
//! signature carries, naming the manifest digest it vouches for and the identity
//! (a docker reference) the signer claims for it.
//!
//! Parsing is as strict as the format asks: exactly `critical` and `optional` at
//! the top, nothing unknown anywhere under `critical`, no duplicated member
//! anywhere (a duplicate could be read two ways), right types everywhere; unknown
//! members of `optional` are accepted, known ones must have the right type.

use crate::digest::Digest;
use crate::error::{Error, Kind, Result};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// `critical.type`'s one value.
pub const SIGNATURE_TYPE: &str = "atomic container signature";

/// What berth writes as `optional.creator`.
pub fn creator() -> String {
    format!("berth {}", crate::VERSION)
}

/// A signature payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub manifest_digest: Digest,
    /// `critical.identity.docker-reference`, as written.
    pub docker_reference: String,
    pub creator: Option<String>,
    pub timestamp: Option<i64>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(Kind::Invalid, format!("signature payload: {}", msg.into()))
}

/// A JSON value that refuses duplicated object members while it is read.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Strict, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::String(v)))
            }
            fn visit_unit<E>(self) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Strict, A::Error> {
                let mut out = Vec::new();
                while let Some(Strict(v)) = a.next_element()? {
                    out.push(v);
                }
                Ok(Strict(Value::Array(out)))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Strict, A::Error> {
                let mut out = Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    let Strict(v) = a.next_value()?;
                    if out.insert(k.clone(), v).is_some() {
                        return Err(de::Error::custom(format!("duplicated member {k:?}")));
                    }
                }
                Ok(Strict(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The members of `v` (an object named `what`), refusing any not in `allowed`
/// and any of `required` that is missing.
fn object<'a>(
    v: &'a Value,
    what: &str,
    allowed: &[&str],
    required: &[&str],
) -> Result<&'a Map<String, Value>> {
    let m = v
        .as_object()
        .ok_or_else(|| invalid(format!("{what} is not an object")))?;
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!("unknown member {what}.{k}")));
    }
    if let Some(k) = required.iter().find(|k| !m.contains_key(**k)) {
        return Err(invalid(format!("{what}.{k} is missing")));
    }
    Ok(m)
}

fn string<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str> {
    m[key]
        .as_str()
        .ok_or_else(|| invalid(format!("{what}.{key} is not a string")))
}

impl Payload {
    /// The payload for `digest` under `identity` (a fully expanded reference).
    pub fn new(manifest_digest: Digest, docker_reference: String, timestamp: i64) -> Payload {
        Payload {
            manifest_digest,
            docker_reference,
            creator: Some(creator()),
            timestamp: Some(timestamp),
        }
    }

    /// The JSON bytes that get signed.
    pub fn to_json(&self) -> Vec<u8> {
        let mut optional = Map::new();
        if let Some(c) = &self.creator {
            optional.insert("creator".into(), Value::String(c.clone()));
        }
        if let Some(t) = self.timestamp {
            optional.insert("timestamp".into(), Value::from(t));
        }
        let doc = serde_json::json!({
            "critical": {
                "type": SIGNATURE_TYPE,
                "image": {"docker-manifest-digest": self.manifest_digest.to_string()},
                "identity": {"docker-reference": self.docker_reference},
            },
            "optional": optional,
        });
        serde_json::to_vec(&doc).expect("a JSON value serializes")
    }

    /// Parse a payload strictly. Only ever called on a payload whose signature
    /// verified, or to describe one that is clearly marked untrusted.
    pub fn parse(bytes: &[u8]) -> Result<Payload> {
        let Strict(v) =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let top = object(
            &v,
            "the payload",
            &["critical", "optional"],
            &["critical", "optional"],
        )?;
        let critical = object(
            &top["critical"],
            "critical",
            &["type", "image", "identity"],
            &["type", "image", "identity"],
        )?;
        let ty = string(critical, "type", "critical")?;
        if ty != SIGNATURE_TYPE {
            return Err(invalid(format!(
                "critical.type is {ty:?}, not {SIGNATURE_TYPE:?}"
            )));
        }
        let image = object(
            &critical["image"],
            "critical.image",
            &["docker-manifest-digest"],
            &["docker-manifest-digest"],
        )?;
        let manifest_digest: Digest = string(image, "docker-manifest-digest", "critical.image")?
            .parse()
            .map_err(|e: Error| invalid(format!("critical.image.docker-manifest-digest: {e}")))?;
        let identity = object(
            &critical["identity"],
            "critical.identity",
            &["docker-reference"],
            &["docker-reference"],
        )?;
        let docker_reference =
            string(identity, "docker-reference", "critical.identity")?.to_string();
        crate::reference::Reference::parse(&docker_reference)
            .map_err(|e| invalid(format!("critical.identity.docker-reference: {e}")))?;
        let optional = top["optional"]
            .as_object()
            .ok_or_else(|| invalid("optional is not an object"))?;
        let creator = match optional.get("creator") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("optional.creator is not a string")),
        };
        let timestamp = match optional.get("timestamp") {
            None => None,
            Some(n) => Some(
                n.as_i64()
                    .ok_or_else(|| invalid("optional.timestamp is not a 64-bit integer"))?,
            ),
        };
        Ok(Payload {
            manifest_digest,
            docker_reference,
            creator,
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Digest {
        Digest::sha256(b"m")
    }

    #[test]
    fn round_trip() {
        let p = Payload::new(d(), "reg.example:5000/a/b:1".into(), 1_700_000_000);
        let back = Payload::parse(&p.to_json()).unwrap();
        assert_eq!(back, p);
        assert!(
            String::from_utf8(p.to_json())
                .unwrap()
                .contains(SIGNATURE_TYPE)
        );
    }

    #[test]
    fn the_specs_example_parses() {
        let doc = br#"{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"sha256:817a12c32a39bbe394944ba49de563e085f1d3c5266eb8e9723256bc4448680e"},"identity":{"docker-reference":"docker.io/library/busybox:latest"}},"optional":{"creator":"some software package v1.0.1-35","timestamp":1483228800,"extra":[1]}}"#;
        let p = Payload::parse(doc).unwrap();
        assert_eq!(p.docker_reference, "docker.io/library/busybox:latest");
        assert_eq!(p.timestamp, Some(1483228800));
    }

    #[test]
    fn strictness() {
        let good = Payload::new(d(), "r.example/a:1".into(), 1);
        let s = String::from_utf8(good.to_json()).unwrap();
        let cases = [
            // unknown member under critical
            s.replace("\"type\":", "\"x\":1,\"type\":"),
            // unknown top-level member
            s.replace("{\"critical\"", "{\"x\":1,\"critical\""),
            // duplicated member
            s.replace(
                "\"type\":",
                "\"type\":\"atomic container signature\",\"type\":",
            ),
            // wrong type value
            s.replace("atomic container signature", "atomic container signaturE"),
            // wrong member type
            s.replace("\"timestamp\":1", "\"timestamp\":\"1\""),
            // missing identity
            s.replace(",\"identity\":{\"docker-reference\":\"r.example/a:1\"}", ""),
            // not JSON
            "{".into(),
            "[]".into(),
        ];
        for c in cases {
            assert!(Payload::parse(c.as_bytes()).is_err(), "accepted {c}");
        }
    }
}
