//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven over
//! the DevTools protocol, on the demo's data. Every role signs in through the form and
//! opens every page; the test asserts what each may see and do, runs axe-core in each
//! page (no serious or critical violation), checks that no person's email, login or
//! pseudonym reaches any page, that hostile text is inert, and writes a screenshot of
//! every page to `target/tmp/dashboard-screenshots/`.
//!
//! Chromium and axe-core are found on the machine (`VEIL_CHROMIUM`, `VEIL_AXE_JS`, or the
//! usual places); without them the test says so and passes, unless
//! `VEIL_REQUIRE_CHROMIUM=1` (as in CI).

mod common;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::network::CookieSameSite;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use common::{Gateway, Veil};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("VEIL_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/usr/bin/chromium",
                "/usr/bin/chromium-browser",
                "/usr/bin/google-chrome",
            ]
            .into_iter()
            .map(PathBuf::from),
        )
        .find(|p| p.exists());
    if found.is_none() && std::env::var("VEIL_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
        panic!("VEIL_REQUIRE_CHROMIUM=1 but no Chromium found (apt-get install chromium)");
    }
    found
}

fn axe_source() -> Option<String> {
    let path = std::env::var_os("VEIL_AXE_JS")
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("axe/package/axe.min.js");
            p.exists().then_some(p)
        });
    let src = path.and_then(|p| std::fs::read_to_string(p).ok());
    if src.is_none() && std::env::var("VEIL_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
        panic!("VEIL_REQUIRE_CHROMIUM=1 but no axe-core (set VEIL_AXE_JS to axe.min.js)");
    }
    src
}

/// The demo, run for real into a temporary directory: its output holds the tokens.
fn demo() -> Veil {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("demo")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Veil {
        dir,
        printed: Default::default(),
        init_out: String::from_utf8(out.stdout).unwrap(),
    }
}

/// Every page the test opens, and a short name for its screenshot.
const PAGES: &[(&str, &str)] = &[
    ("/", "team-health"),
    ("/?metric=builds&weeks=12&view=table", "team-health-table"),
    ("/?metric=build_duration&weeks=4", "team-build-duration"),
    ("/usage", "usage"),
    ("/usage?metric=errors&view=table", "usage-errors-table"),
    ("/posture", "posture"),
    ("/audit", "audit"),
    ("/grants", "grants"),
    ("/subjects", "subjects"),
    ("/about", "about"),
    ("/about/ci.build_finished", "about-ci"),
];

/// Which pages a role may open (written out here, not derived from the code under test).
fn allowed(principal: &str, path: &str) -> bool {
    let page = path.split('?').next().unwrap();
    let releases = page == "/" || page == "/usage";
    match principal {
        "viewer" | "team-member" => releases || page == "/posture" || page.starts_with("/about"),
        "analyst" => {
            releases || matches!(page, "/posture" | "/grants") || page.starts_with("/about")
        }
        "eng-lead" => matches!(page, "/posture" | "/grants") || page.starts_with("/about"),
        "privacy-officer" => {
            matches!(page, "/posture" | "/grants" | "/audit" | "/subjects")
                || page.starts_with("/about")
        }
        _ => false,
    }
}

struct Leaks {
    needles: Vec<String>,
}

impl Leaks {
    /// Every email and login of the demo's people, and every pseudonym in staging.
    fn of(v: &Veil) -> Leaks {
        let mut needles = BTreeSet::new();
        let teams = std::fs::read_to_string(v.path().join("teams.yaml")).unwrap();
        for l in teams.lines() {
            if let Some(m) = l.trim().strip_prefix("- ") {
                if m.contains('@') {
                    needles.insert(m.to_owned());
                    needles.insert(m.split('@').next().unwrap().to_owned());
                }
            }
        }
        let events =
            String::from_utf8_lossy(&std::fs::read(v.path().join("events.ndjson")).unwrap())
                .into_owned();
        for l in events.lines() {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(l) else {
                continue;
            };
            for key in ["developer", "user_id", "author", "author_name", "reviewer"] {
                if let Some(s) = e["attrs"][key].as_str() {
                    if s.len() > 3 {
                        needles.insert(s.to_owned());
                    }
                }
            }
        }
        let store = v.store();
        let keys = veil_store::Store::key_ring(&store).unwrap();
        let policy = std::fs::read_to_string(v.path().join("policy.yaml")).unwrap();
        for c in policy
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: "))
        {
            for row in store.staging_payloads(c, &keys).unwrap_or_default() {
                let row: serde_json::Value = serde_json::from_str(&row).unwrap();
                for v in row["attrs"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(_, v)| v)
                {
                    if let Some(s) = v.as_str() {
                        let b64 = s.len() >= 16
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                        if b64 && s.bytes().any(|b| b.is_ascii_digit()) {
                            needles.insert(s.to_owned());
                        }
                    }
                }
            }
        }
        assert!(
            needles.len() > 20,
            "the leak check has something to look for: {}",
            needles.len()
        );
        Leaks {
            needles: needles.into_iter().collect(),
        }
    }

    fn check(&self, where_: &str, html: &str) {
        for n in &self.needles {
            assert!(
                !html.contains(n.as_str()),
                "{where_}: a person's identifier or pseudonym is in the page"
            );
        }
    }
}

const HOSTILE: &str =
    "<script>document.title='pwned'</script>\"><img src=x onerror=\"document.title='pwned'\">";

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    // Right after a navigation the page's old execution context may still be the one the
    // driver knows: retry until the new document answers.
    let mut last = None;
    for _ in 0..100 {
        let p = EvaluateParams::builder()
            .expression(js)
            .await_promise(true)
            .return_by_value(true)
            .build()
            .unwrap();
        match page.evaluate_expression(p).await {
            Ok(v) => return v.into_value().unwrap(),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("evaluating {js:.60}: {last:?}")
}

/// Waits until a new document (one without the marker) has loaded; its HTTP status.
async fn settled(page: &Page) -> u16 {
    for _ in 0..200 {
        let (fresh, ready): (bool, String) = eval(
            page,
            "[window.__veil_old === undefined, document.readyState]",
        )
        .await;
        if fresh && ready == "complete" {
            return eval::<u16>(
                page,
                "performance.getEntriesByType('navigation')[0].responseStatus",
            )
            .await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the page did not load")
}

/// Navigates and returns the HTTP status of the document the browser ends on.
async fn open(page: &Page, url: &str) -> u16 {
    let _: bool = eval(page, "window.__veil_old = true").await;
    page.goto(url).await.unwrap();
    settled(page).await
}

/// Submits the form matched by `selector` after running `fill`, and waits for the answer.
async fn submit(page: &Page, fill: &str, selector: &str) -> u16 {
    let js = format!(
        "window.__veil_old = true; {fill}; document.querySelector({:?}).submit(); true",
        selector
    );
    let _: bool = eval(page, &js).await;
    settled(page).await
}

/// axe-core's serious and critical violations in the page.
async fn axe(page: &Page, src: &str) -> Vec<String> {
    let _: bool = eval(page, &format!("{src};\ntrue")).await;
    eval(
        page,
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', ')))",
    )
    .await
}

/// A page in a browser context of its own: no cookie of another role reaches it.
async fn fresh_page(
    browser: &Browser,
) -> (
    chromiumoxide::cdp::browser_protocol::browser::BrowserContextId,
    Page,
) {
    let ctx = browser
        .create_browser_context(CreateBrowserContextParams::default())
        .await
        .unwrap();
    let page = browser
        .new_page(
            CreateTargetParams::builder()
                .url("about:blank")
                .browser_context_id(ctx.clone())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    (ctx, page)
}

fn shots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_opens_every_page_in_chromium() {
    let Some(exe) = chromium() else {
        eprintln!("skipped: no Chromium on this machine (apt-get install chromium)");
        return;
    };
    let Some(axe_js) = axe_source() else {
        eprintln!("skipped: no axe-core (npm pack axe-core; set VEIL_AXE_JS)");
        return;
    };
    let v = demo();
    let leaks = Leaks::of(&v);
    let gw = Gateway::start(&v);
    // On a failure, the gateway's log too.
    let gwlog = gw.log.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |i| {
        eprintln!(
            "gateway log:\n{}",
            String::from_utf8_lossy(&gwlog.lock().unwrap())
        );
        default_hook(i);
    }));
    let profile = tempfile::tempdir().unwrap();
    let config = BrowserConfig::builder()
        .chrome_executable(exe)
        .no_sandbox()
        .new_headless_mode()
        .user_data_dir(profile.path())
        .window_size(1280, 900)
        .viewport(chromiumoxide::handler::viewport::Viewport {
            width: 1280,
            height: 900,
            ..Default::default()
        })
        .args([
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-extensions",
        ])
        .request_timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let (mut browser, mut handler) = Browser::launch(config).await.unwrap();
    let driver = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let shots = shots();

    // Analyst first (requests a grant, releases a metric), then the approvers, the member
    // (files a hostile contest note), and the viewer last, who must see the others' work.
    for principal in [
        "analyst",
        "eng-lead",
        "privacy-officer",
        "team-member",
        "viewer",
    ] {
        let (ctx, page) = fresh_page(&browser).await;
        // Not signed in: every page but the sign-in form sends the browser there.
        assert_eq!(open(&page, &gw.url("/posture")).await, 200);
        assert!(
            page.url().await.unwrap().unwrap().ends_with("/signin"),
            "{principal}: redirected to sign in"
        );
        // A wrong token is refused and says so.
        let status = submit(
            &page,
            "document.getElementById('token').value = 'veil_wrong'",
            "form[action='/signin']",
        )
        .await;
        assert_eq!(status, 401, "{principal}: a wrong token");
        assert!(page
            .content()
            .await
            .unwrap()
            .contains("matches no principal"));
        let token = v.token(principal);
        let status = submit(
            &page,
            &format!("document.getElementById('token').value = {token:?}"),
            "form[action='/signin']",
        )
        .await;
        assert_eq!(status, 200, "{principal}: signed in");
        // The session cookie's flags.
        let cookies = page.get_cookies().await.unwrap();
        let c = cookies
            .iter()
            .find(|c| c.name == "veil_session")
            .expect("a session cookie");
        assert!(c.http_only, "HttpOnly");
        assert_eq!(c.same_site, Some(CookieSameSite::Strict));
        assert!(!c.value.is_empty());

        match principal {
            "analyst" => {
                // Something not released yet shows its cost and spends nothing until confirmed.
                assert_eq!(
                    open(&page, &gw.url("/?metric=build_duration&weeks=4")).await,
                    200
                );
                let html = page.content().await.unwrap();
                assert!(html.contains("Not released yet"), "the cost is shown");
                assert!(html.contains("Release and spend"));
                // A confirmation for other windows than the page showed spends nothing.
                let status = submit(
                    &page,
                    "document.querySelector(\"form[action='/release'] input[name=windows]\").value = '2026-W01'",
                    "form[action='/release']",
                )
                .await;
                assert_eq!(status, 409, "a changed cost is refused");
                assert!(page.content().await.unwrap().contains("Nothing was spent"));
                open(&page, &gw.url("/?metric=build_duration&weeks=4")).await;
                assert!(
                    page.content().await.unwrap().contains("Release and spend"),
                    "still unreleased"
                );
                let status = submit(&page, "", "form[action='/release']").await;
                assert_eq!(status, 200, "released");
                let html = page.content().await.unwrap();
                assert!(
                    !html.contains("Release and spend"),
                    "released windows cost nothing again"
                );
                assert!(
                    html.contains("Every window shown was released before")
                        || html.contains("This view charged")
                );
                // A grant with a hostile purpose.
                assert_eq!(open(&page, &gw.url("/grants")).await, 200);
                let fill = format!(
                    "document.getElementById('purpose').value = {:?}; document.getElementById('duration').value = '2h'",
                    format!("debug {HOSTILE}")
                );
                let status = submit(&page, &fill, "form[action='/grants']").await;
                assert_eq!(status, 200, "grant requested");
                let html = page.content().await.unwrap();
                assert!(html.contains("Requested."), "{html}");
                assert!(
                    !html.contains("Approve g"),
                    "no approving one's own request"
                );
            }
            "eng-lead" => {
                assert_eq!(open(&page, &gw.url("/grants")).await, 200);
                let status = submit(&page, "", "form[action$='/approve']").await;
                assert_eq!(status, 200);
                assert!(page.content().await.unwrap().contains("Approved."));
            }
            "privacy-officer" => {
                assert_eq!(open(&page, &gw.url("/grants")).await, 200);
                let status = submit(&page, "", "form[action$='/approve']").await;
                assert_eq!(status, 200);
                let html = page.content().await.unwrap();
                assert!(html.contains("Approved."));
                assert!(
                    html.contains("expires in 1h") || html.contains("expires in 2h"),
                    "a countdown"
                );
                // An opt-out: the identifier is never shown back.
                assert_eq!(open(&page, &gw.url("/subjects")).await, 200);
                let status = submit(
                    &page,
                    "document.getElementById('opt-id').value = 'someone.gone@example.org'",
                    "form[action='/subjects/opt-out']",
                )
                .await;
                assert_eq!(status, 200);
                let html = page.content().await.unwrap();
                assert!(html.contains("Opted out"));
                assert!(
                    !html.contains("someone.gone"),
                    "the identifier is not repeated"
                );
            }
            "team-member" => {
                assert_eq!(open(&page, &gw.url("/")).await, 200);
                let fill = format!("document.getElementById('note').value = {HOSTILE:?}");
                let status = submit(&page, &fill, "form[action='/contest']").await;
                assert_eq!(status, 200, "contest filed");
                assert!(page
                    .content()
                    .await
                    .unwrap()
                    .contains("Your note was filed"));
            }
            _ => {}
        }

        for (path, slug) in PAGES {
            let status = open(&page, &gw.url(path)).await;
            let html = page.content().await.unwrap();
            let want = allowed(principal, path);
            assert_eq!(status, if want { 200 } else { 403 }, "{principal} {path}");
            assert!(
                html.len() < 300_000,
                "{principal} {path}: {} bytes",
                html.len()
            );
            leaks.check(&format!("{principal} {path}"), &html);
            // Hostile text is inert: no element came from it, and the title is ours.
            let (scripts, imgs, title): (u32, u32, String) = eval(
                &page,
                "[document.querySelectorAll('script').length, document.querySelectorAll('img').length, document.title]",
            )
            .await;
            assert_eq!((scripts, imgs), (0, 0), "{principal} {path}");
            assert!(!title.contains("pwned"), "{principal} {path}");
            // The navigation offers exactly the allowed pages.
            let nav: Vec<String> = eval(
                &page,
                "[...document.querySelectorAll('header nav a')].map(a => a.getAttribute('href'))",
            )
            .await;
            for (p, _) in PAGES
                .iter()
                .filter(|(p, _)| !p.contains('?') && !p.starts_with("/about/"))
            {
                assert_eq!(
                    nav.contains(&p.to_string()),
                    allowed(principal, p),
                    "{principal}: nav link {p}"
                );
            }
            if want {
                let violations = axe(&page, &axe_js).await;
                assert!(violations.is_empty(), "{principal} {path}: {violations:#?}");
            }
            page.save_screenshot(
                ScreenshotParams::builder().full_page(true).build(),
                shots.join(format!("{principal}-{slug}.png")),
            )
            .await
            .unwrap();
        }

        // What each role sees on the pages it shares.
        if allowed(principal, "/") {
            open(&page, &gw.url("/?metric=builds&weeks=12")).await;
            let html = page.content().await.unwrap();
            // Released values for the realistic teams, the 3-person team masked with why.
            let shown: u32 = eval(
                &page,
                "document.querySelectorAll('svg .line, svg .dot').length",
            )
            .await;
            assert!(
                shown >= 3,
                "{principal}: teams of realistic size are shown ({shown})"
            );
            assert!(
                html.contains("Not shown in any window: roster below 5."),
                "{principal}: infra masked with its reason"
            );
            assert!(
                html.contains("Misread when:"),
                "the cross-team view carries misread_when"
            );
            let teams: Vec<String> = eval(
                &page,
                "[...document.querySelectorAll('.multiple h3')].map(h => h.textContent)",
            )
            .await;
            let mut sorted = teams[..teams.len() - 1].to_vec();
            sorted.sort();
            assert_eq!(
                teams[..teams.len() - 1],
                sorted[..],
                "teams alphabetical, never ranked"
            );
            assert_eq!(
                html.contains("form method=\"post\" action=\"/contest\""),
                principal == "team-member",
                "{principal}: contest form"
            );
            // A viewer sees only what was released: no cost, no release button.
            if principal == "viewer" {
                open(&page, &gw.url("/?metric=change_size&weeks=4")).await;
                let html = page.content().await.unwrap();
                assert!(!html.contains("Release and spend"));
                assert!(
                    html.contains("Nothing of this range was released yet"),
                    "viewer notice"
                );
                // Product usage opens on feature usage, released by the demo.
                open(&page, &gw.url("/usage")).await;
                let html = page.content().await.unwrap();
                assert!(
                    html.contains("Product usage — feature_usage"),
                    "usage opens on a product metric"
                );
                let shown: u32 = eval(
                    &page,
                    "document.querySelectorAll('svg .line, svg .dot').length",
                )
                .await;
                assert!(shown >= 10, "feature × region groups are shown ({shown})");
                // The member's hostile note is listed as text on the posture page.
                open(&page, &gw.url("/posture")).await;
                let html = page.content().await.unwrap();
                assert!(
                    html.contains("&lt;script&gt;document.title="),
                    "the note is shown, escaped"
                );
                open(&page, &gw.url("/?metric=builds")).await;
                let contested: u32 =
                    eval(&page, "document.querySelectorAll('svg .contest').length").await;
                assert!(contested >= 1, "the contested window carries a marker");
            }
        }

        // A form without its CSRF token is refused, and changes nothing.
        if allowed(principal, "/grants") {
            open(&page, &gw.url("/grants")).await;
            let status = submit(&page, "document.querySelector(\"form[action='/grants'] input[name=csrf]\").value = ''; document.getElementById('purpose').value = 'no token'", "form[action='/grants']").await;
            assert_eq!(status, 403, "{principal}: no CSRF token");
            open(&page, &gw.url("/grants")).await;
            assert!(
                !page.content().await.unwrap().contains("no token"),
                "nothing was requested"
            );
        }

        // Sign-out ends the session: the old cookie opens nothing.
        let status = submit(&page, "", "form.signout").await;
        assert_eq!(status, 200);
        assert!(page.url().await.unwrap().unwrap().ends_with("/signin"));
        page.set_cookie(
            chromiumoxide::cdp::browser_protocol::network::CookieParam::builder()
                .name("veil_session")
                .value(c.value.clone())
                .url(gw.url("/"))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        open(&page, &gw.url("/posture")).await;
        assert!(
            page.url().await.unwrap().unwrap().ends_with("/signin"),
            "{principal}: signed out for good"
        );
        page.close().await.unwrap();
        browser.dispose_browser_context(ctx).await.unwrap();
    }

    // A source has no dashboard.
    let (_, page) = fresh_page(&browser).await;
    open(&page, &gw.url("/signin")).await;
    let status = submit(
        &page,
        &format!(
            "document.getElementById('token').value = {:?}",
            v.token("ingest")
        ),
        "form[action='/signin']",
    )
    .await;
    assert_eq!(status, 403);
    // The sign-in page passes axe too.
    assert!(axe(&page, &axe_js).await.is_empty());
    page.save_screenshot(
        ScreenshotParams::builder().full_page(true).build(),
        shots.join("signin.png"),
    )
    .await
    .unwrap();

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    driver.abort();
    drop(gw);
}
