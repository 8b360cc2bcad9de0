//! The upload and read pipelines: plaintext is hashed, typed and encrypted chunk by chunk on a
//! blocking thread, and only ciphertext reaches the storage backend. Memory per transfer is a
//! few segments, whatever the file size.

use std::io::Read;
use std::sync::Arc;

use rocket::tokio::sync::mpsc;
use seccollab_plugin_api::{StorageBackend, StorageError};
use sha2::{Digest, Sha256};

use super::envelope::{self, Decryptor, Encryptor, EnvelopeError, HEADER_LEN, SEGMENT_SIZE, TAG_LEN};

const SNIFF_LEN: usize = 8192;

/// What the upload pipeline stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
    pub mime_type: String,
    pub storage_key: String,
    pub wrapped_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("files of type {0} are not allowed")]
    Blocked(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("the upload ended before the whole file arrived")]
    Incomplete,
}

/// The type of a file judged from its first bytes, never from its name or the client's word.
pub fn sniff(head: &[u8]) -> String {
    if let Some(t) = infer::get(head) {
        return t.mime_type().to_string();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A multi-byte character cut at the end of the sniffed window is still text.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if text && !head.contains(&0) {
        "text/plain".into()
    } else {
        "application/octet-stream".into()
    }
}

/// Random object key: 128 bits, lower-case hex.
pub fn new_storage_key() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// Consumes plaintext chunks (`Some`) from `rx` until the end marker (`None`); stores the
/// encrypted object. Only the explicit end marker commits: a channel that closes without it
/// (client gone, malformed body) aborts, and so does any error, so nothing is left behind.
#[allow(clippy::too_many_arguments)]
pub fn store(
    storage: Arc<dyn StorageBackend>,
    master: [u8; 32],
    file_id: String,
    storage_key: String,
    max: u64,
    blocked: Vec<String>,
    mut rx: mpsc::Receiver<Option<bytes::Bytes>>,
) -> Result<Stored, UploadError> {
    let dek = envelope::new_data_key();
    let mut enc = Encryptor::new(&dek);
    let mut writer = storage.put(&storage_key)?;
    // SHA-256 runs on its own thread beside encryption (the chunks are shared, not copied).
    let (sha_tx, sha_rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(4);
    let hasher = std::thread::spawn(move || {
        let mut sha = Sha256::new();
        for chunk in sha_rx {
            sha.update(&chunk);
        }
        hex::encode(sha.finalize())
    });
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut mime: Option<String> = None;
    let mut size = 0u64;
    let mut out = Vec::with_capacity(SEGMENT_SIZE * 2);
    let check_type = |head: &[u8]| {
        let m = sniff(head);
        if blocked.iter().any(|b| b == &m) {
            Err(UploadError::Blocked(m))
        } else {
            Ok(m)
        }
    };
    let result = (|| {
        let mut ended = false;
        while let Some(msg) = rx.blocking_recv() {
            let Some(chunk) = msg else {
                ended = true;
                break;
            };
            size += chunk.len() as u64;
            if size > max {
                return Err(UploadError::TooLarge(max));
            }
            if mime.is_none() {
                let take = (SNIFF_LEN - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                if head.len() == SNIFF_LEN {
                    mime = Some(check_type(&head)?);
                }
            }
            enc.push(&chunk, &mut out)?;
            let _ = sha_tx.send(chunk);
            if !out.is_empty() {
                writer.write(&out)?;
                out.clear();
            }
        }
        if !ended {
            return Err(UploadError::Incomplete);
        }
        let mime = match mime {
            Some(m) => m,
            None => check_type(&head)?,
        };
        enc.finish(&mut out)?;
        writer.write(&out)?;
        Ok(mime)
    })();
    drop(sha_tx);
    let sha256 = hasher.join().expect("hasher thread");
    match result {
        Ok(mime_type) => {
            writer.commit()?;
            Ok(Stored {
                size,
                sha256,
                mime_type,
                wrapped_key: envelope::wrap_key(&master, &file_id, &dek),
                storage_key,
            })
        }
        Err(e) => {
            writer.abort();
            Err(e)
        }
    }
}

/// Decrypts `[start, end)` of a stored object, calling `sink` with plaintext pieces; stops early
/// (without error) when `sink` returns false. Reads only the segments the range needs.
pub fn read_range(
    storage: &dyn StorageBackend,
    key: &str,
    dek: &[u8; 32],
    start: u64,
    end: u64,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), ReadError> {
    let first_seg = start / SEGMENT_SIZE as u64;
    let mut dec = if first_seg == 0 {
        Decryptor::new(dek)
    } else {
        let mut header = [0u8; HEADER_LEN];
        storage.get(key, 0)?.read_exact(&mut header).map_err(|_| ReadError::Envelope(EnvelopeError::Truncated))?;
        Decryptor::resume(dek, &header, first_seg as u32)?
    };
    let offset = if first_seg == 0 { 0 } else { HEADER_LEN as u64 + first_seg * (SEGMENT_SIZE + TAG_LEN) as u64 };
    let mut reader = storage.get(key, offset)?;
    let mut pos = first_seg * SEGMENT_SIZE as u64; // plaintext position of the next byte out
                                                   // Four segments per read: fewer reads and fewer, larger hand-offs to the HTTP writer.
    let mut buf = vec![0u8; 4 * (SEGMENT_SIZE + TAG_LEN)];
    let mut plain = Vec::with_capacity(SEGMENT_SIZE * 6);
    let mut emit = |plain: &mut Vec<u8>, pos: &mut u64| -> bool {
        let from = start.saturating_sub(*pos).min(plain.len() as u64) as usize;
        let to = (end.saturating_sub(*pos)).min(plain.len() as u64) as usize;
        *pos += plain.len() as u64;
        let keep_going = if from < to { sink(&plain[from..to]) } else { true };
        plain.clear();
        keep_going && *pos < end
    };
    loop {
        let n = reader.read(&mut buf).map_err(|e| ReadError::Storage(StorageError::Transient(e.to_string())))?;
        if n == 0 {
            break;
        }
        dec.push(&buf[..n], &mut plain)?;
        if !emit(&mut plain, &mut pos) {
            return Ok(());
        }
    }
    dec.finish(&mut plain)?;
    emit(&mut plain, &mut pos);
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Re-reads, decrypts and hashes a whole object: `Ok(sha256)` or why it could not be read.
pub fn hash_object(storage: &dyn StorageBackend, key: &str, dek: &[u8; 32]) -> Result<String, ReadError> {
    let mut sha = Sha256::new();
    read_range(storage, key, dek, 0, u64::MAX, &mut |p| {
        sha.update(p);
        true
    })?;
    Ok(hex::encode(sha.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_uses_content_only() {
        assert_eq!(sniff(b"%PDF-1.7\n..."), "application/pdf");
        assert_eq!(
            sniff(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff"),
            "application/vnd.microsoft.portable-executable"
        );
        assert_eq!(sniff("héllo wörld".as_bytes()), "text/plain");
        assert_eq!(sniff(&[0u8, 1, 2, 3, 200, 201]), "application/octet-stream");
        assert_eq!(sniff(&"é".as_bytes()[..1]), "text/plain");
    }

    #[test]
    fn ranges_decrypt_only_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn StorageBackend> = Arc::new(super::super::local::LocalStorage::open(dir.path()).unwrap());
        let plain: Vec<u8> = (0..(3 * SEGMENT_SIZE + 100)).map(|i| (i % 253) as u8).collect();
        let (tx, rx) = mpsc::channel(4);
        let s2 = storage.clone();
        let h = std::thread::spawn(move || store(s2, [1; 32], "f".into(), new_storage_key(), u64::MAX, vec![], rx));
        for c in plain.chunks(10_000) {
            tx.blocking_send(Some(bytes::Bytes::copy_from_slice(c))).unwrap();
        }
        tx.blocking_send(None).unwrap();
        let stored = h.join().unwrap().unwrap();
        let dek = envelope::unwrap_key(&[1; 32], "f", &stored.wrapped_key).unwrap();
        for (a, b) in [
            (0u64, 10u64),
            (SEGMENT_SIZE as u64 - 3, SEGMENT_SIZE as u64 + 5),
            (2 * SEGMENT_SIZE as u64 + 7, plain.len() as u64),
        ] {
            let mut got = Vec::new();
            read_range(&*storage, &stored.storage_key, &dek, a, b, &mut |p| {
                got.extend_from_slice(p);
                true
            })
            .unwrap();
            assert_eq!(got, &plain[a as usize..b as usize], "range {a}..{b}");
        }
        assert_eq!(hash_object(&*storage, &stored.storage_key, &dek).unwrap(), stored.sha256);
    }
}
