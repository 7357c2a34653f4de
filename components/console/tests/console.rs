//! The console's page and assets, as its real `.wasm` serves them.

use coupon_tests::*;
use serde_json::Value;

async fn get(t: &TestApp, method: &str, path: &str) -> Answer {
    t.send(&Caller::Anonymous, method, path, &[], Value::Null)
        .await
}

fn text(answer: &Answer) -> &str {
    answer.body.as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_under_a_same_origin_policy() {
    let t = TestApp::new().await;
    for (path, media, marker) in [
        (
            "/console/",
            "text/html; charset=utf-8",
            "<script src=\"console.js\">",
        ),
        (
            "/console/console.js",
            "text/javascript; charset=utf-8",
            "sessionStorage",
        ),
        ("/console/console.css", "text/css; charset=utf-8", "#chart"),
    ] {
        let answer = get(&t, "GET", path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("content-type"), Some(media), "{path}");
        assert!(text(&answer).contains(marker), "{path}");
        let policy = answer.header("content-security-policy").unwrap_or_default();
        assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(policy.contains("connect-src 'self'"), "{path}: {policy}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        // Nothing is fetched from elsewhere (SVG's namespace is a name, not a fetch).
        let body = text(&answer).replace("'http://www.w3.org/2000/svg'", "");
        assert!(!body.contains("http://"), "{path}");
        assert!(!body.contains("https://"), "{path}");
    }
}

#[tokio::test]
async fn the_bare_path_redirects_and_anything_else_is_refused() {
    let t = TestApp::new().await;
    let bare = get(&t, "GET", "/console").await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), Some("/console/"));
    assert_eq!(get(&t, "GET", "/console/missing.js").await.status, 404);
    assert_eq!(get(&t, "GET", "/console/../claims").await.status, 404);
    let post = get(&t, "POST", "/console/").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = get(&t, "HEAD", "/console/console.js").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, Value::Null);
}

#[tokio::test]
async fn the_token_is_kept_in_session_storage_and_sent_only_as_a_header() {
    let t = TestApp::new().await;
    let script = get(&t, "GET", "/console/console.js").await;
    let script = text(&script);
    assert!(script.contains("sessionStorage.setItem"));
    assert!(!script.contains("localStorage"));
    assert!(script.contains("authorization: `Bearer ${token}`"));
    // Never in a URL: no query parameter carries it.
    assert!(!script.contains("token="));
}
