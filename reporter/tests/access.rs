//! Issue 16's reporter access points, each an attack on the real binary over
//! HTTP on loopback: a read token that cannot write, an enrollment token
//! that cannot enroll a crowd, revoked and squatted agent ids, half-sent
//! connections, and failed logins that lock out only their own address.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use common::{both, Backend, Binary, ADMIN};
use flotilla_protocol::api::{AgentList, EnrollResponse, Gate, RolloutList, RolloutProgress};
use flotilla_protocol::{EventKind, EventStatus};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

both!(
    #[tokio::test];
    a_read_token_reads_status_and_plan_data_and_every_write_is_refused,
    one_enrollment_token_cannot_enroll_a_crowd_and_the_page_shows_who_enrolled_whom,
    a_revoked_agent_stays_out_until_readmitted_and_a_squatted_id_can_be_released,
    half_sent_requests_are_closed_and_healthz_answers_through_a_flood,
    failed_logins_and_tokens_lock_out_only_their_own_address,
);

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is
/// loopback on Linux).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn get(c: &reqwest::Client, b: &Binary, path: &str, token: &str) -> reqwest::Response {
    c.get(b.url(path)).bearer_auth(token).send().await.unwrap()
}

async fn login(c: &reqwest::Client, b: &Binary, token: &str) -> reqwest::Response {
    c.post(b.url("/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

async fn a_read_token_reads_status_and_plan_data_and_every_write_is_refused(backend: Backend) {
    // The reporter lists only the rollouts of a manifest it verified.
    let store = tempfile::tempdir().unwrap();
    let fleet = common::SignedFleet::new(store.path());
    fleet.publish("1.1.0", 0.5, 2);
    let b = Binary::on(
        &backend,
        &format!(
            "manifest = {:?}\ntrust_root = {:?}\n",
            fleet.manifest_path().display().to_string(),
            fleet.root_path().display().to_string()
        ),
    );
    let http = client_from("127.0.0.1");
    let enroll = b.token(&["--uses", "2"]);
    let r = b.enroll(&http, &enroll, "web-01").await;
    assert_eq!(r.status(), 201);
    let agent = r.json::<EnrollResponse>().await.unwrap().agent_token;
    let e = common::update(
        "web-01",
        EventKind::UpdateHealthcheck,
        EventStatus::Success,
        "1.1.0",
        "canary",
    );
    let r = http
        .post(b.url("/api/v1/events"))
        .bearer_auth(&agent)
        .json(&serde_json::json!({ "events": [e] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (ok, read, err) = b.cli(&["token", "create", "--scope", "read", "--note", "ci"]);
    assert!(ok, "{err}");
    let read = read.trim().to_owned();
    assert!(read.starts_with("flotilla-read-"), "{read}");
    assert!(err.contains("shown only now"), "{err}");

    // What `flotilla-publisher status` and `plan` read, and Prometheus.
    let list: RolloutList = get(&http, &b, "/api/v1/rollouts", &read)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.rollouts.len(), 1, "{list:?}");
    let p: RolloutProgress = get(&http, &b, "/api/v1/rollouts/stable/1.1.0", &read)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p.release, "1.1.0");
    let agents: AgentList = get(
        &http,
        &b,
        "/api/v1/agents?sort=agent_id&limit=1000&offset=0",
        &read,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(agents.total, 1);
    for path in ["/api/v1/agents/web-01", "/api/v1/agents/web-01/events"] {
        assert_eq!(get(&http, &b, path, &read).await.status(), 200, "{path}");
    }
    let g: Gate = get(&http, &b, "/api/v1/gate/stable/1.1.0", &read)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(g.release, "1.1.0");
    let m = get(&http, &b, "/metrics", &read).await;
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("flotilla_"));

    // Every write: events, enrollment, the web login.
    let r = http
        .post(b.url("/api/v1/events"))
        .bearer_auth(&read)
        .json(&serde_json::json!({ "events": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "events");
    let r = b.enroll(&http, &read, "web-02").await;
    assert_eq!(r.status(), 403, "enroll");
    let r = login(&http, &b, &read).await;
    assert_eq!(r.status(), 403, "login");
    assert!(r.headers().get("set-cookie").is_none());
    // the admin token still does everything
    assert_eq!(login(&http, &b, ADMIN).await.status(), 303);
    assert_eq!(get(&http, &b, "/api/v1/agents", ADMIN).await.status(), 200);

    // revoked: 401
    let (_, list, _) = b.cli(&["token", "list"]);
    let id = list
        .lines()
        .find(|l| l.contains(" read ") && l.ends_with("ci"))
        .unwrap_or_else(|| panic!("{list}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(b.cli(&["token", "revoke", &id]).0);
    assert_eq!(
        get(&http, &b, "/api/v1/rollouts", &read).await.status(),
        401
    );
}

async fn one_enrollment_token_cannot_enroll_a_crowd_and_the_page_shows_who_enrolled_whom(
    backend: Backend,
) {
    let b = Binary::on(&backend, "enroll_burst = 5.0\nenroll_per_minute = 1.0\n");
    let http = client_from("127.0.0.1");
    // without flags: one agent, one day
    let (ok, plain, err) = b.cli(&["token", "create", "--note", "default"]);
    assert!(ok, "{err}");
    assert!(err.contains("uses: 1"), "{err}");
    assert!(!err.contains("expires: never"), "{err}");
    assert_eq!(b.enroll(&http, plain.trim(), "web-01").await.status(), 201);
    let r = b.enroll(&http, plain.trim(), "fake-01").await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("used up"));

    // an explicitly unlimited token: the address's enrollment rate stops the crowd
    let wide = b.token(&[
        "--uses",
        "unlimited",
        "--expires",
        "never",
        "--note",
        "leaked",
    ]);
    let mut codes = Vec::new();
    for i in 0..40 {
        let r = b.enroll(&http, &wide, &format!("fake-{i:02}")).await;
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
        }
        codes.push(r.status().as_u16());
    }
    let enrolled = codes.iter().filter(|&&c| c == 201).count();
    // 5 attempts at once, refused ones included: web-01 and fake-01 took two
    assert_eq!(enrolled, 3, "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");

    // token list and the agents page say how many agents each token enrolled
    let (_, list, _) = b.cli(&["token", "list"]);
    let line = |note: &str| list.lines().find(|l| l.ends_with(note)).unwrap().to_owned();
    let cols = |l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(cols(line("leaked"))[4], "3", "{list}");
    assert_eq!(
        cols(line("default"))[2..6],
        ["used", "up", "1/1", "1"],
        "{list}"
    );
    let r = login(&http, &b, ADMIN).await;
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = http
        .get(b.url("/agents"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let table = &page[page.find("enrollment-tokens").expect("the tokens table")..];
    let row = &table[table
        .find(">leaked<")
        .map(|i| table[..i].rfind("<tr").unwrap())
        .unwrap()..];
    assert!(row.contains(r#"<td class="agents">3</td>"#), "{row}");
}

async fn a_revoked_agent_stays_out_until_readmitted_and_a_squatted_id_can_be_released(
    backend: Backend,
) {
    let b = Binary::on(&backend, "");
    let http = client_from("127.0.0.1");
    let shared = b.token(&["--uses", "10"]);
    let r = b.enroll(&http, &shared, "web-07").await;
    assert_eq!(r.status(), 201);
    let old = r.json::<EnrollResponse>().await.unwrap().agent_token;

    assert!(b.cli(&["agent", "revoke", "web-07"]).0);
    let post = |t: String| {
        let http = http.clone();
        let url = b.url("/api/v1/events");
        async move {
            http.post(url)
                .bearer_auth(t)
                .json(&serde_json::json!({ "events": [] }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post(old.clone()).await, 401);
    // the shared enrollment token does not bring it back
    let r = b.enroll(&http, &shared, "web-07").await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("agent readmit web-07"));
    let (ok, _, err) = b.cli(&["agent", "readmit", "web-07"]);
    assert!(ok, "{err}");
    let r = b.enroll(&http, &shared, "web-07").await;
    assert_eq!(r.status(), 201);
    let new = r.json::<EnrollResponse>().await.unwrap().agent_token;
    assert_ne!(new, old);
    assert_eq!(post(new).await, 200);
    assert_eq!(post(old).await, 401);

    // squatting: someone enrolls web-99 before the real host
    let r = b.enroll(&http, &shared, "web-99").await;
    let squatter = r.json::<EnrollResponse>().await.unwrap().agent_token;
    let r = b.enroll(&http, &shared, "web-99").await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("agent release web-99"));
    let (ok, _, err) = b.cli(&["agent", "release", "web-99"]);
    assert!(ok, "{err}");
    assert_eq!(post(squatter).await, 401);
    assert_eq!(b.enroll(&http, &shared, "web-99").await.status(), 201);
    let (ok, _, err) = b.cli(&["agent", "release", "ghost"]);
    assert!(!ok && err.contains("no agent ghost"), "{err}");
}

/// Reads until the server closes the connection; the bytes it sent.
fn read_to_close(mut s: TcpStream) -> std::io::Result<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(buf),
        Err(e) => Err(e),
    }
}

async fn half_sent_requests_are_closed_and_healthz_answers_through_a_flood(backend: Backend) {
    // 64 file descriptors, at most 16 connections served at once.
    let b = Binary::on_with(
        &backend,
        "max_connections = 16\nheader_read_timeout = \"1s\"\nrequest_timeout = \"2s\"\n",
        Some(64),
    );
    let addr = b.url.strip_prefix("http://").unwrap().to_owned();
    let flood: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
                .unwrap();
            s
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let r = http.get(b.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let closed = tokio::task::spawn_blocking(move || {
        flood
            .into_iter()
            .map(read_to_close)
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .unwrap()
    .expect("every half-sent connection is closed by the server");
    assert_eq!(closed.len(), 100);

    // a body that never completes: 408 once the request timeout passes
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        b"POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"agent",
    )
    .unwrap();
    let got = tokio::task::spawn_blocking(move || read_to_close(s))
        .await
        .unwrap()
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
}

async fn failed_logins_and_tokens_lock_out_only_their_own_address(backend: Backend) {
    let b = Binary::on(
        &backend,
        "auth_failure_burst = 5.0\nauth_failures_per_minute = 1.0\n\
         trusted_proxies = [\"127.0.0.3\"]\npublic_url = \"https://reporter.example.com/\"\n",
    );
    let attacker = client_from("127.0.0.2");
    let admin = client_from("127.0.0.1");
    let mut codes = Vec::new();
    for i in 0..60 {
        codes.push(
            login(&attacker, &b, &format!("wrong-{i}"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes.iter().filter(|&&c| c == 401).count(), 5, "{codes:?}");
    assert!(codes[5..].iter().all(|&c| c == 429), "{codes:?}");
    // the bearer API counts in the same bucket
    let r = get(&attacker, &b, "/api/v1/agents", &"0".repeat(64)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    // the admin, elsewhere, is not locked out
    let r = login(&admin, &b, ADMIN).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "public_url is https: {cookie}");
    assert_eq!(get(&admin, &b, "/api/v1/agents", ADMIN).await.status(), 200);

    // behind the trusted proxy, X-Forwarded-For names the client
    let proxy = client_from("127.0.0.3");
    let via = |client: &'static str, token: String| {
        let proxy = proxy.clone();
        let url = b.url("/api/v1/agents");
        async move {
            proxy
                .get(url)
                .bearer_auth(token)
                .header("x-forwarded-for", format!("203.0.113.9, {client}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for _ in 0..5 {
        assert_eq!(via("198.51.100.7", "bad".into()).await, 401);
    }
    assert_eq!(
        via("198.51.100.7", ADMIN.into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(via("198.51.100.8", ADMIN.into()).await, 200);
    // from an untrusted peer the header is ignored: the attacker stays itself
    let r = attacker
        .get(b.url("/api/v1/agents"))
        .bearer_auth(ADMIN)
        .header("x-forwarded-for", "198.51.100.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}
