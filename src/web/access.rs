//! Who may call what: loopback clients may do anything; others need the bearer token for
//! mutations, and may read only when `http.allow_remote_reads` is on. The decisions are
//! pure functions; `guard` is the middleware that applies them.

use std::net::IpAddr;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use super::{WebError, WebState};

/// True for methods that change state.
pub fn is_mutation(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// True when the client address is loopback.
pub fn client_is_loopback(address: Option<IpAddr>) -> bool {
    address.is_some_and(|ip| ip.is_loopback())
}

/// Constant-time comparison of `Authorization: Bearer <token>` with the node's token.
pub fn token_matches(header: Option<&str>, token: &str) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (presented.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn client_address(request: &ServiceRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(forwarded) = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
    {
        return forwarded
            .split(',')
            .next()
            .and_then(|first| first.trim().parse().ok());
    }
    request.peer_addr().map(|a| a.ip())
}

/// The access middleware.
pub async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = request.app_data::<web::Data<WebState>>().cloned() else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let http = &state.node.config.http;
    let client = client_address(&request, http.trust_forwarded_for);
    if !client_is_loopback(client) {
        let denial = if is_mutation(request.method()) {
            let header = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            (!token_matches(header, &state.token)).then(|| WebError::Unauthorized {
                client: client
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "an unknown address".into()),
            })
        } else if !http.allow_remote_reads {
            Some(WebError::Forbidden {
                detail: "reads from other hosts are switched off (http.allow_remote_reads)".into(),
            })
        } else {
            None
        };
        if let Some(error) = denial {
            let response = error.error_response();
            return Ok(request.into_response(response).map_into_boxed_body());
        }
    }
    Ok(next.call(request).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert!(is_mutation(&Method::POST) && !is_mutation(&Method::GET));
        assert!(client_is_loopback(Some("127.0.0.1".parse().unwrap())));
        assert!(client_is_loopback(Some("::1".parse().unwrap())));
        assert!(!client_is_loopback(Some("10.0.0.2".parse().unwrap())));
        assert!(!client_is_loopback(None));
        assert!(token_matches(Some("Bearer abc"), "abc"));
        assert!(!token_matches(Some("Bearer abd"), "abc"));
        assert!(!token_matches(Some("abc"), "abc"));
        assert!(!token_matches(None, "abc"));
    }
}
