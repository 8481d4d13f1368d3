//! The web login: session cookie attributes, CSRF and origin checks, and
//! the security headers on every page.

mod common;

use common::{both, Backend};

use common::Server;
use reqwest::redirect::Policy;

both!(
    #[tokio::test];
    pages_need_a_session_set_by_an_admin_login_with_a_strict_cookie,
    a_login_outlives_a_restart_until_logout_and_expired_sessions_are_refused_and_pruned,
);

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

async fn pages_need_a_session_set_by_an_admin_login_with_a_strict_cookie(backend: Backend) {
    let s = Server::on(&backend).await;
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

async fn sessions_stored(s: &Server) -> i64 {
    s.db.scalar("SELECT count(*) FROM web_sessions").await
}

async fn a_login_outlives_a_restart_until_logout_and_expired_sessions_are_refused_and_pruned(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = backend.fresh(dir.path());
    let c = client();

    let s = Server::on_db(&db, |_| {}).await;
    let (session, csrf) = logged_in(&s, &c).await;
    assert_eq!(page(&s, &c, &session).await.status(), 200);
    s.stop().await;

    let s = Server::on_db(&db, |_| {}).await;
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
    assert_eq!(sessions_stored(&s).await, 0, "logout deleted the session");

    let (expired, _) = logged_in(&s, &c).await;
    assert_eq!(sessions_stored(&s).await, 1);
    s.db.execute("UPDATE web_sessions SET expires_at = 1").await;
    assert_eq!(page(&s, &c, &expired).await.status(), 303, "expired");
    s.stop().await;

    // Retention's first round runs at start and deletes the expired row.
    let s = Server::on_db(&db, |_| {}).await;
    common::wait_until("the expired session is pruned", || async {
        sessions_stored(&s).await == 0
    })
    .await;
    s.stop().await;
}
