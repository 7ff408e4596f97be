//! The token and the session cookie: constant-time comparison of a presented token, the
//! cookie's name and value (a hash of the token), reading a cookie from a `Cookie` header,
//! and the login URL the node logs at start.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

/// Constant-time equality of two secrets (the length is not secret).
pub(super) fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Constant-time comparison of `Authorization: Bearer <token>` with the node's token.
pub fn token_matches(header: Option<&str>, token: &str) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    secret_eq(presented.trim().as_bytes(), token.as_bytes())
}

/// The session cookie's name for a node on `port`: browsers send a host's cookies to every
/// port of it, so nodes on one host (`apn demo`) need names of their own.
pub fn cookie_name(port: u16) -> String {
    format!("apn_session_{port}")
}

/// The session cookie's value: a hash of the token, so the cookie is not the API token.
pub(crate) fn session_value(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"apn panel session v1\0");
    hasher.update(token.as_bytes());
    hex::encode(hasher.finalize())
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`).
pub(crate) fn cookie_value<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// The URL that logs a browser in: `http://<address>/?token=<token>` (an unspecified bind
/// address becomes the matching loopback address).
pub fn login_url(address: SocketAddr, token: &str) -> String {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/?token={token}",
        SocketAddr::new(ip, address.port())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cookies_and_login_urls() {
        assert!(token_matches(Some("Bearer abc"), "abc"));
        assert!(!token_matches(Some("Bearer abd"), "abc"));
        assert!(!token_matches(Some("Bearer ab"), "abc"));
        assert!(!token_matches(Some("abc"), "abc"));
        assert!(!token_matches(None, "abc"));
        assert_eq!(
            cookie_value(Some("a=1; apn_session_80=xy"), "apn_session_80"),
            Some("xy")
        );
        assert_eq!(
            cookie_value(Some("apn_session_8=xy"), "apn_session_80"),
            None
        );
        assert_eq!(cookie_value(None, "a"), None);
        assert_ne!(session_value("abc"), "abc");
        assert_eq!(session_value("abc"), session_value("abc"));
        assert_eq!(
            login_url("0.0.0.0:9000".parse().unwrap(), "tok"),
            "http://127.0.0.1:9000/?token=tok"
        );
        assert_eq!(
            login_url("[::1]:9000".parse().unwrap(), "tok"),
            "http://[::1]:9000/?token=tok"
        );
    }
}
