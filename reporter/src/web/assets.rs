//! The stylesheet and the script, compiled in.

use std::sync::OnceLock;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");

/// `GET /static/app.css`: the stylesheet plus width classes `w-0`…`w-100`
/// (bars use classes, so the CSP needs no inline styles).
pub async fn css() -> impl IntoResponse {
    static FULL: OnceLock<String> = OnceLock::new();
    let body = FULL.get_or_init(|| {
        let mut s = CSS.to_owned();
        for i in 0..=100 {
            s.push_str(&format!(".w-{i}{{width:{i}%}}\n"));
        }
        s
    });
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "max-age=300"),
        ],
        body.as_str(),
    )
}

/// `GET /static/app.js`.
pub async fn js() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
}
