//! The C-ABI wire under the plugin traits, version 1.
//!
//! A plugin is a shared library exporting one function, [`ENTRY_SYMBOL`]
//! (`seccollab_plugin_entry`), that returns a pointer to a static [`PluginDecl`]: the ABI
//! version it was built for, the size of the declaration as it knows it, its kind, name and
//! version, an `init` function, the function that frees the buffers it hands out, and a pointer
//! to the function table of its kind ([`ScannerVTable`], [`StorageVTable`],
//! [`NotifierVTable`], [`OAuthVTable`]).
//!
//! Only these cross the line: borrowed byte or UTF-8 slices ([`Slice`]), buffers the plugin
//! allocated ([`Buf`], always returned to the plugin's `free_buf`), `i32` status codes
//! ([`status`]), `u64` lengths and opaque handles (`*mut c_void`). Structured values (the
//! plugin's configuration, scan reports, notifications, OAuth requests and identities) travel as
//! JSON documents whose shapes are the serde types of this crate.
//!
//! # Compatibility promise (ABI major 1)
//! Within major 1 the host and plugins built against any minor version work together:
//! * fields are only ever **appended** to [`PluginDecl`] and the function tables; each carries
//!   its own `struct_size`, and the host reads a field only when the plugin's size covers it;
//! * status codes, [`PluginKind`](crate::PluginKind) codes and the symbol name never change
//!   meaning; new codes may be added (a host treats an unknown code as an error);
//! * JSON documents only gain optional fields; readers ignore fields they do not know.
//!
//! Anything else (a removed field, a changed meaning) is a new major version, and the host
//! refuses a library whose major differs from its own.
//!
//! Plugins written in Rust never touch this module directly: [`declare_plugin!`](crate::declare_plugin)
//! generates the entry point, catches panics at the boundary and turns them into
//! [`status::PANIC`]. `include/seccollab_plugin.h` is the same declaration for C.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::mem::{offset_of, size_of};

/// ABI major version: a plugin with another major is refused.
pub const ABI_MAJOR: u32 = 1;
/// ABI minor version: additions that older plugins and hosts can ignore.
pub const ABI_MINOR: u32 = 1;
/// The one symbol a plugin library exports: `const PluginDecl *seccollab_plugin_entry(void)`.
pub const ENTRY_SYMBOL: &str = "seccollab_plugin_entry";

/// Status codes returned by every plugin function.
pub mod status {
    /// Success.
    pub const OK: i32 = 0;
    /// Failed; worth retrying later.
    pub const TRANSIENT: i32 = 1;
    /// Failed; retrying will not help.
    pub const PERMANENT: i32 = 2;
    /// The service behind the plugin is down: every call would fail now.
    pub const UNAVAILABLE: i32 = 3;
    /// No such object (storage).
    pub const NOT_FOUND: i32 = 4;
    /// The input (configuration, JSON document) was refused.
    pub const INVALID: i32 = 5;
    /// The plugin panicked; the panic was caught at the boundary.
    pub const PANIC: i32 = 6;
    /// The plugin does not offer this optional function (ABI 1.1: a scanner without streaming).
    pub const UNSUPPORTED: i32 = 7;
}

/// Kind codes in [`PluginDecl::kind`].
pub mod kind {
    pub const SCANNER: u32 = 1;
    pub const STORAGE: u32 = 2;
    pub const NOTIFIER: u32 = 3;
    pub const OAUTH_PROVIDER: u32 = 4;
}

/// Borrowed bytes (or UTF-8 text), valid for the duration of the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Slice {
    pub ptr: *const u8,
    pub len: usize,
}

impl Slice {
    pub const EMPTY: Slice = Slice { ptr: std::ptr::null(), len: 0 };

    pub const fn from_static(s: &'static str) -> Slice {
        Slice { ptr: s.as_ptr(), len: s.len() }
    }

    pub fn new(b: &[u8]) -> Slice {
        Slice { ptr: b.as_ptr(), len: b.len() }
    }

    /// The bytes, or an empty slice for a null pointer.
    ///
    /// # Safety
    /// `ptr` must point at `len` readable bytes that outlive `'a`.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller vouches for ptr/len (the other side of the ABI).
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// A buffer allocated by the plugin; the host gives it back to the plugin's `free_buf`.
/// `ctx` is the plugin's own (a Rust plugin keeps the capacity there).
#[repr(C)]
#[derive(Debug)]
pub struct Buf {
    pub ptr: *mut u8,
    pub len: usize,
    pub ctx: usize,
}

impl Buf {
    pub const EMPTY: Buf = Buf { ptr: std::ptr::null_mut(), len: 0, ctx: 0 };
}

pub type InitFn = unsafe extern "C" fn(config: Slice, instance: *mut *mut c_void, err: *mut Buf) -> i32;
pub type FreeBufFn = unsafe extern "C" fn(buf: Buf);

/// What [`ENTRY_SYMBOL`] returns. Static for the life of the process.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDecl {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `sizeof(PluginDecl)` as the plugin was compiled.
    pub struct_size: usize,
    /// One of [`kind`].
    pub kind: u32,
    /// Short ASCII name (`clamav`), UTF-8, static.
    pub name: Slice,
    /// The plugin's own version (`1.4.0`), UTF-8, static.
    pub version: Slice,
    /// Creates an instance from the JSON configuration table; on failure writes a message
    /// into `err`.
    pub init: Option<InitFn>,
    /// Frees a [`Buf`] this plugin returned.
    pub free_buf: Option<FreeBufFn>,
    /// The function table of the kind.
    pub vtable: *const c_void,
}

// SAFETY: a declaration is immutable static data; its pointers are to static data and code.
unsafe impl Sync for PluginDecl {}

/// `kind::SCANNER`. `scan` writes the JSON [`ScanReport`](crate::ScanReport) into `out`, or a
/// message on failure.
///
/// ABI 1.1 appends a streamed scan for files too large to hold in memory (all four or none;
/// a null `scan_begin`, or one answering [`status::UNSUPPORTED`], means whole files only):
/// `scan_begin` makes a stream handle, `scan_write` feeds it the next piece, `scan_finish`
/// writes the report into `out` (or a message) and consumes the handle, `scan_abort` drops it.
#[repr(C)]
#[derive(Debug)]
pub struct ScannerVTable {
    pub struct_size: usize,
    pub scan: Option<unsafe extern "C" fn(instance: *mut c_void, data: Slice, out: *mut Buf) -> i32>,
    pub scan_begin: Option<unsafe extern "C" fn(instance: *mut c_void, stream: *mut *mut c_void, err: *mut Buf) -> i32>,
    pub scan_write: Option<unsafe extern "C" fn(stream: *mut c_void, data: Slice, err: *mut Buf) -> i32>,
    pub scan_finish: Option<unsafe extern "C" fn(stream: *mut c_void, out: *mut Buf) -> i32>,
    pub scan_abort: Option<unsafe extern "C" fn(stream: *mut c_void)>,
}

/// The size of the ABI 1.0 scanner table (`struct_size`, `scan`): the least a host accepts.
pub const SCANNER_VTABLE_V1_0: usize = offset_of!(ScannerVTable, scan_begin);
unsafe impl Sync for ScannerVTable {}

/// `kind::NOTIFIER`. `deliver` takes a JSON [`Outbound`](crate::Outbound); `channel` is the
/// channel the notifier serves (`webhook`).
#[repr(C)]
#[derive(Debug)]
pub struct NotifierVTable {
    pub struct_size: usize,
    pub channel: Slice,
    pub deliver: Option<unsafe extern "C" fn(instance: *mut c_void, message: Slice, err: *mut Buf) -> i32>,
}
unsafe impl Sync for NotifierVTable {}

/// `kind::OAUTH_PROVIDER`. `authorize` takes a JSON
/// [`AuthorizationRequest`](crate::AuthorizationRequest) and writes the URL to send the browser
/// to; `exchange` takes a JSON [`CodeExchange`](crate::CodeExchange) and writes the JSON
/// [`OAuthIdentity`](crate::OAuthIdentity).
#[repr(C)]
#[derive(Debug)]
pub struct OAuthVTable {
    pub struct_size: usize,
    pub display_name: Slice,
    pub authorize: Option<unsafe extern "C" fn(instance: *mut c_void, request: Slice, out: *mut Buf) -> i32>,
    pub exchange: Option<unsafe extern "C" fn(instance: *mut c_void, request: Slice, out: *mut Buf) -> i32>,
}
unsafe impl Sync for OAuthVTable {}

/// `kind::STORAGE`: streamed objects through writer and reader handles.
#[repr(C)]
#[derive(Debug)]
pub struct StorageVTable {
    pub struct_size: usize,
    /// Starts an object; `*writer` receives a handle that ends in `commit` or `abort`.
    pub put:
        Option<unsafe extern "C" fn(instance: *mut c_void, key: Slice, writer: *mut *mut c_void, err: *mut Buf) -> i32>,
    pub write: Option<unsafe extern "C" fn(writer: *mut c_void, data: Slice, err: *mut Buf) -> i32>,
    /// Makes the object visible; consumes the writer (also on failure).
    pub commit: Option<unsafe extern "C" fn(writer: *mut c_void, len: *mut u64, err: *mut Buf) -> i32>,
    /// Drops a writer and everything it wrote.
    pub abort: Option<unsafe extern "C" fn(writer: *mut c_void)>,
    /// Opens `key` from `offset`; `*reader` receives a handle that ends in `close`.
    pub open: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            key: Slice,
            offset: u64,
            reader: *mut *mut c_void,
            err: *mut Buf,
        ) -> i32,
    >,
    /// Reads up to `cap` bytes into `buf`; `*n == 0` is the end.
    pub read: Option<
        unsafe extern "C" fn(reader: *mut c_void, buf: *mut u8, cap: usize, n: *mut usize, err: *mut Buf) -> i32,
    >,
    pub close: Option<unsafe extern "C" fn(reader: *mut c_void)>,
    pub delete: Option<unsafe extern "C" fn(instance: *mut c_void, key: Slice, err: *mut Buf) -> i32>,
    /// `NOT_FOUND` when absent.
    pub stat: Option<unsafe extern "C" fn(instance: *mut c_void, key: Slice, len: *mut u64, err: *mut Buf) -> i32>,
    /// Writes a JSON array of every key into `out`.
    pub list: Option<unsafe extern "C" fn(instance: *mut c_void, out: *mut Buf) -> i32>,
}
unsafe impl Sync for StorageVTable {}

// The layout is the contract: these hold on every 64-bit target the host supports and must
// match include/seccollab_plugin.h.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<Slice>() == 16);
    assert!(size_of::<Buf>() == 24);
    assert!(offset_of!(PluginDecl, abi_major) == 0);
    assert!(offset_of!(PluginDecl, abi_minor) == 4);
    assert!(offset_of!(PluginDecl, struct_size) == 8);
    assert!(offset_of!(PluginDecl, kind) == 16);
    assert!(offset_of!(PluginDecl, name) == 24);
    assert!(offset_of!(PluginDecl, version) == 40);
    assert!(offset_of!(PluginDecl, init) == 56);
    assert!(offset_of!(PluginDecl, free_buf) == 64);
    assert!(offset_of!(PluginDecl, vtable) == 72);
    assert!(size_of::<PluginDecl>() == 80);
    assert!(SCANNER_VTABLE_V1_0 == 16);
    assert!(size_of::<ScannerVTable>() == 48);
    assert!(size_of::<NotifierVTable>() == 32);
    assert!(size_of::<OAuthVTable>() == 40);
    assert!(size_of::<StorageVTable>() == 88);
    assert!(size_of::<Option<InitFn>>() == 8);
};

/// The plugin side: what [`declare_plugin!`](crate::declare_plugin) expands to calls these.
/// Not for direct use.
#[doc(hidden)]
pub mod guest {
    use super::*;
    use crate::{
        AuthorizationRequest, CodeExchange, Notifier, NotifyError, OAuthError, OAuthProvider, ObjectWriter, Outbound,
        Scanner, StorageBackend, StorageError,
    };
    use std::io::Read;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn buf_from(v: Vec<u8>) -> Buf {
        let mut v = std::mem::ManuallyDrop::new(v);
        Buf { ptr: v.as_mut_ptr(), len: v.len(), ctx: v.capacity() }
    }

    unsafe fn put(out: *mut Buf, v: Vec<u8>) {
        if !out.is_null() {
            // SAFETY: the host passes a writable Buf.
            unsafe { out.write(buf_from(v)) };
        }
    }

    /// `free_buf` of every Rust plugin.
    pub unsafe extern "C" fn free_buf(buf: Buf) {
        if !buf.ptr.is_null() {
            // SAFETY: made by `buf_from` from a Vec with this length and capacity.
            drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.ctx) });
        }
    }

    fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        format!("plugin panicked: {what}")
    }

    /// Runs `f`, turning a panic into [`status::PANIC`] with its message in `err`.
    pub unsafe fn guard(err: *mut Buf, f: impl FnOnce() -> Result<i32, (i32, String)>) -> i32 {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(code)) => code,
            Ok(Err((code, msg))) => {
                unsafe { put(err, msg.into_bytes()) };
                code
            }
            Err(p) => {
                unsafe { put(err, panic_message(p).into_bytes()) };
                status::PANIC
            }
        }
    }

    /// Creates the instance: `init` gets the configuration table as JSON.
    pub unsafe fn init<T: Send + Sync + 'static>(
        config: Slice,
        instance: *mut *mut c_void,
        err: *mut Buf,
        make: fn(&serde_json::Value) -> Result<T, String>,
    ) -> i32 {
        unsafe {
            guard(err, || {
                let cfg: serde_json::Value = serde_json::from_slice(config.as_bytes())
                    .map_err(|e| (status::INVALID, format!("configuration is not JSON: {e}")))?;
                let t = make(&cfg).map_err(|m| (status::INVALID, m))?;
                instance.write(Box::into_raw(Box::new(t)) as *mut c_void);
                Ok(status::OK)
            })
        }
    }

    unsafe fn this<'a, T>(instance: *mut c_void) -> &'a T {
        // SAFETY: made by `init::<T>` and never freed (instances live as long as the process).
        unsafe { &*(instance as *const T) }
    }

    pub unsafe extern "C" fn scan<T: Scanner + 'static>(instance: *mut c_void, data: Slice, out: *mut Buf) -> i32 {
        unsafe {
            guard(out, || {
                let report = this::<T>(instance).scan(data.as_bytes()).map_err(|m| (status::TRANSIENT, m))?;
                put(out, serde_json::to_vec(&report).expect("report serialises"));
                Ok(status::OK)
            })
        }
    }

    /// A Rust plugin's stream handle.
    type StreamBox = Box<dyn crate::ScanStream>;

    pub unsafe extern "C" fn scan_begin<T: Scanner + 'static>(
        instance: *mut c_void,
        stream: *mut *mut c_void,
        err: *mut Buf,
    ) -> i32 {
        unsafe {
            guard(err, || match this::<T>(instance).stream() {
                None => Ok(status::UNSUPPORTED),
                Some(Err(m)) => Err((status::TRANSIENT, m)),
                Some(Ok(s)) => {
                    stream.write(Box::into_raw(Box::new(s)) as *mut c_void);
                    Ok(status::OK)
                }
            })
        }
    }

    pub unsafe extern "C" fn scan_write(stream: *mut c_void, data: Slice, err: *mut Buf) -> i32 {
        unsafe {
            guard(err, || {
                // SAFETY: made by `scan_begin` and not yet consumed.
                let s = &mut *(stream as *mut StreamBox);
                s.write(data.as_bytes()).map_err(|m| (status::TRANSIENT, m))?;
                Ok(status::OK)
            })
        }
    }

    pub unsafe extern "C" fn scan_finish(stream: *mut c_void, out: *mut Buf) -> i32 {
        unsafe {
            // SAFETY: made by `scan_begin`; consumed here.
            let s = *Box::from_raw(stream as *mut StreamBox);
            guard(out, || {
                let report = s.finish().map_err(|m| (status::TRANSIENT, m))?;
                put(out, serde_json::to_vec(&report).expect("report serialises"));
                Ok(status::OK)
            })
        }
    }

    pub unsafe extern "C" fn scan_abort(stream: *mut c_void) {
        // SAFETY: made by `scan_begin`; consumed here.
        let s = unsafe { Box::from_raw(stream as *mut StreamBox) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(s)));
    }

    fn notify_code(e: NotifyError) -> (i32, String) {
        match e {
            NotifyError::Transient(m) => (status::TRANSIENT, m),
            NotifyError::Permanent(m) => (status::PERMANENT, m),
            NotifyError::Unavailable(m) => (status::UNAVAILABLE, m),
        }
    }

    pub unsafe extern "C" fn deliver<T: Notifier + 'static>(
        instance: *mut c_void,
        message: Slice,
        err: *mut Buf,
    ) -> i32 {
        unsafe {
            guard(err, || {
                let m: Outbound = serde_json::from_slice(message.as_bytes())
                    .map_err(|e| (status::INVALID, format!("message is not an Outbound document: {e}")))?;
                this::<T>(instance).deliver(&m).map_err(notify_code)?;
                Ok(status::OK)
            })
        }
    }

    fn oauth_code(e: OAuthError) -> (i32, String) {
        match e {
            OAuthError::Refused(m) => (status::PERMANENT, m),
            OAuthError::Unavailable(m) => (status::UNAVAILABLE, m),
        }
    }

    pub unsafe extern "C" fn authorize<T: OAuthProvider + 'static>(
        instance: *mut c_void,
        request: Slice,
        out: *mut Buf,
    ) -> i32 {
        unsafe {
            guard(out, || {
                let r: AuthorizationRequest = serde_json::from_slice(request.as_bytes())
                    .map_err(|e| (status::INVALID, format!("not an AuthorizationRequest: {e}")))?;
                let url = this::<T>(instance).authorization_url(&r).map_err(oauth_code)?;
                put(out, url.into_bytes());
                Ok(status::OK)
            })
        }
    }

    pub unsafe extern "C" fn exchange<T: OAuthProvider + 'static>(
        instance: *mut c_void,
        request: Slice,
        out: *mut Buf,
    ) -> i32 {
        unsafe {
            guard(out, || {
                let r: CodeExchange = serde_json::from_slice(request.as_bytes())
                    .map_err(|e| (status::INVALID, format!("not a CodeExchange: {e}")))?;
                let id = this::<T>(instance).exchange(&r).map_err(oauth_code)?;
                put(out, serde_json::to_vec(&id).expect("identity serialises"));
                Ok(status::OK)
            })
        }
    }

    fn storage_code(e: StorageError) -> (i32, String) {
        match e {
            StorageError::NotFound => (status::NOT_FOUND, "object not found".into()),
            StorageError::Transient(m) => (status::TRANSIENT, m),
            StorageError::Permanent(m) => (status::PERMANENT, m),
        }
    }

    /// The key of a storage call; borrowed for that call only.
    unsafe fn text<'a>(s: Slice) -> Result<&'a str, (i32, String)> {
        std::str::from_utf8(unsafe { s.as_bytes() }).map_err(|_| (status::INVALID, "key is not UTF-8".into()))
    }

    pub unsafe extern "C" fn put_object<T: StorageBackend + 'static>(
        instance: *mut c_void,
        key: Slice,
        writer: *mut *mut c_void,
        err: *mut Buf,
    ) -> i32 {
        unsafe {
            guard(err, || {
                let w = this::<T>(instance).put(text(key)?).map_err(storage_code)?;
                writer.write(Box::into_raw(Box::new(w)) as *mut c_void);
                Ok(status::OK)
            })
        }
    }

    type Writer = Box<dyn ObjectWriter>;
    type Reader = Box<dyn Read + Send>;

    pub unsafe extern "C" fn write(writer: *mut c_void, data: Slice, err: *mut Buf) -> i32 {
        unsafe {
            guard(err, || {
                let w = &mut *(writer as *mut Writer);
                w.write(data.as_bytes()).map_err(storage_code)?;
                Ok(status::OK)
            })
        }
    }

    pub unsafe extern "C" fn commit(writer: *mut c_void, len: *mut u64, err: *mut Buf) -> i32 {
        unsafe {
            let w = Box::from_raw(writer as *mut Writer);
            guard(err, move || {
                let n = (*w).commit().map_err(storage_code)?;
                len.write(n);
                Ok(status::OK)
            })
        }
    }

    pub unsafe extern "C" fn abort(writer: *mut c_void) {
        unsafe {
            let w = Box::from_raw(writer as *mut Writer);
            let _ = catch_unwind(AssertUnwindSafe(move || (*w).abort()));
        }
    }

    pub unsafe extern "C" fn open<T: StorageBackend + 'static>(
        instance: *mut c_void,
        key: Slice,
        offset: u64,
        reader: *mut *mut c_void,
        err: *mut Buf,
    ) -> i32 {
        unsafe {
            guard(err, || {
                let r: Reader = this::<T>(instance).get(text(key)?, offset).map_err(storage_code)?;
                reader.write(Box::into_raw(Box::new(r)) as *mut c_void);
                Ok(status::OK)
            })
        }
    }

    pub unsafe extern "C" fn read(reader: *mut c_void, buf: *mut u8, cap: usize, n: *mut usize, err: *mut Buf) -> i32 {
        unsafe {
            guard(err, || {
                let r = &mut *(reader as *mut Reader);
                let dst = std::slice::from_raw_parts_mut(buf, cap);
                let got = r.read(dst).map_err(|e| (status::TRANSIENT, e.to_string()))?;
                n.write(got);
                Ok(status::OK)
            })
        }
    }

    pub unsafe extern "C" fn close(reader: *mut c_void) {
        unsafe {
            let r = Box::from_raw(reader as *mut Reader);
            let _ = catch_unwind(AssertUnwindSafe(move || drop(r)));
        }
    }

    pub unsafe extern "C" fn delete<T: StorageBackend + 'static>(
        instance: *mut c_void,
        key: Slice,
        err: *mut Buf,
    ) -> i32 {
        unsafe {
            guard(err, || {
                this::<T>(instance).delete(text(key)?).map_err(storage_code)?;
                Ok(status::OK)
            })
        }
    }

    pub unsafe extern "C" fn stat<T: StorageBackend + 'static>(
        instance: *mut c_void,
        key: Slice,
        len: *mut u64,
        err: *mut Buf,
    ) -> i32 {
        unsafe {
            guard(err, || match this::<T>(instance).stat(text(key)?).map_err(storage_code)? {
                Some(n) => {
                    len.write(n);
                    Ok(status::OK)
                }
                None => Err((status::NOT_FOUND, "object not found".into())),
            })
        }
    }

    pub unsafe extern "C" fn list<T: StorageBackend + 'static>(instance: *mut c_void, out: *mut Buf) -> i32 {
        unsafe {
            guard(out, || {
                let keys = this::<T>(instance).list().map_err(storage_code)?;
                put(out, serde_json::to_vec(&keys).expect("keys serialise"));
                Ok(status::OK)
            })
        }
    }
}

/// Writes the exported entry point of a plugin. The plugin author implements one of the four
/// traits on a type and names a constructor that takes the plugin's configuration table (as
/// JSON) and returns the instance or a message:
///
/// ```
/// use seccollab_plugin_api::{declare_plugin, NotifyError, Notifier, Outbound};
///
/// pub struct Echo { prefix: String }
///
/// impl Echo {
///     fn from_config(cfg: &serde_json::Value) -> Result<Self, String> {
///         Ok(Echo { prefix: cfg["prefix"].as_str().unwrap_or("").to_string() })
///     }
/// }
///
/// impl Notifier for Echo {
///     fn name(&self) -> &str { "echo" }
///     fn channel(&self) -> &str { "echo" }
///     fn deliver(&self, m: &Outbound) -> Result<(), NotifyError> {
///         println!("{}{}", self.prefix, m.subject);
///         Ok(())
///     }
/// }
///
/// declare_plugin! {
///     kind: Notifier,
///     type: Echo,
///     name: "echo",
///     version: env!("CARGO_PKG_VERSION"),
///     init: Echo::from_config,
///     channel: "echo",
/// }
/// # fn main() { assert!(!seccollab_plugin_entry().is_null()); }
/// ```
///
/// `kind` is `Scanner`, `Storage`, `Notifier` (which also takes `channel`) or `OAuthProvider`
/// (which also takes `display_name`). Build the crate as a `cdylib`.
#[macro_export]
macro_rules! declare_plugin {
    (kind: Scanner, type: $ty:ty, name: $name:expr, version: $version:expr, init: $init:expr $(,)?) => {
        static __SECCOLLAB_VTABLE: $crate::abi::ScannerVTable = $crate::abi::ScannerVTable {
            struct_size: ::std::mem::size_of::<$crate::abi::ScannerVTable>(),
            scan: Some($crate::abi::guest::scan::<$ty>),
            scan_begin: Some($crate::abi::guest::scan_begin::<$ty>),
            scan_write: Some($crate::abi::guest::scan_write),
            scan_finish: Some($crate::abi::guest::scan_finish),
            scan_abort: Some($crate::abi::guest::scan_abort),
        };
        $crate::declare_plugin!(@decl $crate::abi::kind::SCANNER, $ty, $name, $version, $init);
    };
    (kind: Notifier, type: $ty:ty, name: $name:expr, version: $version:expr, init: $init:expr, channel: $channel:expr $(,)?) => {
        static __SECCOLLAB_VTABLE: $crate::abi::NotifierVTable = $crate::abi::NotifierVTable {
            struct_size: ::std::mem::size_of::<$crate::abi::NotifierVTable>(),
            channel: $crate::abi::Slice::from_static($channel),
            deliver: Some($crate::abi::guest::deliver::<$ty>),
        };
        $crate::declare_plugin!(@decl $crate::abi::kind::NOTIFIER, $ty, $name, $version, $init);
    };
    (kind: OAuthProvider, type: $ty:ty, name: $name:expr, version: $version:expr, init: $init:expr, display_name: $display:expr $(,)?) => {
        static __SECCOLLAB_VTABLE: $crate::abi::OAuthVTable = $crate::abi::OAuthVTable {
            struct_size: ::std::mem::size_of::<$crate::abi::OAuthVTable>(),
            display_name: $crate::abi::Slice::from_static($display),
            authorize: Some($crate::abi::guest::authorize::<$ty>),
            exchange: Some($crate::abi::guest::exchange::<$ty>),
        };
        $crate::declare_plugin!(@decl $crate::abi::kind::OAUTH_PROVIDER, $ty, $name, $version, $init);
    };
    (kind: Storage, type: $ty:ty, name: $name:expr, version: $version:expr, init: $init:expr $(,)?) => {
        static __SECCOLLAB_VTABLE: $crate::abi::StorageVTable = $crate::abi::StorageVTable {
            struct_size: ::std::mem::size_of::<$crate::abi::StorageVTable>(),
            put: Some($crate::abi::guest::put_object::<$ty>),
            write: Some($crate::abi::guest::write),
            commit: Some($crate::abi::guest::commit),
            abort: Some($crate::abi::guest::abort),
            open: Some($crate::abi::guest::open::<$ty>),
            read: Some($crate::abi::guest::read),
            close: Some($crate::abi::guest::close),
            delete: Some($crate::abi::guest::delete::<$ty>),
            stat: Some($crate::abi::guest::stat::<$ty>),
            list: Some($crate::abi::guest::list::<$ty>),
        };
        $crate::declare_plugin!(@decl $crate::abi::kind::STORAGE, $ty, $name, $version, $init);
    };
    (@decl $kind:expr, $ty:ty, $name:expr, $version:expr, $init:expr) => {
        #[allow(unsafe_code)]
        unsafe extern "C" fn __seccollab_init(
            config: $crate::abi::Slice,
            instance: *mut *mut ::std::ffi::c_void,
            err: *mut $crate::abi::Buf,
        ) -> i32 {
            let make: fn(&$crate::serde_json::Value) -> ::std::result::Result<$ty, String> = $init;
            unsafe { $crate::abi::guest::init::<$ty>(config, instance, err, make) }
        }
        static __SECCOLLAB_DECL: $crate::abi::PluginDecl = $crate::abi::PluginDecl {
            abi_major: $crate::abi::ABI_MAJOR,
            abi_minor: $crate::abi::ABI_MINOR,
            struct_size: ::std::mem::size_of::<$crate::abi::PluginDecl>(),
            kind: $kind,
            name: $crate::abi::Slice::from_static($name),
            version: $crate::abi::Slice::from_static($version),
            init: Some(__seccollab_init),
            free_buf: Some($crate::abi::guest::free_buf),
            vtable: &__SECCOLLAB_VTABLE as *const _ as *const ::std::ffi::c_void,
        };
        /// The plugin's entry point (see `seccollab_plugin_api::abi`).
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn seccollab_plugin_entry() -> *const $crate::abi::PluginDecl {
            &__SECCOLLAB_DECL
        }
    };
}
