//! The TLS a Kubernetes API server needs, and no more: a rustls
//! `CryptoProvider` cut down for binary size (the budget is 2.5 MiB for all
//! of lastcall, static).
//!
//! The API server is Go's crypto/tls, which always offers TLS 1.3 with the
//! AES-GCM suites and the P-256 key exchange, and serves RSA or ECDSA
//! certificates: kubeadm and most distributions sign with RSA 2048, k3s
//! with ECDSA P-256.
//!
//! * ring: AES-GCM, SHA-2, HKDF, RSA and ECDSA P-384 signatures, and the
//!   random bytes (getrandom(2) through `ring::rand::SystemRandom`).
//! * RustCrypto `p256`: the P-256 key exchange and ECDSA P-256 signatures.
//!   ring's P-256 code carries a 151 KB precomputed table (for speed we do
//!   not need: three handshakes per drain); p256's is a fraction of that.
//!   Both are plugged in through rustls's documented provider traits
//!   (`SupportedKxGroup`, `SignatureVerificationAlgorithm`); nothing of the
//!   protocol is written here.

use std::sync::Arc;

use ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::NistP256;
use ring::digest;
use rustls::crypto::ring::cipher_suite as cs;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, SharedSecret, SupportedKxGroup,
    WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{alg_id, AlgorithmIdentifier, InvalidSignature, PrivateKeyDer, SignatureVerificationAlgorithm};
use rustls::sign::SigningKey;
use rustls::{NamedGroup, SignatureScheme as S};
use webpki::ring as alg;

pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384],
        kx_groups: vec![&P256Kx],
        signature_verification_algorithms: SIG_ALGS,
        secure_random: &Random,
        key_provider: &NoKeys,
    }
}

static P256_SHA256: &dyn SignatureVerificationAlgorithm = &P256Verify { hash: &digest::SHA256, sig: alg_id::ECDSA_SHA256 };
static P256_SHA384: &dyn SignatureVerificationAlgorithm = &P256Verify { hash: &digest::SHA384, sig: alg_id::ECDSA_SHA384 };

/// Certificate and handshake signatures: ECDSA P-256/P-384, RSA.
static SIG_ALGS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        P256_SHA256,
        P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
    ],
    mapping: &[
        (S::ECDSA_NISTP384_SHA384, &[alg::ECDSA_P384_SHA384, P256_SHA384]),
        (S::ECDSA_NISTP256_SHA256, &[P256_SHA256, alg::ECDSA_P384_SHA256]),
        (S::RSA_PSS_SHA512, &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
        (S::RSA_PSS_SHA384, &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
        (S::RSA_PSS_SHA256, &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
        (S::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
        (S::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
        (S::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
    ],
};

/// ECDSA over P-256 with a SHA-2 hash, for certificates (signatureAlgorithm
/// ecdsa-with-SHA256/384) and TLS 1.3 CertificateVerify
/// (ecdsa_secp256r1_sha256). Keys are SEC1 points, signatures DER
/// (RFC 5480, RFC 8446 section 4.2.3).
#[derive(Debug)]
struct P256Verify {
    hash: &'static digest::Algorithm,
    sig: AlgorithmIdentifier,
}

impl SignatureVerificationAlgorithm for P256Verify {
    fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), InvalidSignature> {
        let key = ecdsa::VerifyingKey::<NistP256>::from_sec1_bytes(public_key).map_err(|_| InvalidSignature)?;
        let sig = ecdsa::Signature::<NistP256>::from_der(signature).map_err(|_| InvalidSignature)?;
        let prehash = digest::digest(self.hash, message);
        key.verify_prehash(prehash.as_ref(), &sig).map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P256
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.sig
    }
}

/// ECDHE over P-256 (secp256r1), the group every TLS 1.3 server supports
/// (RFC 8446 section 9.1). Shares are uncompressed SEC1 points; the shared
/// secret is the x-coordinate (RFC 8446 section 7.4.2).
#[derive(Debug)]
struct P256Kx;

struct P256Active {
    secret: p256::NonZeroScalar,
    public: Vec<u8>,
}

impl SupportedKxGroup for P256Kx {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut bytes = p256::FieldBytes::default();
        // A uniformly random non-zero scalar below the group order: draw
        // until one is (all but ~2^-32 of draws are).
        let secret = loop {
            Random.fill(&mut bytes).map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
            if let Some(s) = Option::<p256::NonZeroScalar>::from(p256::NonZeroScalar::from_repr(bytes)) {
                break s;
            }
        };
        let public = p256::PublicKey::from_secret_scalar(&secret).to_encoded_point(false).as_bytes().to_vec();
        Ok(Box::new(P256Active { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}

impl ActiveKeyExchange for P256Active {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        // Only the uncompressed form is allowed in TLS 1.3; from_sec1_bytes
        // also checks that the point is on the curve.
        if peer.first() != Some(&4) {
            return Err(rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare));
        }
        let peer = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| rustls::PeerMisbehaved::InvalidKeyShare)?;
        let shared = p256::ecdh::diffie_hellman(self.secret, peer.as_affine());
        Ok(SharedSecret::from(&shared.raw_secret_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}

/// getrandom(2), the kernel's CSPRNG, through ring (which retries EINTR
/// and short reads).
#[derive(Debug)]
struct Random;

impl SecureRandom for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf).map_err(|_| GetRandomFailed)
    }
}

/// No client certificates: lastcall authenticates with the bearer token.
#[derive(Debug)]
struct NoKeys;

impl KeyProvider for NoKeys {
    fn load_private_key(&self, _: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        Err(rustls::Error::General("client certificates are not supported".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key exchange agrees with itself: both sides derive one secret.
    #[test]
    fn p256_key_exchange_agrees() {
        let a = P256Kx.start().unwrap();
        let b = P256Kx.start().unwrap();
        assert_eq!(a.pub_key().len(), 65);
        let (pa, pb) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        let sa = a.complete(&pb).unwrap();
        let sb = b.complete(&pa).unwrap();
        assert_eq!(sa.secret_bytes(), sb.secret_bytes());
        assert_eq!(sa.secret_bytes().len(), 32);
    }

    #[test]
    fn p256_key_exchange_rejects_bad_shares() {
        let pub_len = P256Kx.start().unwrap().pub_key().len();
        for bad in [vec![], vec![4u8; pub_len], vec![2u8; 33], vec![0u8; 1]] {
            assert!(P256Kx.start().unwrap().complete(&bad).is_err(), "{bad:?}");
        }
    }

    /// ECDSA P-256 verification against a signature made by ring (an
    /// independent implementation), and tampering is caught.
    #[test]
    fn p256_verify_matches_ring() {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let msg = b"certificate to be signed";
        let sig = pair.sign(&rng, msg).unwrap();
        let public = pair.public_key().as_ref();
        assert!(P256_SHA256.verify_signature(public, msg, sig.as_ref()).is_ok());
        assert!(P256_SHA256.verify_signature(public, b"another message", sig.as_ref()).is_err());
        assert!(P256_SHA384.verify_signature(public, msg, sig.as_ref()).is_err());
        let mut bad = sig.as_ref().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(P256_SHA256.verify_signature(public, msg, &bad).is_err());
        assert!(P256_SHA256.verify_signature(&public[1..], msg, sig.as_ref()).is_err());
    }
}
