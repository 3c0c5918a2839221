//! The official schema's validation rules (WIRE.md), as small functions.
//!
//! Each returns `Error::InvalidArgument` naming the field with its full path
//! (`spec.timeout`, `filter.project_ids[3]`), so a caller knows what to fix.

use crate::error::{Error, Result};
use pbjson_types::Duration;

/// protovalidate's `string.uuid`: 36 characters, hex digits in 8-4-4-4-12
/// groups, any case, any version. Returns the canonical lowercase form, which
/// is how IDs are stored and compared.
pub fn uuid(field: &str, value: &str) -> Result<String> {
    if is_uuid(value) {
        Ok(value.to_ascii_lowercase())
    } else if value.is_empty() {
        Err(Error::invalid(field, "value is required and must be a UUID"))
    } else {
        Err(Error::invalid(field, format!("must be a UUID, got {}", quoted(value))))
    }
}

/// Like [`uuid`], for a field that may be left empty (`ignore: IGNORE_IF_UNPOPULATED`).
pub fn optional_uuid(field: &str, value: &str) -> Result<Option<String>> {
    if value.is_empty() {
        Ok(None)
    } else {
        uuid(field, value).map(Some)
    }
}

pub fn is_uuid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Each item of a repeated UUID field, with `max_items`.
pub fn uuid_list(field: &str, values: &[String], max_items: usize) -> Result<Vec<String>> {
    max_len(field, values.len(), max_items)?;
    values.iter().enumerate().map(|(i, v)| uuid(&format!("{field}[{i}]"), v)).collect()
}

pub fn max_len(field: &str, len: usize, max_items: usize) -> Result<()> {
    if len > max_items {
        return Err(Error::invalid(field, format!("must have at most {max_items} items, got {len}")));
    }
    Ok(())
}

/// `enum.defined_only`: the number must be one of the enum's values.
pub fn defined_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E> {
    E::try_from(value).map_err(|_| Error::invalid(field, format!("{value} is not a defined value of this enum")))
}

pub fn int_range(field: &str, value: i32, min: i32, max: i32) -> Result<i32> {
    if value < min || value > max {
        return Err(Error::invalid(field, format!("must be between {min} and {max}, got {value}")));
    }
    Ok(value)
}

/// `duration gte/lte` in whole seconds, on the exact value (7200s plus one
/// nanosecond is over 7200s). Also rejects durations protobuf calls invalid.
pub fn duration_range(field: &str, value: &Duration, min_seconds: i64, max_seconds: i64) -> Result<std::time::Duration> {
    let valid_nanos =
        value.nanos.abs() < 1_000_000_000 && (value.seconds == 0 || value.nanos == 0 || (value.seconds > 0) == (value.nanos > 0));
    let in_range = value.seconds >= min_seconds && (value.seconds < max_seconds || (value.seconds == max_seconds && value.nanos <= 0));
    if !valid_nanos || !in_range {
        return Err(Error::invalid(field, format!("must be between {min_seconds}s and {max_seconds}s, got {}", display_duration(value))));
    }
    Ok(std::time::Duration::new(value.seconds as u64, value.nanos.max(0) as u32))
}

fn display_duration(value: &Duration) -> String {
    if value.nanos == 0 {
        format!("{}s", value.seconds)
    } else {
        format!("{}.{:09}s", value.seconds, value.nanos.unsigned_abs())
    }
}

/// Quotes a client-supplied value for an error message, cut short so a huge
/// input cannot make a huge response.
pub fn quoted(value: &str) -> String {
    const LIMIT: usize = 64;
    if value.chars().count() <= LIMIT {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(LIMIT).collect();
        format!("{head:?}… ({} bytes)", value.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_accepts_any_case_and_version_and_canonicalises() {
        assert_eq!(uuid("id", "A1B2C3D4-5678-9ABC-DEF0-1234567890AB").unwrap(), "a1b2c3d4-5678-9abc-def0-1234567890ab");
        assert!(uuid("id", "07e03a28-65a5-4d98-b532-8ea67b188048").is_ok());
    }

    #[test]
    fn uuid_rejects_other_forms_naming_the_field() {
        for bad in
            ["", "07e03a2865a54d98b5328ea67b188048", "{07e03a28-65a5-4d98-b532-8ea67b188048}", "07e03a28-65a5-4d98-b532-8ea67b18804g", "x"]
        {
            let err = uuid("prebuild_id", bad).unwrap_err();
            assert!(err.to_string().starts_with("prebuild_id: "), "{err}");
        }
    }

    #[test]
    fn duration_bounds_are_inclusive_and_exact() {
        let d = |seconds, nanos| Duration { seconds, nanos };
        assert!(duration_range("t", &d(300, 0), 300, 7200).is_ok());
        assert!(duration_range("t", &d(7200, 0), 300, 7200).is_ok());
        assert!(duration_range("t", &d(7200, 1), 300, 7200).is_err());
        assert!(duration_range("t", &d(299, 999_999_999), 300, 7200).is_err());
        assert!(duration_range("t", &d(-300, 0), 300, 7200).is_err());
        assert!(duration_range("t", &d(600, -5), 300, 7200).is_err());
        let err = duration_range("spec.timeout", &d(60, 0), 300, 7200).unwrap_err();
        assert_eq!(err.to_string(), "spec.timeout: must be between 300s and 7200s, got 60s");
    }

    #[test]
    fn lists_are_bounded_and_items_named_by_index() {
        let ids = vec!["07e03a28-65a5-4d98-b532-8ea67b188048".to_string(), "nope".to_string()];
        assert_eq!(
            uuid_list("filter.project_ids", &ids, 25).unwrap_err().to_string(),
            "filter.project_ids[1]: must be a UUID, got \"nope\""
        );
        assert!(max_len("filter.phases", 11, 10).is_err());
    }

    #[test]
    fn quoted_cuts_long_values() {
        let long = "a".repeat(10_000);
        assert!(quoted(&long).len() < 100);
    }
}
