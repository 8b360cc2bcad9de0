//! The storage function table, end to end through the C ABI: a Rust storage plugin declared
//! with `declare_plugin!`, checked and wrapped by the host exactly as a loaded library is, then
//! used through the `StorageBackend` trait.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use seccollab_plugin_api::host::{self, Instance};
use seccollab_plugin_api::{declare_plugin, ObjectWriter, PluginKind, StorageBackend, StorageError};

#[derive(Default)]
pub struct Mem {
    objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

struct W {
    key: String,
    buf: Vec<u8>,
    objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl ObjectWriter for W {
    fn write(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        if buf == b"FAIL" {
            return Err(StorageError::Transient("disk busy".into()));
        }
        self.buf.extend_from_slice(buf);
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<u64, StorageError> {
        let n = self.buf.len() as u64;
        self.objects.lock().unwrap().insert(self.key, self.buf);
        Ok(n)
    }
    fn abort(self: Box<Self>) {}
}

impl Mem {
    fn from_config(_: &serde_json::Value) -> Result<Self, String> {
        Ok(Mem::default())
    }
}

impl StorageBackend for Mem {
    fn name(&self) -> &str {
        "mem"
    }
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        if key.contains('/') {
            return Err(StorageError::Permanent("bad key".into()));
        }
        Ok(Box::new(W { key: key.into(), buf: vec![], objects: self.objects.clone() }))
    }
    fn get(&self, key: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let o = self.objects.lock().unwrap().get(key).cloned().ok_or(StorageError::NotFound)?;
        Ok(Box::new(std::io::Cursor::new(o[offset as usize..].to_vec())))
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.objects.lock().unwrap().get(key).map(|o| o.len() as u64))
    }
    fn list(&self) -> Result<Vec<String>, StorageError> {
        let mut k: Vec<String> = self.objects.lock().unwrap().keys().cloned().collect();
        k.sort();
        Ok(k)
    }
}

declare_plugin! {
    kind: Storage,
    type: Mem,
    name: "mem",
    version: "2.1.0",
    init: Mem::from_config,
}

#[test]
fn storage_round_trips_through_the_abi() {
    let lib = host::from_entry(seccollab_plugin_entry, "in-process").expect("declaration accepted");
    assert_eq!((lib.kind(), lib.name(), lib.version(), lib.abi()), (PluginKind::Storage, "mem", "2.1.0", (1, 1)));
    let Instance::Storage(s) = lib.instantiate(&serde_json::json!({})).unwrap() else { panic!("not storage") };

    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = s.put("obj1").unwrap();
    for c in data.chunks(65_536) {
        w.write(c).unwrap();
    }
    assert_eq!(w.commit().unwrap(), data.len() as u64);
    assert_eq!(s.stat("obj1").unwrap(), Some(data.len() as u64));
    let mut back = Vec::new();
    s.get("obj1", 0).unwrap().read_to_end(&mut back).unwrap();
    assert!(back == data, "bytes differ after the round trip");
    let mut tail = Vec::new();
    s.get("obj1", 299_990).unwrap().read_to_end(&mut tail).unwrap();
    assert_eq!(tail, &data[299_990..]);

    // Aborted and dropped writers leave nothing.
    let mut w = s.put("obj2").unwrap();
    w.write(b"partial").unwrap();
    w.abort();
    drop(s.put("obj3").unwrap());
    assert_eq!(s.list().unwrap(), ["obj1"]);

    // Errors keep their kind across the line.
    assert!(matches!(s.get("missing", 0), Err(StorageError::NotFound)));
    assert_eq!(s.stat("missing").unwrap(), None);
    assert!(matches!(s.put("a/b"), Err(StorageError::Permanent(m)) if m == "bad key"));
    let mut w = s.put("obj4").unwrap();
    assert!(matches!(w.write(b"FAIL"), Err(StorageError::Transient(m)) if m == "disk busy"));

    s.delete("obj1").unwrap();
    assert_eq!(s.stat("obj1").unwrap(), None);
}
