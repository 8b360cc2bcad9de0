//! Password policy and argon2id hashing on a bounded pool.
//!
//! Each hash holds `memory_kib` of memory (19 MiB by default), so at most `workers` run at once
//! (one per core by default) and at most `queue_limit` sign-ins wait for a slot; beyond that
//! callers get [`Busy`] (503 with `Retry-After`) instead of growing memory without bound or
//! starving other requests. Unknown emails are verified against a dummy hash of the same cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::security::policy::{Argon2Policy, PasswordPolicy};

/// Checks length and strength; says why a password is refused.
pub fn check_policy(p: &PasswordPolicy, password: &str, user_inputs: &[&str]) -> Result<(), String> {
    let n = password.chars().count();
    if n < p.min_length {
        return Err(format!("must be at least {} characters long (got {n})", p.min_length));
    }
    if n > p.max_length {
        return Err(format!("must be at most {} characters long", p.max_length));
    }
    // zxcvbn is costly on very long inputs; beyond 256 characters length alone is strength.
    if n <= 256 {
        let est = zxcvbn::zxcvbn(password, user_inputs);
        if (est.score() as u8) < p.min_score {
            let mut why = String::from("is too easy to guess");
            if let Some(fb) = est.feedback() {
                if let Some(w) = fb.warning() {
                    why.push_str(&format!(": {w}"));
                }
                if let Some(s) = fb.suggestions().first() {
                    why.push_str(&format!(" ({s})"));
                }
            }
            return Err(why);
        }
    }
    Ok(())
}

/// Too many sign-ins are already waiting for a hashing slot.
#[derive(Debug, Clone, Copy)]
pub struct Busy;

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The bounded argon2id hashing pool: `workers` dedicated threads, each owning one reusable
/// argon2 memory area. Hashing never allocates per request, so memory stays at
/// `workers × memory_kib` however many sign-ins arrive (allocating 19 MiB per hash made glibc
/// keep growing the heap: ~6 MB of RSS per sign-in, measured).
pub struct PasswordHasherPool {
    jobs: std::sync::mpsc::SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    queue_limit: usize,
    params: Params,
    dummy: String,
}

impl std::fmt::Debug for PasswordHasherPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasherPool").field("waiting", &self.waiting.load(Ordering::Relaxed)).finish()
    }
}

/// Result of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses other parameters than the current policy: re-hash it.
    pub needs_rehash: bool,
}

impl PasswordHasherPool {
    pub fn new(p: &Argon2Policy) -> Result<Self, String> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        let workers =
            if p.workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) } else { p.workers };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(p.queue_limit.max(1));
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut memory: Vec<Block> = Vec::new();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| format!("argon2 worker: {e}"))?;
        }
        let dummy = hash_with(&params, "seccollab dummy password for unknown accounts", &mut Vec::new());
        Ok(Self { jobs: tx, waiting: Arc::new(AtomicUsize::new(0)), queue_limit: p.queue_limit, params, dummy })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static) -> Result<T, Busy> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_limit {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let waiting = self.waiting.clone();
        let job: Job = Box::new(move |mem| {
            waiting.fetch_sub(1, Ordering::SeqCst);
            let _ = done.send(f(mem));
        });
        if self.jobs.try_send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        result.await.map_err(|_| Busy)
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, Busy> {
        let params = self.params.clone();
        self.run(move |mem| hash_with(&params, &password, mem)).await
    }

    /// Verifies against `phc`, or against the dummy hash when there is none (unknown account),
    /// so both take the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<Verified, Busy> {
        let real = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.clone());
        let params = self.params.clone();
        self.run(move |mem| {
            let ok = verify_with(&password, &phc, mem) && real;
            let needs_rehash = ok
                && PasswordHash::new(&phc).ok().and_then(|h| Params::try_from(&h).ok()).is_none_or(|p| {
                    p.m_cost() != params.m_cost() || p.t_cost() != params.t_cost() || p.p_cost() != params.p_cost()
                });
            Verified { ok, needs_rehash }
        })
        .await
    }

    /// Blocking hash for the CLI.
    pub fn hash_blocking(&self, password: &str) -> String {
        hash_with(&self.params, password, &mut Vec::new())
    }
}

fn argon2id(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Hashes into a PHC string using (and growing, once) the caller's memory area.
fn hash_with(params: &Params, password: &str, mem: &mut Vec<Block>) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).expect("generated salt decodes");
    if mem.len() < params.block_count() {
        mem.resize(params.block_count(), Block::default());
    }
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2id(params)
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut mem[..params.block_count()])
        .expect("argon2 hashing");
    PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: (params).try_into().expect("params encode"),
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).expect("output length")),
    }
    .to_string()
}

/// Verifies against a PHC string (its own parameters) in constant time, reusing `mem`.
fn verify_with(password: &str, phc: &str, mem: &mut Vec<Block>) -> bool {
    let Ok(h) = PasswordHash::new(phc) else { return false };
    if h.algorithm != argon2::ARGON2ID_IDENT {
        return verify(password, phc);
    }
    let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&h), h.salt, h.hash) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else { return false };
    if mem.len() < params.block_count() {
        mem.resize(params.block_count(), Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let version = h.version.and_then(|v| Version::try_from(v).ok()).unwrap_or(Version::V0x13);
    if Argon2::new(Algorithm::Argon2id, version, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut mem[..params.block_count()])
        .is_err()
    {
        return false;
    }
    bool::from(subtle::ConstantTimeEq::ct_eq(out.as_slice(), expected.as_bytes()))
}

/// Verifies `password` against a PHC string (the parameters come from the string).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_explains_refusals() {
        let p = PasswordPolicy::default();
        assert!(check_policy(&p, "short", &[]).unwrap_err().contains("at least 12"));
        assert!(check_policy(&p, "password1234", &[]).unwrap_err().contains("easy to guess"));
        assert!(check_policy(&p, &"x".repeat(1025), &[]).unwrap_err().contains("at most 1024"));
        assert!(check_policy(&p, "violet tractor sings at noon", &[]).is_ok());
    }

    #[tokio::test]
    async fn hashes_verify_and_flag_old_parameters() {
        let pool = PasswordHasherPool::new(&Argon2Policy::default()).unwrap();
        let h = pool.hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let v = pool.verify("correct horse battery".into(), Some(h.clone())).await.unwrap();
        assert_eq!(v, Verified { ok: true, needs_rehash: false });
        assert!(!pool.verify("wrong horse battery".into(), Some(h)).await.unwrap().ok);
        assert!(!pool.verify("anything".into(), None).await.unwrap().ok);
        let weak = Params::new(8192, 1, 1, None).unwrap();
        let old = hash_with(&weak, "correct horse battery", &mut Vec::new());
        assert!(verify("correct horse battery", &old), "interoperable with the argon2 crate's verifier");
        let v = pool.verify("correct horse battery".into(), Some(old)).await.unwrap();
        assert_eq!(v, Verified { ok: true, needs_rehash: true });
    }
}
