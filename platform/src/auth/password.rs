//! Password policy and argon2id hashing on a bounded pool.
//!
//! Each hash holds `memory_kib` of memory (19 MiB by default), so at most `workers` run at once
//! (one per core by default) and at most `queue_limit` sign-ins wait for a slot; beyond that
//! callers get [`Busy`] (503 with `Retry-After`) instead of growing memory without bound or
//! starving other requests. Unknown emails are verified against a dummy hash of the same cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

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

/// The bounded argon2id hashing pool.
pub struct PasswordHasherPool {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
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
        let dummy = hash_with(&params, "seccollab dummy password for unknown accounts");
        Ok(Self {
            slots: Arc::new(Semaphore::new(workers)),
            waiting: AtomicUsize::new(0),
            queue_limit: p.queue_limit,
            params,
            dummy,
        })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_limit + self.slots.available_permits() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        let permit = self.slots.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|_| Busy)?;
        let out = tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|_| Busy)?;
        Ok(out)
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, Busy> {
        let params = self.params.clone();
        self.run(move || hash_with(&params, &password)).await
    }

    /// Verifies against `phc`, or against the dummy hash when there is none (unknown account),
    /// so both take the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<Verified, Busy> {
        let real = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.clone());
        let params = self.params.clone();
        self.run(move || {
            let ok = verify(&password, &phc) && real;
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
        hash_with(&self.params, password)
    }
}

fn hash_with(params: &Params, password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing")
        .to_string()
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
        let old = hash_with(&weak, "correct horse battery");
        let v = pool.verify("correct horse battery".into(), Some(old)).await.unwrap();
        assert_eq!(v, Verified { ok: true, needs_rehash: true });
    }
}
