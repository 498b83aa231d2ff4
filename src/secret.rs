//! Secret bytes (private keys, keystore passwords): redacted in `Debug`, zeroized on drop.
//!
//! Owns nothing else. Anything that holds key material holds it as a [`Secret`].

use zeroize::Zeroizing;

/// Bytes that must never be printed, logged or left in memory after use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw bytes. Callers must not copy them into anything that is not itself a `Secret`.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new(b"-----BEGIN PRIVATE KEY-----".to_vec());
        assert_eq!(format!("{s:?}"), "(redacted)");
        assert_eq!(format!("{:?}", Some(s)), "Some((redacted))");
    }
}
