//! `[storage] postgres_url`: parsed once at the edge, and shown (in errors,
//! logs, `Debug`) only without its password.

use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::SslMode;

/// How long one connection attempt may take when the URL does not say
/// (`connect_timeout`): an unreachable server fails start-up instead of
/// hanging it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated PostgreSQL connection URL.
#[derive(Clone)]
pub struct PostgresUrl {
    text: String,
    config: tokio_postgres::Config,
}

impl PostgresUrl {
    /// Parses `postgresql://user[:password]@host[:port]/database[?options]`
    /// (`postgres://` too). The error never repeats a password.
    pub fn parse(text: &str) -> Result<PostgresUrl, String> {
        if !(text.starts_with("postgresql://") || text.starts_with("postgres://")) {
            // Not echoed: a key=value string may hold a password.
            return Err("must be a URL like postgresql://user@host:5432/database".into());
        }
        let mut config =
            tokio_postgres::Config::from_str(text).map_err(|e| format!("{} is not a valid PostgreSQL URL: {e}", redact(text)))?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(format!("{} names no host", redact(text)));
        }
        // No TLS connector is built in yet: `prefer` (the default) connects
        // in plain text, and `require` could never connect.
        if config.get_ssl_mode() == SslMode::Require {
            return Err(format!("{}: sslmode=require is not supported yet (TLS to PostgreSQL is not built in)", redact(text)));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        Ok(PostgresUrl { text: text.to_string(), config })
    }

    /// The URL with its password removed, for messages.
    pub fn redacted(&self) -> String {
        redact(&self.text)
    }

    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({:?})", self.redacted())
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Removes the password from the user info and any `password=` query
/// parameter. Errs on the side of showing less: everything up to the last
/// `@` counts as user info, so a password with a stray `/` or `@` in it is
/// still hidden.
fn redact(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return "<not a URL>".into();
    };
    let (scheme, rest) = (&text[..scheme_end], &text[scheme_end + 3..]);
    let rest = match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{user}@{}", &rest[at + 1..])
        }
        None => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((before, query)) => {
            let kept: Vec<&str> = query.split('&').filter(|pair| !pair.to_ascii_lowercase().starts_with("password=")).collect();
            if kept.is_empty() {
                before.to_string()
            } else {
                format!("{before}?{}", kept.join("&"))
            }
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        let cases = [
            ("postgresql://alice:s3cret@db.example:5433/prebuildd", "postgresql://alice@db.example:5433/prebuildd"),
            ("postgres://alice@db/prebuildd", "postgres://alice@db/prebuildd"),
            ("postgresql://db/prebuildd?user=bob&password=s3cret&sslmode=disable", "postgresql://db/prebuildd?user=bob&sslmode=disable"),
            ("postgresql://alice:s3c/r@t@db/x", "postgresql://alice@db/x"),
            ("postgresql://db/x?password=s3cret", "postgresql://db/x"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown);
            let parsed = PostgresUrl::parse(url);
            if let Ok(parsed) = parsed {
                assert!(!format!("{parsed:?} {parsed}").contains("s3c"), "{parsed:?}");
            }
        }
    }

    #[test]
    fn urls_are_checked() {
        let url = PostgresUrl::parse("postgresql://alice:pw@127.0.0.1:5433/prebuildd").unwrap();
        assert_eq!(url.config().get_ports(), &[5433]);
        assert_eq!(url.config().get_dbname(), Some("prebuildd"));
        assert_eq!(url.config().get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert!(PostgresUrl::parse("host=db user=alice password=pw").unwrap_err().starts_with("must be a URL"));
        assert!(PostgresUrl::parse("mysql://db/x").is_err());
        assert!(PostgresUrl::parse("postgresql:///x").unwrap_err().contains("names no host"));
        let error = PostgresUrl::parse("postgresql://alice:pw@db:notaport/x").unwrap_err();
        assert!(error.contains("not a valid PostgreSQL URL") && !error.contains("pw"), "{error}");
        assert!(PostgresUrl::parse("postgresql://db/x?sslmode=require").unwrap_err().contains("not supported yet"));
    }
}
