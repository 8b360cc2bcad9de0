//! The host side of the wire (feature `host`): opens a plugin library, checks its declaration
//! and wraps its instance in the same traits the built-ins implement. Used by the SecCollab
//! server and by `seccollab plugins check`; plugin authors do not need it.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::abi::{self, status, Buf, PluginDecl, Slice};
use crate::{
    AuthorizationRequest, CodeExchange, Notifier, NotifyError, OAuthError, OAuthIdentity, OAuthProvider, ObjectWriter,
    Outbound, PluginKind, ScanReport, ScanStream, Scanner, StorageBackend, StorageError,
};

/// Why a library was refused. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load the library: {0}")]
    Open(String),
    #[error("the library exports no `{}` symbol: not a SecCollab plugin", abi::ENTRY_SYMBOL)]
    NoEntry,
    #[error("`{}` returned a null declaration", abi::ENTRY_SYMBOL)]
    NullDecl,
    #[error("built for plugin ABI {found}.x, this server speaks {expected}.x: rebuild the plugin against seccollab-plugin-api {expected}")]
    AbiMajor { found: u32, expected: u32 },
    #[error("the declaration is {found} bytes, smaller than ABI {major}.0's {needed}: the library is damaged or not built with the SDK")]
    TooSmall { found: usize, needed: usize, major: u32 },
    #[error("unknown plugin kind code {0}")]
    Kind(u32),
    #[error("the plugin {0} is missing or not valid UTF-8")]
    Text(&'static str),
    #[error("the plugin's {0} function table entry is missing")]
    Missing(&'static str),
}

/// A loaded plugin library. Libraries are never unloaded: code of theirs may still be running
/// on a thread that timed out, and instances live as long as the process.
#[derive(Debug)]
pub struct Library {
    path: PathBuf,
    decl: &'static PluginDecl,
    kind: PluginKind,
    name: String,
    version: String,
}

fn read_text(s: Slice, what: &'static str) -> Result<String, LoadError> {
    if s.ptr.is_null() || s.len == 0 || s.len > 256 {
        return Err(LoadError::Text(what));
    }
    // SAFETY: the declaration promises static UTF-8 text; checked for UTF-8 below.
    let b = unsafe { s.as_bytes() };
    std::str::from_utf8(b).map(str::to_string).map_err(|_| LoadError::Text(what))
}

/// Opens `path`, finds the entry symbol and checks the declaration. Runs the library's
/// initialisers (as any shared library load does) but none of the plugin's own functions.
pub fn open(path: &Path) -> Result<Library, LoadError> {
    open_as(path, path)
}

/// [`open`] of `load` (say `/proc/self/fd/N`, a file the host opened and checked), reported
/// under the name `shown`.
pub fn open_as(load: &Path, shown: &Path) -> Result<Library, LoadError> {
    let path = load;
    // SAFETY: loading a library runs its initialisers; the host only loads files an operator
    // configured, after checking their permissions (and hash when pinned).
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open(e.to_string()))?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol's type is the ABI's; a library that lies about it is outside what a
    // host can defend against (like any native code it chooses to load).
    let entry: libloading::Symbol<'static, unsafe extern "C" fn() -> *const PluginDecl> =
        unsafe { lib.get(abi::ENTRY_SYMBOL.as_bytes()) }.map_err(|_| LoadError::NoEntry)?;
    // SAFETY: as above.
    let ptr = unsafe { entry() };
    validate(ptr, shown)
}

/// Checks a plugin linked into this program (tests, or a host that links plugins statically)
/// exactly as [`open`] checks a library.
pub fn from_entry(entry: extern "C" fn() -> *const PluginDecl, label: &str) -> Result<Library, LoadError> {
    validate(entry(), Path::new(label))
}

fn validate(ptr: *const PluginDecl, path: &Path) -> Result<Library, LoadError> {
    if ptr.is_null() || (ptr as usize) % std::mem::align_of::<PluginDecl>() != 0 {
        return Err(LoadError::NullDecl);
    }
    // Read the two version words before anything whose layout depends on them.
    // SAFETY: every ABI version starts with these two u32s.
    let (major, size) = unsafe { ((ptr as *const u32).read(), (ptr as *const u8).add(8).cast::<usize>().read()) };
    if major != abi::ABI_MAJOR {
        return Err(LoadError::AbiMajor { found: major, expected: abi::ABI_MAJOR });
    }
    if size < std::mem::size_of::<PluginDecl>() {
        return Err(LoadError::TooSmall { found: size, needed: std::mem::size_of::<PluginDecl>(), major });
    }
    // SAFETY: major 1 and at least as large as our PluginDecl: every field we read exists.
    let decl: &'static PluginDecl = unsafe { &*ptr };
    let kind = match decl.kind {
        abi::kind::SCANNER => PluginKind::Scanner,
        abi::kind::STORAGE => PluginKind::Storage,
        abi::kind::NOTIFIER => PluginKind::Notifier,
        abi::kind::OAUTH_PROVIDER => PluginKind::OAuthProvider,
        k => return Err(LoadError::Kind(k)),
    };
    let name = read_text(decl.name, "name")?;
    let version = read_text(decl.version, "version")?;
    if decl.init.is_none() {
        return Err(LoadError::Missing("init"));
    }
    if decl.free_buf.is_none() {
        return Err(LoadError::Missing("free_buf"));
    }
    if decl.vtable.is_null() {
        return Err(LoadError::Missing("vtable"));
    }
    let lib = Library { path: path.to_path_buf(), decl, kind, name, version };
    // Check the function table now, so a broken library is refused at load, not at first use.
    match kind {
        PluginKind::Scanner => {
            lib.scanner_table()?;
        }
        PluginKind::Notifier => {
            let t = lib.table::<abi::NotifierVTable>()?;
            t.deliver.ok_or(LoadError::Missing("deliver"))?;
            read_text(t.channel, "channel")?;
        }
        PluginKind::OAuthProvider => {
            let t = lib.table::<abi::OAuthVTable>()?;
            t.authorize.ok_or(LoadError::Missing("authorize"))?;
            t.exchange.ok_or(LoadError::Missing("exchange"))?;
            read_text(t.display_name, "display name")?;
        }
        PluginKind::Storage => {
            let t = lib.table::<abi::StorageVTable>()?;
            t.put.ok_or(LoadError::Missing("put"))?;
            t.write.ok_or(LoadError::Missing("write"))?;
            t.commit.ok_or(LoadError::Missing("commit"))?;
            t.abort.ok_or(LoadError::Missing("abort"))?;
            t.open.ok_or(LoadError::Missing("open"))?;
            t.read.ok_or(LoadError::Missing("read"))?;
            t.close.ok_or(LoadError::Missing("close"))?;
            t.delete.ok_or(LoadError::Missing("delete"))?;
            t.stat.ok_or(LoadError::Missing("stat"))?;
            t.list.ok_or(LoadError::Missing("list"))?;
        }
    }
    Ok(lib)
}

impl Library {
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn kind(&self) -> PluginKind {
        self.kind
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn version(&self) -> &str {
        &self.version
    }
    /// `(major, minor)` the plugin was built for.
    pub fn abi(&self) -> (u32, u32) {
        (self.decl.abi_major, self.decl.abi_minor)
    }

    /// The function table, when the plugin's copy is at least as large as ours.
    fn table<T>(&self) -> Result<&'static T, LoadError> {
        // SAFETY: non-null (checked at open); every table starts with its struct_size.
        let size = unsafe { (self.decl.vtable as *const usize).read() };
        if size < std::mem::size_of::<T>() {
            return Err(LoadError::TooSmall { found: size, needed: std::mem::size_of::<T>(), major: abi::ABI_MAJOR });
        }
        // SAFETY: large enough for T and of the declared kind.
        Ok(unsafe { &*(self.decl.vtable as *const T) })
    }

    /// The scanner's functions as far as the plugin's table covers them: ABI 1.0 tables end
    /// after `scan`; 1.1 adds the streamed scan (all four functions, or none).
    fn scanner_table(&self) -> Result<ScannerFns, LoadError> {
        // SAFETY: non-null (checked at open); every table starts with its struct_size.
        let size = unsafe { (self.decl.vtable as *const usize).read() };
        if size < abi::SCANNER_VTABLE_V1_0 {
            return Err(LoadError::TooSmall { found: size, needed: abi::SCANNER_VTABLE_V1_0, major: abi::ABI_MAJOR });
        }
        let p = self.decl.vtable as *const abi::ScannerVTable;
        // SAFETY: only fields within the plugin's declared size are read, each by value.
        let scan = unsafe { std::ptr::addr_of!((*p).scan).read() }.ok_or(LoadError::Missing("scan"))?;
        let stream = if size >= std::mem::size_of::<abi::ScannerVTable>() {
            // SAFETY: as above; the plugin's table covers the 1.1 fields.
            let fns = unsafe {
                (
                    std::ptr::addr_of!((*p).scan_begin).read(),
                    std::ptr::addr_of!((*p).scan_write).read(),
                    std::ptr::addr_of!((*p).scan_finish).read(),
                    std::ptr::addr_of!((*p).scan_abort).read(),
                )
            };
            match fns {
                (Some(begin), Some(write), Some(finish), Some(abort)) => {
                    Some(StreamFns { begin, write, finish, abort })
                }
                _ => None,
            }
        } else {
            None
        };
        Ok(ScannerFns { scan, stream })
    }

    /// Creates an instance with its configuration table; the error is the plugin's message.
    pub fn instantiate(&self, config: &serde_json::Value) -> Result<Instance, String> {
        let cfg = serde_json::to_vec(config).map_err(|e| e.to_string())?;
        let mut inst: *mut c_void = std::ptr::null_mut();
        let mut err = Buf::EMPTY;
        let init = self.decl.init.expect("checked at open");
        // SAFETY: the ABI's init with valid out pointers.
        let code = unsafe { init(Slice::new(&cfg), &mut inst, &mut err) };
        let msg = self.take(err);
        if code != status::OK {
            return Err(describe(code, &msg));
        }
        if inst.is_null() {
            return Err("init succeeded but returned no instance".into());
        }
        let core = Core { name: self.name.clone(), decl: self.decl, inst };
        let t = |e: LoadError| e.to_string();
        Ok(match self.kind {
            PluginKind::Scanner => {
                Instance::Scanner(Arc::new(ForeignScanner { fns: self.scanner_table().map_err(t)?, core }))
            }
            PluginKind::Notifier => {
                let vt: &abi::NotifierVTable = self.table().map_err(t)?;
                let channel = read_text(vt.channel, "channel").map_err(t)?;
                Instance::Notifier(Arc::new(ForeignNotifier { vt, channel, core }))
            }
            PluginKind::OAuthProvider => {
                let vt: &abi::OAuthVTable = self.table().map_err(t)?;
                let display = read_text(vt.display_name, "display name").map_err(t)?;
                Instance::OAuth(Arc::new(ForeignOAuth { vt, display, core }))
            }
            PluginKind::Storage => Instance::Storage(Arc::new(ForeignStorage { vt: self.table().map_err(t)?, core })),
        })
    }

    fn take(&self, buf: Buf) -> Vec<u8> {
        take(self.decl, buf)
    }
}

/// Copies a plugin's buffer and hands it back to the plugin's allocator.
fn take(decl: &PluginDecl, buf: Buf) -> Vec<u8> {
    if buf.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-null Buf from the plugin points at `len` bytes it allocated.
    let v = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
    if let Some(free) = decl.free_buf {
        // SAFETY: returned to the allocator that made it, once.
        unsafe { free(buf) };
    }
    v
}

fn describe(code: i32, msg: &[u8]) -> String {
    let msg = String::from_utf8_lossy(msg);
    let msg = if msg.is_empty() { "no message".into() } else { msg };
    match code {
        status::TRANSIENT..=status::UNSUPPORTED => msg.into_owned(),
        other => format!("unknown status code {other}: {msg}"),
    }
}

/// One plugin instance: its declaration and opaque handle.
struct Core {
    name: String,
    decl: &'static PluginDecl,
    inst: *mut c_void,
}

// SAFETY: the ABI requires instances to be usable from any thread, concurrently (the Rust
// traits are Send + Sync, and C plugins are told the same in the header).
unsafe impl Send for Core {}
unsafe impl Sync for Core {}

impl Core {
    /// Calls `f(instance, &mut out)`; returns the status and the bytes the plugin wrote.
    fn call(&self, f: impl FnOnce(*mut c_void, *mut Buf) -> i32) -> (i32, Vec<u8>) {
        let mut out = Buf::EMPTY;
        let code = f(self.inst, &mut out);
        (code, take(self.decl, out))
    }
}

/// Every instance kind, wrapped in its trait.
pub enum Instance {
    Scanner(Arc<dyn Scanner>),
    Storage(Arc<dyn StorageBackend>),
    Notifier(Arc<dyn Notifier>),
    OAuth(Arc<dyn OAuthProvider>),
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Instance::Scanner(_) => "Instance::Scanner",
            Instance::Storage(_) => "Instance::Storage",
            Instance::Notifier(_) => "Instance::Notifier",
            Instance::OAuth(_) => "Instance::OAuth",
        })
    }
}

type ScanFn = unsafe extern "C" fn(instance: *mut c_void, data: Slice, out: *mut Buf) -> i32;

#[derive(Clone, Copy)]
struct StreamFns {
    begin: unsafe extern "C" fn(instance: *mut c_void, stream: *mut *mut c_void, err: *mut Buf) -> i32,
    write: unsafe extern "C" fn(stream: *mut c_void, data: Slice, err: *mut Buf) -> i32,
    finish: unsafe extern "C" fn(stream: *mut c_void, out: *mut Buf) -> i32,
    abort: unsafe extern "C" fn(stream: *mut c_void),
}

struct ScannerFns {
    scan: ScanFn,
    stream: Option<StreamFns>,
}

struct ForeignScanner {
    fns: ScannerFns,
    core: Core,
}

impl Scanner for ForeignScanner {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn scan(&self, data: &[u8]) -> Result<ScanReport, String> {
        let scan = self.fns.scan;
        // SAFETY: the ABI's scan with a borrowed slice and a valid out pointer.
        let (code, out) = self.core.call(|i, o| unsafe { scan(i, Slice::new(data), o) });
        if code != status::OK {
            return Err(describe(code, &out));
        }
        serde_json::from_slice(&out).map_err(|e| format!("plugin returned a malformed scan report: {e}"))
    }

    fn stream(&self) -> Option<Result<Box<dyn ScanStream>, String>> {
        let fns = self.fns.stream?;
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: the ABI's scan_begin with valid out pointers.
        let (code, err) = self.core.call(|i, e| unsafe { (fns.begin)(i, &mut handle, e) });
        match code {
            status::UNSUPPORTED => None,
            status::OK if !handle.is_null() => {
                Some(Ok(Box::new(ForeignStream { fns, decl: self.core.decl, handle, done: false })))
            }
            status::OK => Some(Err("scan_begin succeeded but returned no stream".into())),
            _ => Some(Err(describe(code, &err))),
        }
    }
}

/// A streamed scan inside a plugin; dropped unfinished, it is aborted.
struct ForeignStream {
    fns: StreamFns,
    decl: &'static PluginDecl,
    handle: *mut c_void,
    done: bool,
}

// SAFETY: the ABI lets a stream handle move between threads (used by one at a time).
unsafe impl Send for ForeignStream {}

impl ScanStream for ForeignStream {
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        let mut err = Buf::EMPTY;
        // SAFETY: a live handle from scan_begin, a borrowed slice and a valid out pointer.
        let code = unsafe { (self.fns.write)(self.handle, Slice::new(data), &mut err) };
        let msg = take(self.decl, err);
        if code != status::OK {
            return Err(describe(code, &msg));
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ScanReport, String> {
        let mut out = Buf::EMPTY;
        self.done = true;
        // SAFETY: a live handle, consumed by scan_finish.
        let code = unsafe { (self.fns.finish)(self.handle, &mut out) };
        let out = take(self.decl, out);
        if code != status::OK {
            return Err(describe(code, &out));
        }
        serde_json::from_slice(&out).map_err(|e| format!("plugin returned a malformed scan report: {e}"))
    }
}

impl Drop for ForeignStream {
    fn drop(&mut self) {
        if !self.done {
            // SAFETY: a live handle, consumed by scan_abort.
            unsafe { (self.fns.abort)(self.handle) };
        }
    }
}

struct ForeignNotifier {
    vt: &'static abi::NotifierVTable,
    channel: String,
    core: Core,
}

impl Notifier for ForeignNotifier {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn channel(&self) -> &str {
        &self.channel
    }

    fn deliver(&self, message: &Outbound) -> Result<(), NotifyError> {
        let doc = serde_json::to_vec(message).map_err(|e| NotifyError::Permanent(e.to_string()))?;
        let deliver = self.vt.deliver.expect("checked at open");
        // SAFETY: as for scan.
        let (code, out) = self.core.call(|i, o| unsafe { deliver(i, Slice::new(&doc), o) });
        let msg = describe(code, &out);
        match code {
            status::OK => Ok(()),
            status::PERMANENT | status::INVALID => Err(NotifyError::Permanent(msg)),
            status::UNAVAILABLE => Err(NotifyError::Unavailable(msg)),
            _ => Err(NotifyError::Transient(msg)),
        }
    }
}

struct ForeignOAuth {
    vt: &'static abi::OAuthVTable,
    display: String,
    core: Core,
}

impl ForeignOAuth {
    fn oauth_err(code: i32, out: &[u8]) -> OAuthError {
        let msg = describe(code, out);
        match code {
            status::UNAVAILABLE | status::TRANSIENT => OAuthError::Unavailable(msg),
            _ => OAuthError::Refused(msg),
        }
    }
}

impl OAuthProvider for ForeignOAuth {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn display_name(&self) -> &str {
        &self.display
    }

    fn authorization_url(&self, req: &AuthorizationRequest) -> Result<String, OAuthError> {
        let doc = serde_json::to_vec(req).map_err(|e| OAuthError::Refused(e.to_string()))?;
        let f = self.vt.authorize.expect("checked at open");
        // SAFETY: as for scan.
        let (code, out) = self.core.call(|i, o| unsafe { f(i, Slice::new(&doc), o) });
        if code != status::OK {
            return Err(Self::oauth_err(code, &out));
        }
        String::from_utf8(out).map_err(|_| OAuthError::Refused("plugin returned a URL that is not UTF-8".into()))
    }

    fn exchange(&self, req: &CodeExchange) -> Result<OAuthIdentity, OAuthError> {
        let doc = serde_json::to_vec(req).map_err(|e| OAuthError::Refused(e.to_string()))?;
        let f = self.vt.exchange.expect("checked at open");
        // SAFETY: as for scan.
        let (code, out) = self.core.call(|i, o| unsafe { f(i, Slice::new(&doc), o) });
        if code != status::OK {
            return Err(Self::oauth_err(code, &out));
        }
        serde_json::from_slice(&out)
            .map_err(|e| OAuthError::Refused(format!("plugin returned a malformed identity: {e}")))
    }
}

struct ForeignStorage {
    vt: &'static abi::StorageVTable,
    core: Core,
}

fn storage_err(code: i32, out: &[u8]) -> StorageError {
    match code {
        status::NOT_FOUND => StorageError::NotFound,
        status::PERMANENT | status::INVALID => StorageError::Permanent(describe(code, out)),
        _ => StorageError::Transient(describe(code, out)),
    }
}

struct ForeignWriter {
    vt: &'static abi::StorageVTable,
    decl: &'static PluginDecl,
    handle: *mut c_void,
}

// SAFETY: a writer handle is used by one thread at a time (it is moved, never shared).
unsafe impl Send for ForeignWriter {}

impl ObjectWriter for ForeignWriter {
    fn write(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        let mut err = Buf::EMPTY;
        // SAFETY: a live writer handle from put.
        let code = unsafe { (self.vt.write.expect("checked"))(self.handle, Slice::new(buf), &mut err) };
        let msg = take(self.decl, err);
        if code == status::OK {
            Ok(())
        } else {
            Err(storage_err(code, &msg))
        }
    }

    fn commit(self: Box<Self>) -> Result<u64, StorageError> {
        let mut err = Buf::EMPTY;
        let mut len = 0u64;
        let this = std::mem::ManuallyDrop::new(*self);
        // SAFETY: consumes the handle (the plugin frees it whatever the outcome).
        let code = unsafe { (this.vt.commit.expect("checked"))(this.handle, &mut len, &mut err) };
        let msg = take(this.decl, err);
        if code == status::OK {
            Ok(len)
        } else {
            Err(storage_err(code, &msg))
        }
    }

    fn abort(self: Box<Self>) {
        drop(self);
    }
}

impl Drop for ForeignWriter {
    fn drop(&mut self) {
        // SAFETY: consumes the handle; commit skips this drop.
        unsafe { (self.vt.abort.expect("checked"))(self.handle) };
    }
}

struct ForeignReader {
    vt: &'static abi::StorageVTable,
    decl: &'static PluginDecl,
    handle: *mut c_void,
}

// SAFETY: as for the writer.
unsafe impl Send for ForeignReader {}

impl std::io::Read for ForeignReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut err = Buf::EMPTY;
        let mut n = 0usize;
        // SAFETY: a live reader handle; buf is writable for its length.
        let code =
            unsafe { (self.vt.read.expect("checked"))(self.handle, buf.as_mut_ptr(), buf.len(), &mut n, &mut err) };
        let msg = take(self.decl, err);
        if code != status::OK {
            return Err(std::io::Error::other(storage_err(code, &msg).to_string()));
        }
        if n > buf.len() {
            return Err(std::io::Error::other("plugin reported reading more than the buffer holds"));
        }
        Ok(n)
    }
}

impl Drop for ForeignReader {
    fn drop(&mut self) {
        // SAFETY: consumes the handle once.
        unsafe { (self.vt.close.expect("checked"))(self.handle) };
    }
}

impl StorageBackend for ForeignStorage {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        let f = self.vt.put.expect("checked");
        // SAFETY: valid out pointers.
        let (code, out) = self.core.call(|i, e| unsafe { f(i, Slice::new(key.as_bytes()), &mut handle, e) });
        if code != status::OK || handle.is_null() {
            return Err(storage_err(if code == status::OK { status::PERMANENT } else { code }, &out));
        }
        Ok(Box::new(ForeignWriter { vt: self.vt, decl: self.core.decl, handle }))
    }

    fn get(&self, key: &str, offset: u64) -> Result<Box<dyn std::io::Read + Send>, StorageError> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        let f = self.vt.open.expect("checked");
        // SAFETY: valid out pointers.
        let (code, out) = self.core.call(|i, e| unsafe { f(i, Slice::new(key.as_bytes()), offset, &mut handle, e) });
        if code != status::OK || handle.is_null() {
            return Err(storage_err(if code == status::OK { status::PERMANENT } else { code }, &out));
        }
        Ok(Box::new(ForeignReader { vt: self.vt, decl: self.core.decl, handle }))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let f = self.vt.delete.expect("checked");
        // SAFETY: valid pointers.
        let (code, out) = self.core.call(|i, e| unsafe { f(i, Slice::new(key.as_bytes()), e) });
        if code == status::OK {
            Ok(())
        } else {
            Err(storage_err(code, &out))
        }
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let mut len = 0u64;
        let f = self.vt.stat.expect("checked");
        // SAFETY: valid pointers.
        let (code, out) = self.core.call(|i, e| unsafe { f(i, Slice::new(key.as_bytes()), &mut len, e) });
        match code {
            status::OK => Ok(Some(len)),
            status::NOT_FOUND => Ok(None),
            _ => Err(storage_err(code, &out)),
        }
    }

    fn list(&self) -> Result<Vec<String>, StorageError> {
        let f = self.vt.list.expect("checked");
        // SAFETY: valid pointers.
        let (code, out) = self.core.call(|i, o| unsafe { f(i, o) });
        if code != status::OK {
            return Err(storage_err(code, &out));
        }
        serde_json::from_slice(&out)
            .map_err(|e| StorageError::Permanent(format!("plugin returned a malformed key list: {e}")))
    }
}
