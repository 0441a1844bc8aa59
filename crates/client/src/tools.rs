//! `sigil frame` and `sigil decode`: netcat-friendly helpers.
//!
//! `frame` turns a command name and a JSON object into one (signed) frame;
//! `decode` turns frames back into one JSON object per line. JSON strings
//! become msgpack `str`; `{"$bin": "<hex>"}` becomes `bin` both ways.

use bytes::{Bytes, BytesMut};
use rmpv::Value;
use serde_json::{json, Map, Number, Value as Json};

use super::credentials::Credentials;
use sigil_proto::wire::{encode_frame, CommandName, Frame, OutFrame};

/// A `frame` invocation that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FrameToolError {
    /// The command name breaks the grammar.
    #[error("invalid command name {0:?}: use 1 to 16 of A-Z and _")]
    BadCommand(String),
    /// The JSON is not an object.
    #[error("payload must be a JSON object: {0}")]
    BadJson(String),
}

/// Builds one frame. With credentials it is signed and `nonce`, `timestamp`
/// (and for CNN `id`) are filled in unless given; without, it is unsigned and
/// the payload is empty unless JSON is given.
pub fn build_frame(
    cred: Option<&Credentials>,
    command: &str,
    json: Option<&str>,
    now: u64,
) -> Result<Vec<u8>, FrameToolError> {
    let name = CommandName::new(command.as_bytes()).ok_or_else(|| FrameToolError::BadCommand(command.to_owned()))?;
    let mut map = match json {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(m)) => m,
            Ok(other) => return Err(FrameToolError::BadJson(format!("got {other}"))),
            Err(e) => return Err(FrameToolError::BadJson(e.to_string())),
        },
    };
    let payload = match cred {
        Some(cred) => {
            map.entry("nonce").or_insert_with(|| json!(super::new_nonce()));
            map.entry("timestamp").or_insert_with(|| json!(now));
            if name.as_str() == "CNN" {
                map.entry("id").or_insert_with(|| json!(cred.id.to_string()));
            }
            encode_value(&Json::Object(map))?
        }
        None if map.is_empty() => Vec::new(),
        None => encode_value(&Json::Object(map))?,
    };
    let tag = cred.map(|c| c.key.mac().sign(name.as_bytes(), &payload));
    let mut out = BytesMut::new();
    encode_frame(&OutFrame { command: name.as_str(), signature: tag.as_ref(), payload: &payload }, &mut out);
    Ok(out.to_vec())
}

fn encode_value(json: &Json) -> Result<Vec<u8>, FrameToolError> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &to_msgpack(json)?);
    Ok(out)
}

fn to_msgpack(json: &Json) -> Result<Value, FrameToolError> {
    Ok(match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::Array(a.iter().map(to_msgpack).collect::<Result<_, _>>()?),
        Json::Object(m) => {
            if let (1, Some(Json::String(h))) = (m.len(), m.get("$bin")) {
                let bytes = hex::decode(h).map_err(|_| FrameToolError::BadJson(format!("$bin {h:?} is not hex")))?;
                return Ok(Value::Binary(bytes));
            }
            Value::Map(m.iter().map(|(k, v)| Ok((Value::from(k.as_str()), to_msgpack(v)?))).collect::<Result<_, _>>()?)
        }
    })
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => i.as_u64().map(Json::from).or_else(|| i.as_i64().map(Json::from)).unwrap_or(Json::Null),
        Value::F32(f) => Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number),
        Value::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => match s.as_str() {
            Some(t) => Json::String(t.to_owned()),
            None => json!({ "$bin": hex::encode(s.as_bytes()) }),
        },
        Value::Binary(b) => json!({ "$bin": hex::encode(b) }),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s.as_str().map(str::to_owned).unwrap_or_else(|| k.to_string()),
                    other => other.to_string(),
                };
                out.insert(key, to_json(v));
            }
            Json::Object(out)
        }
        Value::Ext(t, b) => json!({ "$ext": [t, hex::encode(b)] }),
    }
}

/// One frame as a JSON object: `{"command", "signature", "payload"}`, where
/// `signature` is `"valid"`, `"invalid"`, `"none"` (empty line) or
/// `"unchecked"` (no key given).
pub fn frame_to_json(frame: &Frame, cred: Option<&Credentials>) -> Json {
    let signature = match (&frame.signature, cred) {
        (None, _) => "none",
        (Some(_), None) => "unchecked",
        (Some(tag), Some(c)) => {
            if c.key.mac().verify(frame.command.as_bytes(), &frame.payload, tag) {
                "valid"
            } else {
                "invalid"
            }
        }
    };
    let payload = decode_payload(&frame.payload);
    json!({ "command": frame.command.as_str(), "signature": signature, "payload": payload })
}

fn decode_payload(payload: &Bytes) -> Json {
    if payload.is_empty() {
        return Json::Null;
    }
    let mut slice: &[u8] = payload;
    match rmpv::decode::read_value(&mut slice) {
        Ok(v) if slice.is_empty() => to_json(&v),
        _ => json!({ "$invalid_msgpack": hex::encode(payload) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::wire::FrameCodec;
    use tokio_util::codec::Decoder;

    #[test]
    fn unsigned_info_is_the_bare_frame() {
        assert_eq!(build_frame(None, "INFO", None, 0).unwrap(), b"INFO\n0\n\n");
        assert!(build_frame(None, "info", None, 0).is_err());
        assert!(build_frame(None, "INFO", Some("[1]"), 0).is_err());
        assert!(build_frame(None, "INFO", Some(r#"{"msg": {"$bin": "zz"}}"#), 0).is_err());
    }

    #[test]
    fn signed_frames_decode_back_with_a_valid_tag() {
        let cred =
            Credentials { id: ulid::Ulid::new(), name: "a".into(), key: sigil_proto::wire::SecretKey::generate() };
        let bytes = build_frame(Some(&cred), "PV_MSG", Some(r#"{"to":"x","msg":{"$bin":"00ff"}}"#), 77).unwrap();
        let frame = FrameCodec::new(65536).decode(&mut BytesMut::from(&bytes[..])).unwrap().unwrap();
        let j = frame_to_json(&frame, Some(&cred));
        assert_eq!(j["signature"], "valid");
        assert_eq!(j["payload"]["timestamp"], 77);
        assert_eq!(j["payload"]["msg"], json!({"$bin": "00ff"}));
        assert_eq!(frame_to_json(&frame, None)["signature"], "unchecked");
    }
}
