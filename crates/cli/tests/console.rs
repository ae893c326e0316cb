//! The web console against real hub and node processes (`airlock up`):
//! session and CSRF rules and security headers from Rust, then
//! `console/tests/console.test.mjs`, Playwright driving Debian's Chromium
//! (`AIRLOCK_TEST_CHROMIUM` names it; `.ci/run` installs it), which takes
//! the screenshots in `docs/console/` and prints the measurements this
//! test reports.

mod common;

use std::path::{Path, PathBuf};

use common::client_rooms;

/// The browser, or `None` (the browser half is skipped, loudly; with
/// `AIRLOCK_REQUIRE_BROWSER=1` it fails).
fn chromium() -> Option<PathBuf> {
    match std::env::var("AIRLOCK_TEST_CHROMIUM") {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert_ne!(
                std::env::var("AIRLOCK_REQUIRE_BROWSER").as_deref(),
                Ok("1"),
                "AIRLOCK_REQUIRE_BROWSER=1 but AIRLOCK_TEST_CHROMIUM is not set"
            );
            eprintln!("NOTE: AIRLOCK_TEST_CHROMIUM is not set: the browser half did not run");
            None
        }
    }
}

fn http(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("ca");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_checks_runs_approves_and_audits_in_a_real_browser() {
    airlock_service::install_crypto_provider();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let running = common::up_demo(&dir, 60_000).await;
    let hub = running.info.hub.trim_end_matches('/').to_string();
    let publisher = running.client("publisher").expect("client");
    let advertiser = running.client("advertiser").expect("client");
    // The template on demo, approved by the advertiser (the publisher
    // approves it in the browser); demo_dp; the publisher's solo.
    client_rooms(&publisher, &advertiser, &[&advertiser]).await;

    // Bad input to the new routes: a clear 400 naming what is allowed.
    for (path, allowed) in [
        (
            format!("/v1/queries/{}/result?format=xml", "0".repeat(32)),
            "arrow, json, csv, parquet",
        ),
        (
            "/v1/collaborations/demo/records?format=xml".to_string(),
            "json or md",
        ),
    ] {
        let (code, text) = advertiser
            .raw(airlock_service::client::Method::GET, &path, None)
            .await
            .expect("call");
        assert_eq!(code.as_u16(), 400, "{path}: {text}");
        assert!(text.contains(allowed), "{path}: {text}");
    }

    // Sessions, CSRF and headers, from Rust.
    let c = http(&running.info.ca);
    let page = c.get(format!("{hub}/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    let body = page.text().await.expect("body");
    assert!(
        airlock_service::hub_service::console::console_built(),
        "the console was not built into this hub (see the build's warning)"
    );
    assert!(
        body.contains("/assets/") && !body.contains("<script>"),
        "{body}"
    );
    let bytes = airlock_service::hub_service::console::console_compressed_bytes();
    println!("MEASURE console_bundle_gzip_bytes {bytes}");
    assert!(
        bytes < 500 * 1024,
        "the console is {bytes} bytes compressed"
    );
    let none = c
        .get(format!("{hub}/v1/collaborations"))
        .send()
        .await
        .expect("none");
    assert_eq!(none.status(), 401);
    let token = running.info.tokens["advertiser"].clone();
    let malformed = c
        .post(format!("{hub}/v1/session"))
        .json(&serde_json::json!({ "tok": token }))
        .send()
        .await
        .expect("malformed");
    assert!(
        malformed.status().is_client_error(),
        "{}",
        malformed.status()
    );
    assert!(malformed.headers().get("set-cookie").is_none());
    let signed = c
        .post(format!("{hub}/v1/session"))
        .json(&serde_json::json!({ "token": format!("  {token}\n") }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed.status(), 200);
    let set = signed.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    for attr in [
        "__Host-airlock-session=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().expect("cookie").to_string();
    let answer: serde_json::Value = signed.json().await.expect("json");
    assert_eq!(answer["member"], "advertiser");
    let csrf = answer["csrf"].as_str().expect("csrf").to_string();
    let check = |with: Option<&str>| {
        let mut r = c
            .post(format!("{hub}/v1/collaborations/demo/check"))
            .header("cookie", &cookie)
            .json(&serde_json::json!({ "sql": "SELECT segment, COUNT(DISTINCT email) FROM audience GROUP BY segment" }));
        if let Some(t) = with {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    assert_eq!(check(None).await.expect("check").status(), 403);
    assert_eq!(check(Some("00")).await.expect("check").status(), 403);
    let ok = check(Some(&csrf)).await.expect("check");
    assert_eq!(ok.headers()["cache-control"], "no-store");
    assert_ne!(
        ok.status(),
        403,
        "with the CSRF token the check is answered"
    );
    let listed = c
        .get(format!("{hub}/v1/collaborations"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status(), 200);
    let out = c
        .delete(format!("{hub}/v1/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 204);
    let after = c
        .get(format!("{hub}/v1/collaborations"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("after");
    assert_eq!(after.status(), 401, "the session ended at sign-out");

    // The browser.
    let Some(chromium) = chromium() else {
        return;
    };
    let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../console");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console");
    std::fs::create_dir_all(&shots).expect("docs/console");
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "tests/console.test.mjs"])
        .current_dir(&console)
        .env("AIRLOCK_CONSOLE_URL", &hub)
        .env("AIRLOCK_TOKEN_PUBLISHER", &running.info.tokens["publisher"])
        .env(
            "AIRLOCK_TOKEN_ADVERTISER",
            &running.info.tokens["advertiser"],
        )
        .env("AIRLOCK_KEY_PUBLISHER", &running.info.keys["publisher"])
        .env("AIRLOCK_KEY_ADVERTISER", &running.info.keys["advertiser"])
        .env("AIRLOCK_CHROMIUM", &chromium)
        .env("AIRLOCK_SCREENSHOTS", &shots)
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser tests failed");
    assert!(stdout.contains("MEASURE live_check_median_ms"), "{stdout}");
}
