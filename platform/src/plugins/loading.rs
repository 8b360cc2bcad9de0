//! Opening plugin libraries safely: who may own them and their folders, and loading exactly
//! the file that was checked and hashed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use seccollab_plugin_api::host;
use sha2::{Digest, Sha256};

/// Whether `uid` may own a plugin or a folder above it: root or the service's own user.
fn trusted_owner(uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    // `/proc/self` belongs to the process's effective user.
    uid == 0 || std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == uid)
}

/// Refuses a folder path an attacker could use to swap a library: every folder from the
/// library's up to `/` must belong to root or the service user and must not be writable by
/// group or others (a sticky folder such as `/tmp` excepted: there only a file's owner may
/// rename or remove it).
pub fn check_folders(real: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    for dir in real.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mode = m.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "the folder {} is writable by group or others (mode {:o}); fix with `chmod go-w {}`",
                dir.display(),
                mode & 0o7777,
                dir.display()
            ));
        }
        if !trusted_owner(m.uid()) {
            return Err(format!(
                "the folder {} belongs to user id {}, neither root nor the service user; fix with `chown root {}`",
                dir.display(),
                m.uid(),
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Refuses an opened library file an attacker other than root or its owner could have
/// replaced: a regular file, owned by root or the service user, not writable by group or others.
fn check_file(real: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", real.display()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}); fix with `chmod go-w {}`",
            real.display(),
            meta.permissions().mode() & 0o7777,
            real.display()
        ));
    }
    if !trusted_owner(meta.uid()) {
        return Err(format!(
            "{} belongs to user id {}, neither root nor the service user; fix with `chown root {}`",
            real.display(),
            meta.uid(),
            real.display()
        ));
    }
    Ok(())
}

/// A library file opened once, checked and hashed: what [`Verified::load`] loads is this very
/// open file (through `/proc/self/fd`), so a file swapped after the check never runs.
pub struct Verified {
    file: std::fs::File,
    real: PathBuf,
    /// SHA-256 of the opened file, hex.
    pub sha256: String,
}

/// Checks a library's folders, opens the file once and checks and hashes **that open file**.
pub fn verify(path: &Path) -> Result<Verified, String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    check_folders(&real)?;
    let mut file = std::fs::File::open(&real).map_err(|e| format!("{}: {e}", real.display()))?;
    let meta = file.metadata().map_err(|e| format!("{}: {e}", real.display()))?;
    check_file(&real, &meta)?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).map_err(|e| format!("{}: {e}", real.display()))?;
    Ok(Verified { file, real, sha256: hex::encode(h.finalize()) })
}

impl Verified {
    /// Refuses the file unless its SHA-256 is `pin`.
    pub fn pinned(&self, pin: &str) -> Result<(), String> {
        if pin.eq_ignore_ascii_case(&self.sha256) {
            return Ok(());
        }
        Err(format!("SHA-256 is {}, not the pinned {pin}: the file changed; refusing to load it", self.sha256))
    }

    /// Loads the checked open file.
    pub fn load(self) -> Result<host::Library, String> {
        use std::os::fd::AsRawFd;
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        let lib = host::open_as(&by_fd, &self.real).map_err(|e| format!("{}: {e}", self.real.display()));
        // The descriptor stays open for the life of the process, loaded or not: the dynamic
        // loader may know a library by this path (they are never unloaded), and a reused
        // descriptor number would make a later plugin's `/proc/self/fd/N` look already loaded.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(self.file);
        lib
    }
}

/// Opens a library after the checks, without creating an instance: what
/// `seccollab plugins check FILE` reports.
pub fn inspect(path: &Path) -> Result<(host::Library, String), String> {
    let v = verify(path)?;
    let sha = v.sha256.clone();
    Ok((v.load()?, sha))
}
