//! Password hashing with argon2id (OWASP parameters by default) in PHC strings, so parameters
//! can be raised later and old hashes still verify.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
pub const DEFAULT_M_KIB: u32 = 19_456;
pub const DEFAULT_T: u32 = 2;
pub const DEFAULT_P: u32 = 1;

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 1024;

fn hasher() -> Argon2<'static> {
    let params =
        Params::new(DEFAULT_M_KIB, DEFAULT_T, DEFAULT_P, None).expect("valid argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks the length policy; says why a password is refused.
pub fn check_policy(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(format!(
            "must be at least {MIN_LEN} characters long (got {n})"
        ));
    }
    if n > MAX_LEN {
        return Err(format!("must be at most {MAX_LEN} characters long"));
    }
    Ok(())
}

/// Hashes a password into a PHC string (CPU- and memory-heavy: call off the async workers).
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing")
        .to_string()
}

/// Verifies `password` against a PHC string in constant time.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_and_differ() {
        let a = super::hash("correct horse battery");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(super::verify("correct horse battery", &a));
        assert!(!super::verify("wrong horse battery", &a));
        assert_ne!(a, super::hash("correct horse battery"));
        assert!(super::check_policy("short").is_err());
    }
}
