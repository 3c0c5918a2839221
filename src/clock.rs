//! Time as a dependency, so tests can drive it.

use pbjson_types::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that runs with the system's but can be moved forward (tests of
/// timeouts and retention).
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: std::sync::atomic::AtomicU64,
}

impl OffsetClock {
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.offset_ms.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// A protobuf timestamp at microsecond precision (what the store and JSON keep).
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Timestamp { seconds: since.as_secs() as i64, nanos: (since.subsec_micros() * 1000) as i32 }
}

/// Back from a protobuf timestamp; negative or malformed values clamp to the epoch.
pub fn system_time(ts: &Timestamp) -> SystemTime {
    if ts.seconds < 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos.clamp(0, 999_999_999) as u32)
}

/// The time from `from` to `to` (zero if `to` is earlier).
pub fn between(from: &Timestamp, to: &Timestamp) -> Duration {
    system_time(to).duration_since(system_time(from)).unwrap_or(Duration::ZERO)
}
