//! The admin console in a real headless Chromium (Debian `chromium` + `chromium-driver`, which
//! `./tests/run` installs), driven over the W3C WebDriver protocol: an admin signs in, enrols
//! MFA with a code from `oathtool`, visits every page, filters the audit log, unlocks a locked
//! user, rescans and releases a quarantined file and acknowledges an alert. Hostile names must
//! render as text: no dialog may open. Screenshots of each page are saved under
//! `<target>/test-artifacts/admin-console/` (or `$SECCOLLAB_TEST_ARTIFACTS`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::webdriver::{Browser, Driver};

use crate::auth::{login, register, totp, PASSWORD};
use crate::harness::{Backend, Server, TestDb};

fn artifacts_dir() -> PathBuf {
    crate::webdriver::artifacts_dir("admin-console")
}

#[test]
fn an_admin_works_through_the_console_in_chromium() {
    let srv = Server::start_with(TestDb::new(Backend::Sqlite), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    // An auditor admin on the API; root is enrolled through the console below.
    let api_admin = crate::auth::admin_token_for(&srv, "auditor@example.org");
    crate::auth::admin_password_only(&srv, "root@example.org");
    let hostile = "<script>alert(1)</script>";
    let r = crate::auth::post(
        &srv,
        "/api/auth/register",
        None,
        json!({"email": "eve@example.org", "password": PASSWORD, "display_name": hostile}),
    );
    assert_eq!(r.status, 201);
    register(&srv, "mallory@example.org");
    for _ in 0..5 {
        login(&srv, "mallory@example.org", "definitely not it");
    }
    login(&srv, "mallory@example.org", PASSWORD).assert_error(423, "account_locked");
    let eve = login(&srv, "eve@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    let bad_name = "<img src=x onerror=alert(1)>.txt";
    let fid = crate::files::upload(&srv, &eve, bad_name, crate::files::EICAR.as_bytes())["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(crate::files::scanned(&srv, &eve, &fid), "quarantined");

    let driver = Driver::start();
    let mut b = Browser::open(&driver, artifacts_dir());
    let base = srv.base.clone();

    // Sign-in: redirected to the form, then MFA enrolment.
    b.goto(&format!("{base}/admin"));
    assert!(b.current_url().ends_with("/admin/login"), "{}", b.current_url());
    b.screenshot("login");
    b.type_into("#email", "root@example.org");
    b.type_into("#password", PASSWORD);
    b.click("form button[type=submit]");
    b.wait_for("Set up a second factor");
    b.screenshot("enrol-mfa");
    let secret = b.text("#secret");
    b.type_into("#code", &totp(&secret, ""));
    b.click("form button[type=submit]");
    b.wait_for("recovery codes");
    b.screenshot("recovery-codes");
    b.click("main a[href='/admin']");

    // Dashboard.
    b.wait_for("Sign-ins per hour");
    b.assert_no_dialog("dashboard");
    b.screenshot("dashboard");

    // Users: the hostile name is text; mallory is unlocked with the button.
    b.goto(&format!("{base}/admin/users"));
    b.assert_no_dialog("users");
    assert!(b.text("main table").contains(hostile), "the name shows literally");
    b.screenshot("users");
    b.click("form[action$='/unlock'] button");
    b.wait_for("The account is unlocked.");
    assert_eq!(login(&srv, "mallory@example.org", PASSWORD).status, 200);

    // A user's page: sessions and activity.
    let mallory = srv.db.sql("SELECT id FROM users WHERE email = 'mallory@example.org'");
    b.goto(&format!("{base}/admin/users/{mallory}"));
    assert!(b.text("main").contains("Active sessions"));
    b.screenshot("user-activity");

    // Audit log, filtered through the form.
    b.goto(&format!("{base}/admin/audit"));
    b.type_into("#action", "admin.user_unlock");
    b.click("form.filters button");
    b.wait_for("value=\"admin.user_unlock\"");
    assert!(b.current_url().contains("action=admin.user_unlock"), "{}", b.current_url());
    assert_eq!(b.source().matches("<td>admin.user_unlock</td>").count(), 1);
    b.assert_no_dialog("audit");
    b.screenshot("audit-filtered");

    // Files: the quarantined file, its name as text; rescan, then release.
    b.goto(&format!("{base}/admin/files"));
    b.assert_no_dialog("files");
    assert!(b.text("main table").contains(bad_name), "{}", b.source());
    b.screenshot("files-quarantined");
    b.click(&format!("form[action='/admin/files/{fid}/rescan'] button"));
    b.wait_for("Rescanned");
    assert_eq!(srv.db.sql(&format!("SELECT scan_status FROM files WHERE id = '{fid}'")), "quarantined");
    b.click(&format!("form[action='/admin/files/{fid}/release'] button"));
    b.wait_for("Released");
    assert_eq!(srv.db.sql(&format!("SELECT scan_status FROM files WHERE id = '{fid}'")), "clean");

    // Alerts: the malware alert, and the anomaly rule noticing that this admin signed in from
    // a browser none of their earlier sign-ins used; both acknowledged with the buttons.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = crate::auth::get(&srv, "/api/admin/alerts?open=true", &api_admin).json();
        if open["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "admin_new_location") {
            break;
        }
        assert!(Instant::now() < deadline, "no admin_new_location alert: {open}");
        std::thread::sleep(Duration::from_millis(200));
    }
    b.goto(&format!("{base}/admin/alerts"));
    b.assert_no_dialog("alerts");
    assert!(b.text("main table").contains("malware_detected") && b.text("main table").contains("admin_new_location"));
    b.screenshot("alerts");
    let forms = |b: &Browser<'_>| b.source().matches("/ack\"").count();
    assert_eq!(forms(&b), 2, "{}", b.text("main table"));
    for left in [1, 0] {
        b.click("form[action$='/ack'] button");
        let deadline = Instant::now() + Duration::from_secs(15);
        while forms(&b) != left {
            assert!(Instant::now() < deadline, "acknowledging did not take: {}", b.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    b.wait_for("No alerts.");
    let open = crate::auth::get(&srv, "/api/admin/alerts?open=true", &api_admin).json();
    assert_eq!(open["alerts"].as_array().unwrap().len(), 0, "{open}");

    // System: rule files, outbox, configuration; reload the rules with the button.
    b.goto(&format!("{base}/admin/system"));
    assert!(b.text("main").contains("seccollab_default.yar"));
    b.screenshot("system");
    b.click("form[action='/admin/system/reload-rules'] button");
    b.wait_for("The rules were recompiled and are in force.");

    // Plugins.
    b.goto(&format!("{base}/admin/plugins"));
    assert!(b.text("main table").contains("yara-x"));
    b.screenshot("plugins");

    b.assert_no_dialog("plugins");

    // Live: with a console page open, a new alert appears without reloading (the page's
    // script over the console WebSocket), as text.
    b.wait_for("data-live=\"connected\"");
    let id2 = crate::files::upload(&srv, &eve, "again <em>bold.txt", crate::files::EICAR.as_bytes())["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(crate::files::scanned(&srv, &eve, &id2), "quarantined");
    b.wait_for("New high security alert: malware_detected");
    assert_eq!(b.text("#alert-count"), "1");
    b.assert_no_dialog("live alert");
    b.screenshot("live-alert");

    // Users: create one and invite another from the forms.
    b.goto(&format!("{base}/admin/users"));
    b.type_into("#new-email", "newbie@example.org");
    b.type_into("#new-name", "Newbie");
    b.type_into("#new-password", "a long and unguessable passphrase");
    b.click("form[action='/admin/users/create'] button");
    b.wait_for("The user is created.");
    assert_eq!(login(&srv, "newbie@example.org", "a long and unguessable passphrase").status, 200);
    b.type_into("#inv-email", "guest@example.org");
    b.click("form[action='/admin/users/invite'] button");
    b.wait_for("invite-code");
    let code = b.text("#invite-code");
    assert!(code.len() >= 20, "{code}");
    // Stored as a keyed hash only, bound to the address.
    assert_eq!(srv.db.sql("SELECT count(*) FROM invites WHERE email = 'guest@example.org'"), "1");
    assert_eq!(srv.db.sql(&format!("SELECT count(*) FROM invites WHERE code_hash = '{code}'")), "0");
    b.screenshot("users-invite");
    assert!(b.shots >= 13);
    eprintln!("screenshots in {}", b.artifacts.display());
}
