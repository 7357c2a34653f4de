//! The operator's console at `/console/`: a single page whose script and
//! style are embedded in this `.wasm`. It touches neither the store nor the
//! variables: the page calls the campaigns API with the admin token the
//! operator pastes, kept in the tab's session storage. Every asset is served
//! under a content security policy that allows nothing from elsewhere.

use spin_sdk::http::{HeaderMap, HeaderValue, IntoResponse, Method, Request, StatusCode};

/// Path, media type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/console/",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "/console/console.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console.js"),
    ),
    (
        "/console/console.css",
        "text/css; charset=utf-8",
        include_str!("../assets/console.css"),
    ),
];

/// Same-origin only: no inline script, no outside fetch, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    let path = request.uri().path();
    let method = request.method();
    let mut headers = HeaderMap::new();
    let found = ASSETS.iter().find(|(at, _, _)| *at == path);
    let (status, body) = match found {
        _ if path == "/console" => {
            headers.insert("location", HeaderValue::from_static("/console/"));
            (StatusCode::PERMANENT_REDIRECT, String::new())
        }
        Some(_) if method != Method::GET && method != Method::HEAD => {
            headers.insert("allow", HeaderValue::from_static("GET, HEAD"));
            (StatusCode::METHOD_NOT_ALLOWED, String::new())
        }
        Some((_, media, body)) => {
            headers.insert("content-type", HeaderValue::from_static(media));
            let body = if method == Method::HEAD { "" } else { body };
            (StatusCode::OK, body.to_owned())
        }
        None => (StatusCode::NOT_FOUND, String::new()),
    };
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    (status, headers, body)
}
