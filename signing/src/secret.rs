//! Bearer secrets: the one generator for the agent tokens an agent proposes
//! at enrollment and the tokens the reporter hands out.

use rand_core::{OsRng, RngCore};

/// 256 random bits from the OS generator, as 64 lowercase hex digits.
pub fn random_hex256() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex256_is_64_lowercase_hex_digits_and_differs() {
        let (a, b) = (super::random_hex256(), super::random_hex256());
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }
}
