//! The web login: session cookie attributes, CSRF and origin checks, and
//! the security headers on every page.

mod common;

use common::Server;
use reqwest::redirect::Policy;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn login(
    s: &Server,
    c: &reqwest::Client,
    token: &str,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = c.post(s.url("/login")).form(&[("token", token)]);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn pages_need_a_session_set_by_an_admin_login_with_a_strict_cookie() {
    let s = Server::start().await;
    let c = client();
    for page in ["/", "/agents", "/agents/x"] {
        let r = c.get(s.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{page}");
        assert_eq!(r.headers()["location"], "/login");
    }
    assert_eq!(login(&s, &c, "nope", None).await.status(), 401);
    let host = s.url.trim_start_matches("http://").to_owned();
    let r = login(&s, &c, common::ADMIN, Some("http://evil.example")).await;
    assert_eq!(r.status(), 403, "cross-site login refused");
    let r = login(&s, &c, common::ADMIN, Some(&format!("http://{host}"))).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();

    let r = c
        .get(s.url("/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();

    // logout needs the session's CSRF token
    let r = c
        .post(s.url("/logout"))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        c.get(s.url("/"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "still logged in"
    );
    let r = c
        .post(s.url("/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = c
        .get(s.url("/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the session is gone");
    s.stop().await;
}
