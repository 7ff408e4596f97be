//! Host and Origin: parsing a `Host` value, the names this node serves
//! ([`AccessPolicy`], built once from `[http]`) and whether an `Origin` is the request's own
//! Host.

use std::net::{IpAddr, SocketAddr};

use super::token::{cookie_name, session_value};

/// Split a `Host` value (or an `http.allowed_hosts` entry) into its lower-case name and its
/// port: `Example.org:8080` → (`example.org`, 8080), `[::1]` → (`::1`, none). `None` for
/// text that is no host (empty, spaces, a path, a bare IPv6 address, a bad port).
pub fn parse_host(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#' | ',' | '\\'))
    {
        return None;
    }
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        (inside.to_string(), port)
    } else {
        match text.split_once(':') {
            None => (text.to_string(), None),
            Some((name, port)) => {
                if name.is_empty() || port.contains(':') {
                    return None;
                }
                (name.to_string(), Some(port.parse::<u16>().ok()?))
            }
        }
    };
    Some((name.to_ascii_lowercase(), port))
}

/// What the node serves and whom it trusts: built once when the server starts.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// The bound port: the built-in names are served with it or without a port.
    pub port: u16,
    /// `127.0.0.1`, `localhost`, `::1` and the bind address.
    pub local_names: Vec<String>,
    /// `http.allowed_hosts`, parsed: a name with no port matches any port.
    pub allowed_hosts: Vec<(String, Option<u16>)>,
    /// `http.trusted_proxies`.
    pub trusted_proxies: Vec<IpAddr>,
    /// `http.allow_remote_reads`.
    pub allow_remote_reads: bool,
    /// The API token.
    pub token: String,
    /// The session cookie's name and value.
    pub cookie_name: String,
    /// The cookie value that counts as logged in: a SHA-256 of the token, not the token.
    pub session: String,
}

impl AccessPolicy {
    /// The policy of a server bound to `bound` with `http` settings and `token`.
    pub fn new(http: &crate::config::HttpConfig, bound: SocketAddr, token: String) -> Self {
        let mut local_names = vec!["127.0.0.1".to_string(), "localhost".into(), "::1".into()];
        let ip = bound.ip();
        if !ip.is_unspecified() && !local_names.contains(&ip.to_string()) {
            local_names.push(ip.to_string());
        }
        AccessPolicy {
            port: bound.port(),
            local_names,
            allowed_hosts: http
                .allowed_hosts
                .iter()
                .filter_map(|h| parse_host(h))
                .collect(),
            trusted_proxies: http.trusted_proxies.clone(),
            allow_remote_reads: http.allow_remote_reads,
            cookie_name: cookie_name(bound.port()),
            session: session_value(&token),
            token,
        }
    }

    /// True when `host` (a `Host` header value) names this node.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = parse_host(host) else {
            return false;
        };
        let local = self.local_names.contains(&name) && port.is_none_or(|p| p == self.port);
        local
            || self.allowed_hosts.iter().any(|(allowed, allowed_port)| {
                *allowed == name && (allowed_port.is_none() || *allowed_port == port)
            })
    }
}

/// True when `origin` (an `Origin` header) is absent or is `http(s)://<host>`, the request's
/// own Host; a default port (80, 443) may be written or left out on either side.
pub fn origin_matches(origin: Option<&str>, host: &str) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let (authority, default_port) = if let Some(rest) = origin.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = origin.strip_prefix("https://") {
        (rest, 443)
    } else {
        return false; // `null`, `file://`, anything else
    };
    match (parse_host(authority), parse_host(host)) {
        (Some((origin_name, origin_port)), Some((host_name, host_port))) => {
            origin_name == host_name
                && origin_port.unwrap_or(default_port) == host_port.unwrap_or(default_port)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::policy;
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(
            parse_host("Example.ORG:80"),
            Some(("example.org".into(), Some(80)))
        );
        assert_eq!(parse_host("localhost"), Some(("localhost".into(), None)));
        assert_eq!(parse_host("[::1]:8080"), Some(("::1".into(), Some(8080))));
        assert_eq!(parse_host("[::1]"), Some(("::1".into(), None)));
        for bad in [
            "", "::1", "a b", "a/b", "a:", "a:99999", "[::1", "[x]:1", "u@h", "a:1:2",
        ] {
            assert_eq!(parse_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_names_the_node_serves_are_hosts() {
        let policy = policy(&["panel.lan", "proxy.lan:8443"], &[]);
        for good in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:8080",
            "[::1]",
            "[::1]:8080",
            "panel.lan",
            "panel.lan:1234",
            "proxy.lan:8443",
        ] {
            assert!(policy.host_allowed(good), "{good}");
        }
        for bad in [
            "evil.test",
            "evil.test:8080",
            "localhost:9999",
            "127.0.0.1:80",
            "proxy.lan",
            "proxy.lan:8444",
            "localhost.evil.test",
            "127.0.0.2",
            "",
        ] {
            assert!(!policy.host_allowed(bad), "{bad}");
        }
        let bound = AccessPolicy::new(
            &Default::default(),
            "10.1.2.3:8080".parse().unwrap(),
            "t".into(),
        );
        assert!(bound.host_allowed("10.1.2.3:8080") && !bound.host_allowed("10.1.2.4:8080"));
        let any = AccessPolicy::new(
            &Default::default(),
            "0.0.0.0:8080".parse().unwrap(),
            "t".into(),
        );
        assert!(!any.host_allowed("0.0.0.0:8080"));
    }

    #[test]
    fn origins_match_the_host() {
        assert!(origin_matches(None, "localhost:8080"));
        assert!(origin_matches(
            Some("http://localhost:8080"),
            "localhost:8080"
        ));
        assert!(origin_matches(
            Some("http://LOCALHOST:8080"),
            "localhost:8080"
        ));
        assert!(origin_matches(Some("http://localhost"), "localhost:80"));
        assert!(origin_matches(Some("https://panel.lan"), "panel.lan:443"));
        assert!(origin_matches(Some("http://[::1]:8080"), "[::1]:8080"));
        assert!(!origin_matches(Some("http://evil.test"), "localhost:8080"));
        assert!(!origin_matches(
            Some("http://localhost:8081"),
            "localhost:8080"
        ));
        assert!(!origin_matches(Some("http://localhost"), "localhost:8080"));
        assert!(!origin_matches(Some("https://localhost"), "localhost:80"));
        assert!(!origin_matches(Some("null"), "localhost:8080"));
        assert!(!origin_matches(Some("file://"), "localhost"));
        assert!(!origin_matches(
            Some("http://localhost:8080/x"),
            "localhost:8080"
        ));
    }
}
