//! SecCollab storage plugin `s3`: encrypted objects in Amazon S3 or any S3-compatible server
//! (MinIO, Ceph RGW, Garage, moto), and in Google Cloud Storage or Azure Blob Storage chosen by
//! the URL scheme, through the `object_store` crate.
//!
//! Settings (`[plugins.enabled.s3] settings = { ... }`):
//!
//! | key | meaning |
//! |---|---|
//! | `url` (required) | `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` or `az://CONTAINER/PREFIX` |
//! | `options` | table of `object_store` builder keys: `endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`, `virtual_hosted_style_request`, `timeout`, ... (a key the store does not know is an init error) |
//! | `from_env` | read credentials and settings from the standard `AWS_*` / `GOOGLE_*` / `AZURE_*` environment variables first (default `true`) |
//! | `part_size_mib` | multipart part size, 5–512 (default 8) |
//! | `max_concurrency` | parts of one upload in flight at once, 1–16 (default 2) |
//! | `max_retries` | retries of a failed request with back-off (default 3) |
//!
//! An object smaller than one part is written with a single `PUT`; a larger one is streamed as a
//! multipart upload that becomes visible only when it is completed, so nothing partial ever
//! appears under a key. Aborted uploads are aborted on the server; uploads a crash interrupted
//! stay invisible until the bucket's lifecycle rule (`AbortIncompleteMultipartUpload`,
//! docs/plugins.md) removes them. Memory per upload is bounded by
//! `part_size × (max_concurrency + 1)`.
//!
//! The host calls are blocking; the plugin owns a small tokio runtime (two workers) and blocks
//! the calling host thread on it.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{
    BackoffConfig, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use seccollab_plugin_api::{declare_plugin, ObjectWriter, StorageBackend, StorageError};
use tokio::runtime::Runtime;

const MIB: usize = 1024 * 1024;

/// Parsed settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub url: url::Url,
    pub options: Vec<(String, String)>,
    pub from_env: bool,
    pub part_size: usize,
    pub max_concurrency: usize,
    pub max_retries: usize,
}

impl Settings {
    pub fn parse(v: &serde_json::Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("settings must be a table")?;
        for k in obj.keys() {
            if !["url", "options", "from_env", "part_size_mib", "max_concurrency", "max_retries"].contains(&k.as_str())
            {
                return Err(format!(
                    "unknown setting `{k}` (known: url, options, from_env, part_size_mib, max_concurrency, max_retries)"
                ));
            }
        }
        let raw = obj.get("url").and_then(|u| u.as_str()).ok_or("`url` is required, e.g. \"s3://bucket/prefix\"")?;
        let url = url::Url::parse(raw).map_err(|e| format!("`url` {raw:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss") {
            return Err(format!("`url` scheme `{}` is not supported (s3://, gs:// or az://)", url.scheme()));
        }
        if url.host_str().unwrap_or_default().is_empty() {
            return Err(format!("`url` {raw:?} names no bucket"));
        }
        let mut options = Vec::new();
        if let Some(o) = obj.get("options") {
            let o = o.as_object().ok_or("`options` must be a table of strings")?;
            for (k, v) in o {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return Err(format!("option `{k}` must be a string, number or boolean")),
                };
                options.push((k.clone(), v));
            }
        }
        let int = |key: &str, default: usize, min: usize, max: usize| -> Result<usize, String> {
            match obj.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .map(|n| n as usize)
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| format!("`{key}` must be a whole number from {min} to {max}")),
            }
        };
        let from_env = match obj.get("from_env") {
            None => true,
            Some(b) => b.as_bool().ok_or("`from_env` must be true or false")?,
        };
        Ok(Self {
            url,
            options,
            from_env,
            part_size: int("part_size_mib", 8, 5, 512)? * MIB,
            max_concurrency: int("max_concurrency", 2, 1, 16)?,
            max_retries: int("max_retries", 3, 0, 20)?,
        })
    }

    /// The folder inside the bucket that holds the objects.
    pub fn prefix(&self) -> Result<Path, String> {
        Path::parse(self.url.path().trim_matches('/')).map_err(|e| format!("`url` path: {e}"))
    }
}

fn retry(max_retries: usize) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries,
        retry_timeout: Duration::from_secs(30),
    }
}

fn build_store(s: &Settings) -> Result<Arc<dyn ObjectStore>, String> {
    let url = s.url.as_str();
    let bad = |k: &str, e: object_store::Error| format!("option `{k}`: {e}");
    let store: Arc<dyn ObjectStore> = match s.url.scheme() {
        "s3" | "s3a" => {
            use object_store::aws::AmazonS3Builder;
            let mut b = if s.from_env { AmazonS3Builder::from_env() } else { AmazonS3Builder::new() };
            b = b.with_url(url).with_retry(retry(s.max_retries));
            for (k, v) in &s.options {
                b = b.with_config(k.parse().map_err(|e| bad(k, e))?, v);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        "gs" => {
            use object_store::gcp::GoogleCloudStorageBuilder;
            let mut b =
                if s.from_env { GoogleCloudStorageBuilder::from_env() } else { GoogleCloudStorageBuilder::new() };
            b = b.with_url(url).with_retry(retry(s.max_retries));
            for (k, v) in &s.options {
                b = b.with_config(k.parse().map_err(|e| bad(k, e))?, v);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        _ => {
            use object_store::azure::MicrosoftAzureBuilder;
            let mut b = if s.from_env { MicrosoftAzureBuilder::from_env() } else { MicrosoftAzureBuilder::new() };
            b = b.with_url(url).with_retry(retry(s.max_retries));
            for (k, v) in &s.options {
                b = b.with_config(k.parse().map_err(|e| bad(k, e))?, v);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
    };
    Ok(store)
}

/// How an `object_store` error reads to the host: missing, worth retrying, or final.
fn map_err(e: object_store::Error) -> StorageError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => StorageError::NotFound,
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. } => StorageError::Permanent(e.to_string()),
        other => StorageError::Transient(other.to_string()),
    }
}

/// Keys are generated by the host: lower-case hex only.
fn valid_key(key: &str) -> bool {
    key.len() >= 8 && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub struct S3Storage {
    rt: Arc<Runtime>,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    part_size: usize,
    max_concurrency: usize,
}

impl S3Storage {
    pub fn from_config(v: &serde_json::Value) -> Result<Self, String> {
        let s = Settings::parse(v)?;
        // reqwest is built without a default crypto provider: this library uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = build_store(&s)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("seccollab-s3")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
        Ok(Self {
            rt: Arc::new(rt),
            store,
            prefix: s.prefix()?,
            part_size: s.part_size,
            max_concurrency: s.max_concurrency,
        })
    }

    fn path(&self, key: &str) -> Result<Path, StorageError> {
        if !valid_key(key) {
            return Err(StorageError::Permanent(format!("invalid object key {key:?}")));
        }
        Ok(self.prefix.clone().join(key))
    }
}

enum WriteState {
    /// Less than one part so far: kept here and sent with one PUT at commit.
    Buffer(Vec<u8>),
    /// A multipart upload in progress.
    Multipart(WriteMultipart),
    Done,
}

struct S3Writer {
    rt: Arc<Runtime>,
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_size: usize,
    max_concurrency: usize,
    len: u64,
    state: WriteState,
}

impl ObjectWriter for S3Writer {
    fn write(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        self.len += buf.len() as u64;
        match &mut self.state {
            WriteState::Buffer(b) => {
                b.extend_from_slice(buf);
                if b.len() >= self.part_size {
                    let data = std::mem::take(b);
                    let (store, path, part) = (self.store.clone(), self.path.clone(), self.part_size);
                    let w = self.rt.block_on(async move {
                        let upload = store.put_multipart(&path).await?;
                        let mut w = WriteMultipart::new_with_chunk_size(upload, part);
                        w.write(&data);
                        Ok::<_, object_store::Error>(w)
                    });
                    match w {
                        Ok(w) => self.state = WriteState::Multipart(w),
                        Err(e) => {
                            self.state = WriteState::Done;
                            return Err(map_err(e));
                        }
                    }
                }
                Ok(())
            }
            WriteState::Multipart(w) => {
                let conc = self.max_concurrency;
                self.rt
                    .block_on(async {
                        w.wait_for_capacity(conc).await?;
                        w.write(buf);
                        Ok(())
                    })
                    .map_err(map_err)
            }
            WriteState::Done => Err(StorageError::Permanent("the upload already failed".into())),
        }
    }

    fn commit(mut self: Box<Self>) -> Result<u64, StorageError> {
        match std::mem::replace(&mut self.state, WriteState::Done) {
            WriteState::Buffer(b) => {
                let (store, path) = (self.store.clone(), self.path.clone());
                self.rt.block_on(async move { store.put(&path, PutPayload::from(b)).await }).map_err(map_err)?;
            }
            WriteState::Multipart(w) => {
                self.rt.block_on(w.finish()).map_err(map_err)?;
            }
            WriteState::Done => return Err(StorageError::Permanent("the upload already failed".into())),
        }
        Ok(self.len)
    }

    fn abort(mut self: Box<Self>) {
        self.abort_upload();
    }
}

impl S3Writer {
    fn abort_upload(&mut self) {
        if let WriteState::Multipart(w) = std::mem::replace(&mut self.state, WriteState::Done) {
            // Best effort: a failed abort leaves an invisible upload for the lifecycle rule.
            let _ = self.rt.block_on(w.abort());
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        self.abort_upload();
    }
}

struct S3Reader {
    rt: Arc<Runtime>,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    cur: Bytes,
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.cur.is_empty() {
            let Some(stream) = self.stream.as_mut() else { return Ok(0) };
            match self.rt.block_on(stream.next()) {
                None => {
                    self.stream = None;
                    return Ok(0);
                }
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

impl StorageBackend for S3Storage {
    fn name(&self) -> &str {
        "s3"
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(S3Writer {
            rt: self.rt.clone(),
            store: self.store.clone(),
            path: self.path(key)?,
            part_size: self.part_size,
            max_concurrency: self.max_concurrency,
            len: 0,
            state: WriteState::Buffer(Vec::new()),
        }))
    }

    fn get(&self, key: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let opts = GetOptions { range: (offset > 0).then_some(GetRange::Offset(offset)), ..Default::default() };
        let p = path.clone();
        let res = self.rt.block_on(async move { store.get_opts(&p, opts).await });
        let empty =
            || -> Box<dyn Read + Send> { Box::new(S3Reader { rt: self.rt.clone(), stream: None, cur: Bytes::new() }) };
        match res {
            Ok(r) => Ok(Box::new(S3Reader { rt: self.rt.clone(), stream: Some(r.into_stream()), cur: Bytes::new() })),
            Err(e @ object_store::Error::NotFound { .. }) => Err(map_err(e)),
            // A range starting at the end is refused by S3: that is an empty read, not an error.
            Err(e) if offset > 0 => match self.stat(key)? {
                Some(len) if offset >= len => Ok(empty()),
                _ => Err(map_err(e)),
            },
            Err(e) => Err(map_err(e)),
        }
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        match self.rt.block_on(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let (store, path) = (self.store.clone(), self.path(key)?);
        match self.rt.block_on(async move { store.head(&path).await }) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    fn list(&self) -> Result<Vec<String>, StorageError> {
        let (store, prefix) = (self.store.clone(), self.prefix.clone());
        let depth = prefix.parts().count() + 1;
        self.rt
            .block_on(async move {
                let mut s = store.list((depth > 1).then_some(&prefix));
                let mut keys = Vec::new();
                while let Some(m) = s.next().await {
                    let m = m?;
                    if m.location.parts().count() == depth {
                        if let Some(name) = m.location.filename().filter(|n| valid_key(n)) {
                            keys.push(name.to_string());
                        }
                    }
                }
                Ok(keys)
            })
            .map_err(map_err)
    }
}

declare_plugin! {
    kind: Storage,
    type: S3Storage,
    name: "s3",
    version: env!("CARGO_PKG_VERSION"),
    init: S3Storage::from_config,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_checked_with_a_reason() {
        let s =
            Settings::parse(&json!({"url": "s3://bucket/a/b", "options": {"region": "eu-west-1", "allow_http": true}}))
                .unwrap();
        assert_eq!(s.prefix().unwrap().as_ref(), "a/b");
        assert_eq!(s.part_size, 8 * MIB);
        assert_eq!(s.max_concurrency, 2);
        assert!(s.options.contains(&("allow_http".into(), "true".into())));
        let err = |v: serde_json::Value| Settings::parse(&v).unwrap_err();
        assert!(err(json!({})).contains("`url` is required"));
        assert!(err(json!({"url": "ftp://x/y"})).contains("not supported"));
        assert!(err(json!({"url": "s3:///y"})).contains("names no bucket"));
        assert!(err(json!({"url": "s3://b", "part_size_mib": 4})).contains("from 5 to 512"));
        assert!(err(json!({"url": "s3://b", "bucket": "x"})).contains("unknown setting `bucket`"));
        assert!(err(json!({"url": "s3://b", "options": {"region": ["x"]}})).contains("option `region`"));
    }

    #[test]
    fn an_unknown_store_option_fails_init() {
        let e = S3Storage::from_config(&json!({"url": "s3://b", "from_env": false, "options": {"colour": "blue"}}))
            .err()
            .unwrap();
        assert!(e.contains("option `colour`"), "{e}");
    }

    #[test]
    fn keys_are_host_generated_hex_only() {
        assert!(valid_key("0123456789abcdef"));
        for k in ["short", "../../etc/passwd", "ABCDEF0123456789", "0123456789abcdeg", "a/b0123456789"] {
            assert!(!valid_key(k), "{k}");
        }
    }
}
