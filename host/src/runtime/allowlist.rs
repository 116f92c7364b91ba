//! Outbound network allowlist: `scheme://host:port` origins, deny by default.
//!
//! Allowed are the origins of URL values the user configured for the plugin, plus explicit
//! `--allow` entries. A port of `*` allows any port, a host of `*.example.com` allows its
//! subdomains. Names are compared as written, never resolved: the check happens before
//! any connection, so a denied request sends no packet.

use std::fmt;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        // The same default the redis capability connects to. `rediss://` (TLS) has none:
        // the capability refuses it, so the allowlist must not pretend to grant it.
        "redis" => Some(6379),
        _ => None,
    }
}

impl Origin {
    /// The origin of a URL, if it has a host and a known or explicit port.
    pub fn of(url: &Url) -> Option<Origin> {
        let scheme = url.scheme().to_ascii_lowercase();
        let host = url.host_str()?.to_ascii_lowercase();
        let port = url.port().or_else(|| default_port(&scheme))?;
        Some(Origin { scheme, host, port })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com` matches `a.example.com`, not `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    scheme: String,
    host: HostPattern,
    /// None allows any port.
    port: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid allow entry `{entry}`: {reason} (expected scheme://host:port, e.g. http://127.0.0.1:7001)"
)]
pub struct EntryError {
    pub entry: String,
    pub reason: String,
}

/// The set of origins a plugin may reach.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

impl Allowlist {
    /// Adds an explicit `--allow` entry.
    pub fn allow(&mut self, entry: &str) -> Result<(), EntryError> {
        let err = |reason: &str| EntryError {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| err("missing scheme"))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(err("an origin has no path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let scheme = scheme.to_ascii_lowercase();
        let port = match port {
            Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| err("bad port"))?),
            None => Some(
                default_port(&scheme)
                    .ok_or_else(|| err("no port and no default for this scheme"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let host = match host.strip_prefix("*.") {
            Some(suffix) => HostPattern::Suffix(format!(".{suffix}")),
            None if host == "*" => return Err(err("a bare `*` host would allow everything")),
            None => HostPattern::Exact(host),
        };
        self.entries.push(Entry { scheme, host, port });
        Ok(())
    }

    /// Adds the origin of every URL found in a config value (comma-separated lists too).
    /// Returns the origins added.
    pub fn allow_urls_in(&mut self, value: &str) -> Vec<Origin> {
        let mut added = Vec::new();
        for part in value.split(',') {
            let Ok(url) = Url::parse(part.trim()) else {
                continue;
            };
            if let Some(origin) = Origin::of(&url) {
                self.entries.push(Entry {
                    scheme: origin.scheme.clone(),
                    host: HostPattern::Exact(origin.host.clone()),
                    port: Some(origin.port),
                });
                added.push(origin);
            }
        }
        added
    }

    /// Whether `url` may be reached. On refusal, the reason names the origin and the fix.
    pub fn check(&self, url: &Url) -> Result<Origin, String> {
        let origin = Origin::of(url).ok_or_else(|| format!("`{url}` has no host or port"))?;
        let ok = self.entries.iter().any(|e| {
            e.scheme == origin.scheme
                && e.port.is_none_or(|p| p == origin.port)
                && match &e.host {
                    HostPattern::Exact(h) => *h == origin.host,
                    HostPattern::Suffix(s) => origin.host.ends_with(s.as_str()),
                }
        });
        if ok {
            Ok(origin)
        } else {
            Err(format!(
                "origin {origin} is not allowlisted (configure it in a setting or pass --allow {origin})"
            ))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Human-readable entries, for `run` to print what it allows.
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| {
                let host = match &e.host {
                    HostPattern::Exact(h) => h.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                };
                let port = e.port.map_or("*".to_string(), |p| p.to_string());
                format!("{}://{host}:{port}", e.scheme)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn denies_by_default() {
        let a = Allowlist::default();
        assert!(a.check(&url("http://127.0.0.1:7001/x")).is_err());
    }

    #[test]
    fn config_urls_allow_exactly_their_origin() {
        let mut a = Allowlist::default();
        let added = a.allow_urls_in("http://127.0.0.1:7001, http://127.0.0.1:7002/base,not a url");
        assert_eq!(added.len(), 2);
        assert!(a.check(&url("http://127.0.0.1:7001/metrics")).is_ok());
        assert!(a.check(&url("http://127.0.0.1:7002/")).is_ok());
        assert!(
            a.check(&url("http://127.0.0.1:7003/")).is_err(),
            "other port"
        );
        assert!(
            a.check(&url("https://127.0.0.1:7001/")).is_err(),
            "other scheme"
        );
        assert!(
            a.check(&url("http://localhost:7001/")).is_err(),
            "names are not resolved"
        );
        let err = a
            .check(&url("http://169.254.169.254/latest/meta-data"))
            .unwrap_err();
        assert!(err.contains("http://169.254.169.254:80"), "{err}");
    }

    #[test]
    fn explicit_entries_with_wildcards_and_defaults() {
        let mut a = Allowlist::default();
        a.allow("https://*.example.com:*").unwrap();
        a.allow("redis://10.0.0.5").unwrap();
        assert!(a.check(&url("https://db.example.com:8443/")).is_ok());
        assert!(a.check(&url("https://example.com/")).is_err());
        assert!(
            a.check(&url("redis://10.0.0.5/0")).is_ok(),
            "default redis port"
        );
        assert!(a.check(&url("redis://10.0.0.5:6380/0")).is_err());
        assert!(
            a.allow("rediss://10.0.0.5").is_err(),
            "no TLS Redis, so no default port to assume"
        );
        assert!(a.allow("127.0.0.1:80").is_err());
        assert!(a.allow("http://*:80").is_err());
        assert!(a.allow("http://h:99999").is_err());
        assert!(a.allow("http://h:1/path").is_err());
    }
}
