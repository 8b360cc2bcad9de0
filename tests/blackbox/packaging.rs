//! The operator packaging: the systemd unit's hardening as `systemd-analyze security` scores it,
//! the measurement behind `MemoryDenyWriteExecute=no`, the default configuration and the
//! maintainer scripts.

use std::process::Command;

use crate::harness::{repo_root, run_cli, TestDb};

#[test]
fn unit_hardening_exposure_is_at_most_2() {
    let unit = repo_root().join("packaging/systemd/seccollab.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd; ./tests/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for seccollab.service"))
        .unwrap_or_else(|| panic!("no exposure line: {text} {}", String::from_utf8_lossy(&out.stderr)));
    let score: f64 = line.split(':').nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    eprintln!("{line}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
    // The service may not gain privileges or write outside its state directory.
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for directive in ["NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "UMask=0027"] {
        assert!(unit_text.contains(directive), "missing {directive:?}");
    }
}

/// `MemoryDenyWriteExecute=yes` forbids turning writable memory executable. Measured with the
/// kernel's own switch for the same rule (`prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)`, Linux
/// 6.3+): YARA-X compiles rules to native code and cannot start under it, so the unit leaves it
/// off. If this test ever fails because the server starts, YARA-X stopped needing it: turn it on.
#[test]
fn yara_x_needs_writable_then_executable_memory() {
    let db = TestDb::new(crate::harness::Backend::Sqlite);
    let wrapper = "import ctypes, os, sys\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        assert libc.prctl(65, 1, 0, 0, 0) == 0, 'kernel without PR_SET_MDWE'\n\
        os.execv(sys.argv[1], sys.argv[1:])\n";
    let out = Command::new("python3")
        .args(["-c", wrapper, env!("CARGO_BIN_EXE_seccollab"), "serve"])
        .envs(db.env())
        .env("SECCOLLAB_SERVER__PORT", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the server started under W^X: MemoryDenyWriteExecute could be on");
    assert!(err.contains("unable to make memory executable"), "failed for another reason: {err}");
}

#[test]
fn packaged_configuration_is_valid_and_scripts_parse() {
    let cfg = repo_root().join("packaging/seccollab.toml");
    let db = TestDb::new(crate::harness::Backend::Sqlite);
    let (code, out, err) = run_cli(&db.env(), &["--config", cfg.to_str().unwrap(), "config", "check"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("registration = \"invite\""), "{out}");
    for script in ["debian/postinst", "debian/prerm", "debian/postrm", "rpm/post.sh", "rpm/preun.sh"] {
        let st = Command::new("sh").arg("-n").arg(repo_root().join("packaging").join(script)).status().unwrap();
        assert!(st.success(), "{script} does not parse");
    }
}
