//! A SQLite VFS that writes each transaction's WAL frames together, not frame by frame.
//!
//! SQLite appends a WAL frame as two writes (its 24-byte header, then the page), so a commit
//! of N pages is 2N `pwrite`s into a growing file, each paying the kernel's per-call and
//! per-page write path (the event writer spent a third of its time there). This VFS wraps the
//! default one and, for WAL files only, gathers contiguous appends in memory and writes them in
//! 64 KiB pieces (the unix VFS's largest write is 128 KiB - 1): after the page that follows a
//! commit frame's header (a header with a non-zero "database size" field), and each write after
//! it until the next transaction's first frame; at once for such a header written alone (SQLite
//! rewriting checksums); before any other operation on the file (read, sync, size, truncate,
//! file control, close); on a write that is not contiguous; or
//! when more than [`MAX_BUFFER`] bytes are waiting. Readers only look at frames once the writer
//! has published the new WAL-index header, which SQLite does after `sqlite3WalFrames` has
//! written the commit frame — by then this VFS has written it; a failed write is the commit's
//! error, as before. A transaction that spilled frames and then rolled back leaves them behind:
//! they are dropped when its connection releases the WAL write lock (seen on the main database
//! file, which this VFS wraps for that alone), before the next writer appends over that place.
//! Every other file is the default VFS's own.
//!
//! The functions below are SQLite's `sqlite3_io_methods` contract: SQLite calls them with the
//! file it allocated (`szOsFile` bytes) and opened through `x_open`, from one thread at a time.
#![allow(unsafe_code)] // a VFS is FFI through and through

use libsqlite3_sys as ffi;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

/// Bytes gathered at most before they are written anyway (a big transaction's spill).
const MAX_BUFFER: usize = 8 << 20;

/// Bytes per `pwrite` (the unix VFS's limit is 128 KiB - 1).
const PIECE: usize = 64 << 10;

/// The wrapper SQLite allocates `szOsFile` bytes for: our header, then the default VFS's file.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    /// Bytes not yet written, which belong at `start` in the file.
    buf: Vec<u8>,
    start: i64,
    /// Since a commit frame's header: write each write at once (see `x_write`).
    through: bool,
    /// A WAL file (gathers writes) or a main database file (passes them on).
    is_wal: bool,
    /// The other file of the pair: a database file's WAL file, a WAL file's database file
    /// (null until both are open, and after either closes).
    peer: *mut WalFile,
}

/// Open main database files by the address of their name (SQLite hands the WAL file a name
/// from which `sqlite3_filename_database` gives that same address back), to pair each WAL
/// file with its connection's database file.
static DATABASES: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<usize, usize>>> =
    std::sync::LazyLock::new(Default::default);

/// WAL files opened without their database file found (then written through, unbuffered).
static UNPAIRED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn inner(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // The default VFS's file lives right after our header, at an 8-byte aligned offset.
    (f as *mut u8).wrapping_add(INNER_OFFSET) as *mut ffi::sqlite3_file
}

const INNER_OFFSET: usize = (std::mem::size_of::<WalFile>() + 7) & !7;

static ORIG: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(std::ptr::null_mut());
static REGISTER: Once = Once::new();

/// Registers the VFS as the process's default, once. Call before the first connection opens.
pub fn register() {
    REGISTER.call_once(|| {
        // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS (static in SQLite); our copy
        // is leaked, so it lives as long as SQLite may use it. `ORIG` is written once, here,
        // before any connection can call into this VFS.
        unsafe {
            let orig = ffi::sqlite3_vfs_find(std::ptr::null());
            if orig.is_null() {
                return;
            }
            ORIG.store(orig, Ordering::Release);
            let mut vfs = *orig;
            vfs.zName = c"seccollab-walbuf".as_ptr();
            vfs.szOsFile = (INNER_OFFSET + (*orig).szOsFile as usize) as c_int;
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(x_open);
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 1);
        }
    });
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let orig = ORIG.load(Ordering::Acquire);
    let is_wal = flags & ffi::SQLITE_OPEN_WAL != 0;
    if !is_wal && (flags & ffi::SQLITE_OPEN_MAIN_DB == 0 || name.is_null()) {
        // Neither a WAL nor a main database file: the default VFS's file, at the start of the
        // space SQLite gave us.
        return ((*orig).xOpen.unwrap())(orig, name, file, flags, out_flags);
    }
    (*file).pMethods = std::ptr::null();
    let rc = ((*orig).xOpen.unwrap())(orig, name, inner(file), flags, out_flags);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    let w = file as *mut WalFile;
    std::ptr::addr_of_mut!((*w).buf).write(Vec::new());
    std::ptr::addr_of_mut!((*w).start).write(0);
    std::ptr::addr_of_mut!((*w).through).write(false);
    std::ptr::addr_of_mut!((*w).is_wal).write(is_wal);
    std::ptr::addr_of_mut!((*w).peer).write(std::ptr::null_mut());
    let mut dbs = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    if is_wal {
        let db = dbs.get(&(ffi::sqlite3_filename_database(name) as usize)).copied().unwrap_or(0) as *mut WalFile;
        if db.is_null() {
            // No database file to tell this WAL file when a transaction rolls back: it cannot
            // safely keep writes back, so it passes them on as they come.
            (*w).is_wal = false;
            UNPAIRED.fetch_add(1, Ordering::Relaxed);
        } else {
            (*db).peer = w;
            (*w).peer = db;
        }
    } else {
        dbs.insert(name as usize, w as usize);
    }
    drop(dbs);
    (*file).pMethods = &METHODS;
    rc
}

/// Writes what is gathered; on failure it is dropped (SQLite rolls the transaction back).
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    let w = file as *mut WalFile;
    if (*w).buf.is_empty() {
        return ffi::SQLITE_OK;
    }
    let f = inner(file);
    let write = (*(*f).pMethods).xWrite.unwrap();
    let mut rc = ffi::SQLITE_OK;
    // The unix VFS writes at most 128 KiB - 1 per call (it masks the length), so the gathered
    // bytes go in pieces of [`PIECE`].
    for (i, piece) in (*w).buf.chunks(PIECE).enumerate() {
        rc = write(f, piece.as_ptr() as *const c_void, piece.len() as c_int, (*w).start + (i * PIECE) as i64);
        if rc != ffi::SQLITE_OK {
            break;
        }
    }
    (*w).buf.clear();
    rc
}

unsafe extern "C" fn x_write(file: *mut ffi::sqlite3_file, data: *const c_void, amt: c_int, off: i64) -> c_int {
    let w = file as *mut WalFile;
    if !(*w).is_wal {
        return (m(file).xWrite.unwrap())(inner(file), data, amt, off);
    }
    let buf = &mut (*w).buf;
    if !buf.is_empty() && (*w).start + buf.len() as i64 != off {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let buf = &mut (*w).buf;
    let was_empty = buf.is_empty();
    if was_empty {
        (*w).start = off;
    }
    let bytes = std::slice::from_raw_parts(data as *const u8, amt as usize);
    buf.extend_from_slice(bytes);
    // A frame header is 24 bytes past the 32-byte WAL header; bytes 4..8 hold the database
    // size after a commit, zero in every frame but a transaction's last.
    let mut flush_now = (*w).through || buf.len() >= MAX_BUFFER;
    if amt == 24 && off >= 32 {
        if bytes[4..8] == [0, 0, 0, 0] {
            // A transaction's frames: gather them.
            (*w).through = false;
        } else {
            // A commit frame. Appended after gathered frames, it waits for its page, which
            // is then written with them; everything after it is written at once until the
            // next transaction's first frame (sector padding, a split write around a sync).
            // Alone — a one-frame commit, or `walRewriteChecksums` rewriting the commit
            // frame's header as its very last write — it is written at once as well.
            (*w).through = true;
            flush_now = was_empty;
        }
    }
    if flush_now {
        return flush(file);
    }
    ffi::SQLITE_OK
}

macro_rules! flushing {
    ($file:expr, $call:expr) => {{
        let rc = flush($file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        $call
    }};
}

unsafe fn m(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*inner(file)).pMethods
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let w = file as *mut WalFile;
    if !(*w).peer.is_null() {
        (*(*w).peer).peer = std::ptr::null_mut();
    }
    if !(*w).is_wal {
        DATABASES.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, f| *f != w as usize);
    }
    let rc = flush(file);
    let rc2 = (m(file).xClose.unwrap())(inner(file));
    std::ptr::drop_in_place(std::ptr::addr_of_mut!((*(file as *mut WalFile)).buf));
    if rc != ffi::SQLITE_OK {
        rc
    } else {
        rc2
    }
}
unsafe extern "C" fn x_read(file: *mut ffi::sqlite3_file, data: *mut c_void, amt: c_int, off: i64) -> c_int {
    flushing!(file, (m(file).xRead.unwrap())(inner(file), data, amt, off))
}
unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushing!(file, (m(file).xTruncate.unwrap())(inner(file), size))
}
unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushing!(file, (m(file).xSync.unwrap())(inner(file), flags))
}
unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushing!(file, (m(file).xFileSize.unwrap())(inner(file), size))
}
unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, l: c_int) -> c_int {
    (m(file).xLock.unwrap())(inner(file), l)
}
unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, l: c_int) -> c_int {
    (m(file).xUnlock.unwrap())(inner(file), l)
}
unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    (m(file).xCheckReservedLock.unwrap())(inner(file), out)
}
unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    flushing!(file, (m(file).xFileControl.unwrap())(inner(file), op, arg))
}
unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    (m(file).xSectorSize.unwrap())(inner(file))
}
unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    (m(file).xDeviceCharacteristics.unwrap())(inner(file))
}
unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    pg: c_int,
    sz: c_int,
    ext: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    (m(file).xShmMap.unwrap())(inner(file), pg, sz, ext, pp)
}
unsafe extern "C" fn x_shm_lock(file: *mut ffi::sqlite3_file, off: c_int, n: c_int, flags: c_int) -> c_int {
    // A database file's connection lets go of the WAL write lock (lock 0): what its WAL file
    // still holds is a rolled-back transaction's spilled frames (a commit wrote everything), and
    // the next writer appends where they would have gone. Dropped, as SQLite drops them.
    let w = file as *mut WalFile;
    if off == 0 && flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE && !(*w).peer.is_null() {
        (*(*w).peer).buf.clear();
        (*(*w).peer).through = false;
    }
    (m(file).xShmLock.unwrap())(inner(file), off, n, flags)
}
unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    (m(file).xShmBarrier.unwrap())(inner(file))
}
unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, del: c_int) -> c_int {
    (m(file).xShmUnmap.unwrap())(inner(file), del)
}
unsafe extern "C" fn x_fetch(file: *mut ffi::sqlite3_file, off: i64, amt: c_int, pp: *mut *mut c_void) -> c_int {
    flushing!(file, (m(file).xFetch.unwrap())(inner(file), off, amt, pp))
}
unsafe extern "C" fn x_unfetch(file: *mut ffi::sqlite3_file, off: i64, p: *mut c_void) -> c_int {
    (m(file).xUnfetch.unwrap())(inner(file), off, p)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }

    fn integrity(c: &mut SqliteConnection) -> String {
        diesel::sql_query("PRAGMA integrity_check").get_result::<Check>(c).unwrap().integrity_check
    }

    fn count(c: &mut SqliteConnection) -> i64 {
        diesel::sql_query("SELECT count(*) AS n FROM t").get_result::<N>(c).unwrap().n
    }

    /// Every commit is readable at once by another connection (it reads the WAL through its own
    /// file handle) and survives a crash right after it, through transactions small and larger
    /// than the buffer and the page cache (which spill and rewrite frames, so SQLite rewrites
    /// the commit frame's checksum last), a WAL restart, and a reopen; the database stays
    /// intact.
    #[test]
    fn commits_are_visible_to_other_connections_and_survive_a_reopen() {
        super::register();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let url = path.to_str().unwrap();
        let mut w = SqliteConnection::establish(url).unwrap();
        w.batch_execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -1024; CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB); CREATE INDEX t_k ON t(k);").unwrap();
        let mut r = SqliteConnection::establish(url).unwrap();
        r.batch_execute("PRAGMA journal_mode = WAL").unwrap();
        let mut expected = 0;
        for round in 0..60 {
            // Every tenth round writes ~12 MiB in one transaction: more than the buffer and the cache.
            let rows = if round % 10 == 0 { 3_000 } else { 1 + round * 7 };
            w.batch_execute("BEGIN IMMEDIATE").unwrap();
            for i in 0..rows {
                diesel::sql_query(format!("INSERT INTO t (k, v) VALUES ('{round}-{i}', randomblob(4000))"))
                    .execute(&mut w)
                    .unwrap();
            }
            w.batch_execute("COMMIT").unwrap();
            expected += rows as i64;
            assert_eq!(count(&mut r), expected, "round {round}");
            if round % 10 == 0 {
                // What a crash right after the commit leaves on disk: the database and the WAL
                // as they are now (no wal-index), opened elsewhere — SQLite rebuilds the index
                // from the WAL and keeps every transaction whose frames' checksums hold.
                let crash = tempfile::tempdir().unwrap();
                std::fs::copy(&path, crash.path().join("t.db")).unwrap();
                std::fs::copy(dir.path().join("t.db-wal"), crash.path().join("t.db-wal")).unwrap();
                let mut c = SqliteConnection::establish(crash.path().join("t.db").to_str().unwrap()).unwrap();
                assert_eq!(count(&mut c), expected, "after a crash in round {round}");
            }
            if round == 40 {
                // Copy everything, so the next commit starts the WAL over from its beginning.
                w.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
            }
        }
        assert_eq!(integrity(&mut r), "ok");
        drop(r);
        drop(w);
        let mut again = SqliteConnection::establish(url).unwrap();
        assert_eq!(count(&mut again), expected);
    }

    /// A transaction that spilled frames and rolled back leaves nothing behind that could later
    /// land on another connection's committed frames: after another writer commits where those
    /// frames would have gone, and the first connection writes again, every committed row is
    /// there, for a reader and after a crash.
    #[test]
    fn a_rolled_back_spill_never_overwrites_a_later_commit() {
        super::register();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let url = path.to_str().unwrap();
        let mut a = SqliteConnection::establish(url).unwrap();
        a.batch_execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -256; CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB);").unwrap();
        let mut b = SqliteConnection::establish(url).unwrap();
        b.batch_execute("PRAGMA journal_mode = WAL").unwrap();
        // ~4 MiB with a 256 KiB page cache: frames spill into the WAL, then are rolled back.
        a.batch_execute("BEGIN IMMEDIATE").unwrap();
        for i in 0..1_000 {
            diesel::sql_query(format!("INSERT INTO t (k, v) VALUES ('a{i}', randomblob(4000))"))
                .execute(&mut a)
                .unwrap();
        }
        a.batch_execute("ROLLBACK").unwrap();
        // Another writer commits where the spilled frames were.
        for i in 0..50 {
            diesel::sql_query(format!("INSERT INTO t (k, v) VALUES ('b{i}', randomblob(4000))"))
                .execute(&mut b)
                .unwrap();
        }
        // The first connection writes again (its WAL file sees writes and reads again).
        diesel::sql_query("INSERT INTO t (k, v) VALUES ('a', randomblob(10))").execute(&mut a).unwrap();
        assert_eq!(count(&mut a), 51);
        let crash = tempfile::tempdir().unwrap();
        std::fs::copy(&path, crash.path().join("t.db")).unwrap();
        std::fs::copy(dir.path().join("t.db-wal"), crash.path().join("t.db-wal")).unwrap();
        let mut c = SqliteConnection::establish(crash.path().join("t.db").to_str().unwrap()).unwrap();
        assert_eq!(count(&mut c), 51);
        assert_eq!(integrity(&mut b), "ok");
        assert_eq!(integrity(&mut c), "ok");
        // Every WAL file found its database file (else it would have passed writes through
        // and this test would prove nothing).
        assert_eq!(super::UNPAIRED.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
