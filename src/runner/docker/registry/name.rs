//! Where a runner pushes its snapshots, and the names of what it pushes:
//!
//! - `<registry>/<project id>:<prebuild id>`: each completed snapshot,
//!   recorded (and pulled) by digest, `<registry>/<project id>@sha256:...`;
//! - `<registry>/<project id>:<class id>-latest`: the newest snapshot of the
//!   project's default branch (the branch its warm pools follow) on that
//!   class, for a devcontainer.json's `"image"`.
//!
//! IDs are lower-case UUIDs, which are valid repository path components and
//! tags as they are.

use std::fmt;

/// A registry and the path under it: `registry.example.com/prebuilds`,
/// `localhost:5000` (no prefix), `ghcr.io/acme/prebuilds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryName {
    /// The registry's host, with its port if it has one.
    pub host: String,
    /// The path under it, without slashes at either end; may be empty.
    pub prefix: String,
}

impl RegistryName {
    /// Parses `host[:port][/path]` (no scheme: Docker decides between
    /// HTTPS and plain HTTP as for any image reference).
    pub fn parse(text: &str) -> Result<RegistryName, String> {
        let text = text.trim();
        if text.contains("://") {
            return Err(format!("{text:?}: write the registry without a scheme, as in an image name (registry.example.com/prebuilds)"));
        }
        let (host, prefix) = match text.split_once('/') {
            Some((host, prefix)) => (host, prefix.trim_end_matches('/')),
            None => (text, ""),
        };
        if host.is_empty() {
            return Err(format!("{text:?} names no registry host"));
        }
        // As Docker tells a registry from a Docker Hub user name: a dot, a
        // port or localhost.
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(format!(
                "{host:?} is not a registry host (it needs a dot, a port or to be localhost); Docker Hub is docker.io/<user>"
            ));
        }
        let host_ok = host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !host_ok {
            return Err(format!("{host:?} is not a host name with an optional port"));
        }
        if !prefix.is_empty() {
            if let Some(bad) = prefix.split('/').find(|component| !valid_path_component(component)) {
                return Err(format!(
                    "{bad:?} cannot be part of a repository name (lower-case letters and digits, separated by '.', '_', '__' or dashes)"
                ));
            }
        }
        Ok(RegistryName { host: host.to_string(), prefix: prefix.to_string() })
    }

    /// The repository of a project's snapshots.
    pub fn repository(&self, project_id: &str) -> String {
        match self.prefix.is_empty() {
            true => format!("{}/{project_id}", self.host),
            false => format!("{}/{}/{project_id}", self.host, self.prefix),
        }
    }

    /// The tag of the newest default-branch snapshot of a class.
    pub fn latest_tag(environment_class_id: &str) -> String {
        format!("{environment_class_id}-latest")
    }
}

impl fmt::Display for RegistryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix.is_empty() {
            true => write!(f, "{}", self.host),
            false => write!(f, "{}/{}", self.host, self.prefix),
        }
    }
}

/// A path component as the distribution spec has it:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or a run of '-', then an alphanumeric.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => i += if bytes.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !bytes.get(i).is_some_and(|b| is_alnum(*b)) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A pushed image by digest, taken apart: `host/path@sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestReference {
    pub host: String,
    /// The repository's path on the registry (what `/v2/<path>/...` names).
    pub path: String,
    pub digest: String,
}

impl DigestReference {
    pub fn parse(reference: &str) -> Result<DigestReference, String> {
        let (repository, digest) =
            reference.split_once('@').ok_or_else(|| format!("{reference:?} is not an image by digest (repository@sha256:...)"))?;
        let hex = digest.strip_prefix("sha256:").ok_or_else(|| format!("{reference:?}: only sha256 digests are known"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(format!("{reference:?}: the digest is not 64 lower-case hex digits"));
        }
        let (host, path) = repository.split_once('/').ok_or_else(|| format!("{reference:?} names no registry"))?;
        if host.is_empty() || path.is_empty() {
            return Err(format!("{reference:?} names no registry"));
        }
        Ok(DigestReference { host: host.to_string(), path: path.to_string(), digest: digest.to_string() })
    }

    /// The repository as an image name (`host/path`).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }
}

impl fmt::Display for DigestReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.host, self.path, self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_parse_as_image_names_do() {
        let name = RegistryName::parse("registry.example.com/prebuilds/").unwrap();
        assert_eq!((name.host.as_str(), name.prefix.as_str()), ("registry.example.com", "prebuilds"));
        assert_eq!(name.repository("p1"), "registry.example.com/prebuilds/p1");
        assert_eq!(name.to_string(), "registry.example.com/prebuilds");
        let bare = RegistryName::parse("localhost:5000").unwrap();
        assert_eq!(bare.repository("p1"), "localhost:5000/p1");
        assert_eq!(RegistryName::parse("ghcr.io/acme/pre-builds").unwrap().prefix, "acme/pre-builds");
        assert_eq!(RegistryName::latest_tag("c1"), "c1-latest");
        for bad in [
            "https://registry.example.com/x",
            "prebuilds",
            "/x",
            "registry.example.com/Upper",
            "host.com/a//b",
            "host.com/-a",
            "h st.com/x",
        ] {
            assert!(RegistryName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_components_follow_the_distribution_grammar() {
        for good in ["a", "a.b", "a_b", "a__b", "a---b", "9e000000-0000-4000-8000-000000000001"] {
            assert!(valid_path_component(good), "{good}");
        }
        for bad in ["", "A", "a.", ".a", "a___b", "a..b", "a_.b", "a/b"] {
            assert!(!valid_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn digest_references_come_apart() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let reference = DigestReference::parse(&format!("localhost:5000/prebuilds/p1@{digest}")).unwrap();
        assert_eq!((reference.host.as_str(), reference.path.as_str()), ("localhost:5000", "prebuilds/p1"));
        assert_eq!(reference.digest, digest);
        assert_eq!(reference.repository(), "localhost:5000/prebuilds/p1");
        assert_eq!(reference.to_string(), format!("localhost:5000/prebuilds/p1@{digest}"));
        for bad in [
            "localhost:5000/p1:tag".to_string(),
            format!("p1@{digest}"),
            "x/y@sha256:abc".to_string(),
            format!("x/y@md5:{}", "a".repeat(64)),
        ] {
            assert!(DigestReference::parse(&bad).is_err(), "{bad}");
        }
    }
}
