//! The panel's files, compiled into the binary from `static/`: the page (which also takes
//! the login URL and sets the session cookie), its script and its style sheet.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};

use crate::web::WebState;

const INDEX_HTML: &str = include_str!("../../../static/index.html");
const APP_JS: &str = include_str!("../../../static/app.js");
const STYLE_CSS: &str = include_str!("../../../static/style.css");

/// The panel. With `?token=<token>` (the login URL the node logs at start; the access guard
/// has already refused a wrong token) it sets the session cookie and sends the browser to
/// the clean URL, so the token leaves the address bar and the history.
pub(super) async fn index(
    request: actix_web::HttpRequest,
    state: web::Data<WebState>,
) -> HttpResponse {
    let policy = &state.policy;
    let logging_in =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .ok()
            .and_then(|q| q.get("token").cloned())
            .is_some_and(|token| {
                crate::web::token_matches(Some(&format!("Bearer {token}")), &policy.token)
            });
    if logging_in {
        let cookie = actix_web::cookie::Cookie::build(&policy.cookie_name, &policy.session)
            .path("/")
            .http_only(true)
            .same_site(actix_web::cookie::SameSite::Strict)
            .finish();
        return HttpResponse::SeeOther()
            .cookie(cookie)
            .insert_header((actix_web::http::header::LOCATION, "/"))
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .finish();
    }
    // Without the session the page still loads (it holds no data), but it says how to log
    // in instead of knocking on `/ws` forever.
    let cookies = request
        .headers()
        .get(actix_web::http::header::COOKIE)
        .and_then(|v| v.to_str().ok());
    let logged_in = crate::web::access::cookie_value(cookies, &policy.cookie_name)
        .is_some_and(|value| value == policy.session);
    let page = if logged_in {
        std::borrow::Cow::Borrowed(INDEX_HTML)
    } else {
        std::borrow::Cow::Owned(INDEX_HTML.replacen("<body>", "<body data-login=\"needed\">", 1))
    };
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .body(page.into_owned())
}

pub(super) async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/javascript; charset=utf-8")
        .body(APP_JS)
}

pub(super) async fn style_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE_CSS)
}
