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

/// The session cookie of a fresh admin login, and its CSRF token.
async fn logged_in(s: &Server, c: &reqwest::Client) -> (String, String) {
    let r = login(s, c, common::ADMIN, None).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let html = page(s, c, &session).await.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    (session, csrf)
}

async fn page(s: &Server, c: &reqwest::Client, session: &str) -> reqwest::Response {
    c.get(s.url("/"))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
}

fn sessions_stored(s: &Server) -> i64 {
    s.conn()
        .query_row("SELECT count(*) FROM web_sessions", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_login_outlives_a_restart_until_logout_and_expired_sessions_are_refused_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let on_db = |st: &mut flotilla_reporter::Settings| st.db = db.clone().into();
    let c = client();

    let s = Server::start_with(on_db).await;
    let (session, csrf) = logged_in(&s, &c).await;
    assert_eq!(page(&s, &c, &session).await.status(), 200);
    s.stop().await;

    let s = Server::start_with(on_db).await;
    assert_eq!(
        page(&s, &c, &session).await.status(),
        200,
        "the login outlived the restart"
    );
    let r = c
        .post(s.url("/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(page(&s, &c, &session).await.status(), 303, "logged out");
    assert_eq!(sessions_stored(&s), 0, "logout deleted the session");

    let (expired, _) = logged_in(&s, &c).await;
    assert_eq!(sessions_stored(&s), 1);
    s.conn()
        .execute("UPDATE web_sessions SET expires_at = 1", [])
        .unwrap();
    assert_eq!(page(&s, &c, &expired).await.status(), 303, "expired");
    s.stop().await;

    // Retention's first round runs at start and deletes the expired row.
    let s = Server::start_with(on_db).await;
    common::wait_until("the expired session is pruned", || async {
        sessions_stored(&s) == 0
    })
    .await;
    s.stop().await;
}
