//! Proto3 JSON for the Connect layer, through the pbjson-generated serde
//! impls, with one correction: timestamps are Z-normalized
//! (`"2019-12-27T18:11:19.117Z"`, as the proto3 JSON mapping and the API
//! reference write them) where pbjson-types writes `+00:00`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;

/// Serializes `value` as proto3 JSON.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(512);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, ZuluTimestamps);
    value.serialize(&mut serializer)?;
    Ok(out)
}

/// Parses proto3 JSON (camelCase or original field names; unknown fields
/// are ignored; enums by name or number).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// A compact JSON formatter that rewrites UTC timestamps' `+00:00` to `Z`.
struct ZuluTimestamps;

impl serde_json::ser::Formatter for ZuluTimestamps {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        match fragment.strip_suffix("+00:00") {
            Some(head) if looks_like_timestamp(head) => {
                writer.write_all(head.as_bytes())?;
                writer.write_all(b"Z")
            }
            _ => writer.write_all(fragment.as_bytes()),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` with an optional fraction: the shape chrono's RFC
/// 3339 output has before its offset. Nothing else is touched.
fn looks_like_timestamp(head: &str) -> bool {
    let b = head.as_bytes();
    if b.len() < 19 || b.len() > 29 {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (b.len() == 19 || (b[19] == b'.' && b.len() > 20 && digits(20..b.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::gitpod::v1::{PrebuildMetadata, PrebuildStatus};
    use pbjson_types::Timestamp;

    #[test]
    fn timestamps_are_z_normalized() {
        let metadata =
            PrebuildMetadata { created_at: Some(Timestamp { seconds: 1_577_470_279, nanos: 117_000_000 }), ..Default::default() };
        let json = String::from_utf8(to_vec(&metadata).unwrap()).unwrap();
        assert_eq!(json, r#"{"createdAt":"2019-12-27T18:11:19.117Z"}"#);
        let back: PrebuildMetadata = from_slice(json.as_bytes()).unwrap();
        assert_eq!(back, metadata);
        let whole = PrebuildMetadata { created_at: Some(Timestamp { seconds: 1_577_470_279, nanos: 0 }), ..Default::default() };
        assert_eq!(String::from_utf8(to_vec(&whole).unwrap()).unwrap(), r#"{"createdAt":"2019-12-27T18:11:19Z"}"#);
    }

    #[test]
    fn other_strings_are_left_alone() {
        let status = PrebuildStatus { failure_message: "at 12:00+00:00".into(), warning_message: "x+00:00".into(), ..Default::default() };
        let json = String::from_utf8(to_vec(&status).unwrap()).unwrap();
        assert!(json.contains(r#""at 12:00+00:00""#) && json.contains(r#""x+00:00""#), "{json}");
    }

    #[test]
    fn wire_conventions() {
        let status = PrebuildStatus { phase: 60, status_version: 3, snapshot_size_bytes: 1024, ..Default::default() };
        let json = String::from_utf8(to_vec(&status).unwrap()).unwrap();
        assert_eq!(json, r#"{"phase":"PREBUILD_PHASE_COMPLETED","statusVersion":"3","snapshotSizeBytes":"1024"}"#);
        let from_snake: PrebuildStatus = from_slice(br#"{"phase":60,"status_version":"3","unknownField":{"a":1}}"#).unwrap();
        assert_eq!(from_snake.phase, 60);
        assert_eq!(from_snake.status_version, 3);
    }
}
