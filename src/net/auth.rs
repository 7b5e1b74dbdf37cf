//! Challenge-response on the cluster secret. Each side proves it holds the secret by
//! answering the other's fresh random nonce with HMAC-SHA256 over the nonce, the cluster
//! name and both node names, under a label that differs per direction (so a proof cannot be
//! reflected back). The secret itself never crosses the network.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::message::NONCE_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// Which side's proof this is; part of what is signed.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// The spare answering the primary's nonce.
    SpareToPrimary,
    /// The primary answering the spare's nonce.
    PrimaryToSpare,
}

pub fn new_nonce() -> Vec<u8> {
    rand::random::<[u8; NONCE_BYTES]>().to_vec()
}

fn mac(
    secret: &[u8],
    dir: Direction,
    cluster: &str,
    primary: &str,
    spare: &str,
    nonce: &[u8],
) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    let label: &[u8] = match dir {
        Direction::SpareToPrimary => b"spare/v1/spare-proof",
        Direction::PrimaryToSpare => b"spare/v1/primary-proof",
    };
    for part in [
        label,
        cluster.as_bytes(),
        primary.as_bytes(),
        spare.as_bytes(),
        nonce,
    ] {
        m.update(&(part.len() as u64).to_le_bytes());
        m.update(part);
    }
    m
}

pub fn prove(
    secret: &[u8],
    dir: Direction,
    cluster: &str,
    primary: &str,
    spare: &str,
    nonce: &[u8],
) -> Vec<u8> {
    mac(secret, dir, cluster, primary, spare, nonce)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Checks a proof in constant time.
pub fn verify(
    secret: &[u8],
    dir: Direction,
    cluster: &str,
    primary: &str,
    spare: &str,
    nonce: &[u8],
    proof: &[u8],
) -> bool {
    mac(secret, dir, cluster, primary, spare, nonce)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_checks_only_with_the_same_secret_nonce_and_direction() {
        let n = new_nonce();
        let p = prove(
            b"secret-secret-secret",
            Direction::SpareToPrimary,
            "c",
            "main",
            "lan-1",
            &n,
        );
        assert!(verify(
            b"secret-secret-secret",
            Direction::SpareToPrimary,
            "c",
            "main",
            "lan-1",
            &n,
            &p
        ));
        assert!(!verify(
            b"other-secret-secret!",
            Direction::SpareToPrimary,
            "c",
            "main",
            "lan-1",
            &n,
            &p
        ));
        assert!(!verify(
            b"secret-secret-secret",
            Direction::PrimaryToSpare,
            "c",
            "main",
            "lan-1",
            &n,
            &p
        ));
        assert!(!verify(
            b"secret-secret-secret",
            Direction::SpareToPrimary,
            "c",
            "main",
            "lan-2",
            &n,
            &p
        ));
        assert!(!verify(
            b"secret-secret-secret",
            Direction::SpareToPrimary,
            "c",
            "main",
            "lan-1",
            &new_nonce(),
            &p
        ));
    }
}
