//! Clinic share codes: three groups of four characters from the alphabet without ambiguous
//! characters (no I/1, O/0), e.g. `ABCD-EFGH-JKLM`, drawn from a cryptographically secure RNG
//! (rand's thread RNG: ChaCha seeded from the OS). Collisions are retried by the caller against
//! the unique index.

use rand::seq::IndexedRandom as _;

/// The alphabet.
pub const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A fresh share code.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(14);
    for group in 0..3 {
        if group > 0 {
            code.push('-');
        }
        for _ in 0..4 {
            let c = ALPHABET
                .choose(&mut rng)
                .expect("BUG: the alphabet is not empty");
            code.push(char::from(*c));
        }
    }
    code
}

/// Whether `code` has the share-code shape.
pub fn is_valid(code: &str) -> bool {
    let groups: Vec<&str> = code.split('-').collect();
    groups.len() == 3
        && groups
            .iter()
            .all(|g| g.len() == 4 && g.bytes().all(|b| ALPHABET.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_shape_and_differ() {
        let codes: std::collections::BTreeSet<String> = (0..1_000).map(|_| generate()).collect();
        assert_eq!(codes.len(), 1_000);
        assert!(codes.iter().all(|c| is_valid(c)), "{codes:?}");
        assert!(!is_valid("ABCD-EFGH-IJKL"), "I is ambiguous");
        assert!(!is_valid("abcd-efgh-jklm"));
    }
}
