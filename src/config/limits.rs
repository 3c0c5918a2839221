//! `[limits]`: how much work the server takes on before it refuses more,
//! quickly and with a code that says so, instead of growing its memory and
//! its latency.

use super::{err, ConfigError};
use serde::Deserialize;

/// The default cap on PENDING prebuilds per project: far more than any
/// runner works through in an interval, far less than would weigh on the
/// reconciler, which reads every active prebuild each pass.
pub const DEFAULT_MAX_PENDING_PREBUILDS_PER_PROJECT: u32 = 1000;
/// The default number of API calls served at once; more are refused. A
/// server saturates its cores with far fewer (64 concurrent calls do on two
/// cores): more in flight only wait longer, so past this they are told to
/// retry instead (measured in BENCHMARKS.md, "Overload").
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 256;
/// The default number of open connections; more are closed as they come.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_pending_prebuilds_per_project: Option<u32>,
    max_requests_in_flight: Option<usize>,
    max_connections: Option<usize>,
}

/// The validated limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// PENDING prebuilds a project may have; past it CreatePrebuild is
    /// `resource_exhausted`. `None` (0 in the file): no cap.
    pub max_pending_prebuilds_per_project: Option<u32>,
    /// API calls served at once (health and metrics aside); past it a call
    /// is `unavailable` at once.
    pub max_requests_in_flight: usize,
    /// Open connections; past it a new one is closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_prebuilds_per_project: Some(DEFAULT_MAX_PENDING_PREBUILDS_PER_PROJECT),
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl RawLimits {
    pub(super) fn validate(self) -> Result<Limits, ConfigError> {
        let defaults = Limits::default();
        let max_pending_prebuilds_per_project = match self.max_pending_prebuilds_per_project {
            None => defaults.max_pending_prebuilds_per_project,
            Some(0) => None,
            Some(cap) => Some(cap),
        };
        let positive = |key: &str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(err(format!("limits.{key}"), "must be at least 1")),
            Some(value) => Ok(value),
            None => Ok(default),
        };
        Ok(Limits {
            max_pending_prebuilds_per_project,
            max_requests_in_flight: positive("max_requests_in_flight", self.max_requests_in_flight, defaults.max_requests_in_flight)?,
            max_connections: positive("max_connections", self.max_connections, defaults.max_connections)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Overrides};
    use super::*;

    fn limits(text: &str) -> Result<Limits, String> {
        Config::parse(text, &Overrides::default()).map(|config| config.limits).map_err(|e| e.to_string())
    }

    #[test]
    fn limits_default_and_zero_lifts_only_the_pending_cap() {
        assert_eq!(limits("").unwrap(), Limits::default());
        assert_eq!(Limits::default().max_pending_prebuilds_per_project, Some(DEFAULT_MAX_PENDING_PREBUILDS_PER_PROJECT));
        let set = limits("[limits]\nmax_pending_prebuilds_per_project = 5\nmax_requests_in_flight = 7\nmax_connections = 9\n").unwrap();
        assert_eq!(set, Limits { max_pending_prebuilds_per_project: Some(5), max_requests_in_flight: 7, max_connections: 9 });
        assert_eq!(limits("[limits]\nmax_pending_prebuilds_per_project = 0\n").unwrap().max_pending_prebuilds_per_project, None);
        for key in ["max_requests_in_flight", "max_connections"] {
            let error = limits(&format!("[limits]\n{key} = 0\n")).unwrap_err();
            assert!(error.starts_with(&format!("limits.{key}: ")), "{error}");
        }
        assert!(limits("[limits]\nmax_queue = 1\n").unwrap_err().contains("max_queue"), "unknown keys are named");
    }
}
