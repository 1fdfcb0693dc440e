//! The TLS of the Bot API client: a lean rustls crypto provider built from ring's parts, and
//! what a failed handshake tells the user.
//!
//! rustls' own ring provider brings every suite and curve it has; tgknock talks to one
//! server a few kilobytes a minute and has a size budget, so it keeps:
//! - TLS 1.3 AES-128/256-GCM and the four TLS 1.2 ECDHE AES-GCM suites (no
//!   ChaCha20-Poly1305: AES without hardware support is fast enough for this traffic);
//! - key exchange X25519, P-256 and P-384;
//! - certificates and handshakes signed with RSA (PKCS#1, PSS), ECDSA P-256 and P-384, and
//!   Ed25519.
//!
//! Every target gets the same provider: a server that works with one build works with all
//! of them. P-256 (certbot's default key type) costs ring's 151 kB table of precomputed
//! points; the size budgets (DESIGN.md) are set with it in.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::{
    CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use webpki::ring as alg;

/// The provider of every TLS connection to the Bot API.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Random,
        key_provider: &NoKeys,
    })
}

/// rustls' ring provider's list (`SUPPORTED_SIG_ALGS`). The mapping says which algorithms a
/// TLS signature scheme may use; rustls offers the server the schemes listed there.
static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::ED25519,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
        alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        // In TLS 1.2 the scheme does not fix the curve; in TLS 1.3 it does.
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        ),
        (SignatureScheme::ED25519, &[alg::ED25519]),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[alg::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[alg::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[alg::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

/// The operating system's random source, through ring.
#[derive(Debug)]
struct Random;

impl SecureRandom for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

/// tgknock presents no client certificate, so it loads no private key (and links no code
/// that parses one).
#[derive(Debug)]
struct NoKeys;

impl KeyProvider for NoKeys {
    fn load_private_key(
        &self,
        _key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "tgknock uses no client certificate".into(),
        ))
    }
}

/// The rustls error inside a ureq error: ureq returns the handshake's errors wrapped in an
/// I/O error (`io: invalid peer certificate: …`), a few others as they are.
pub(crate) fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// A TLS failure as the log shows it: rustls' words, shortened where they are a dump.
pub(crate) fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(
            C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
        ) => "invalid peer certificate: signed with an algorithm tgknock does not support".into(),
        other => other.to_string(),
    }
}

/// The certificate is expired or not valid yet: what a board whose clock is wrong sees.
pub(crate) fn is_clock_error(e: &rustls::Error) -> bool {
    use rustls::CertificateError as C;
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_aes_gcm_only() {
        let p = provider();
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(names.len(), 6, "{names:?}");
        assert!(names.iter().all(|n| n.contains("_GCM_")), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("CHACHA")), "{names:?}");
    }

    #[test]
    fn the_same_curves_and_schemes_on_every_target() {
        let p = provider();
        let groups: Vec<String> = p
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["X25519", "secp256r1", "secp384r1"]);
        let schemes = SIGNATURES.supported_schemes();
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP384_SHA384));
        assert!(schemes.contains(&SignatureScheme::ED25519));
        assert!(schemes.contains(&SignatureScheme::RSA_PSS_SHA256));
        assert_eq!(SIGNATURES.all.len(), 14);
        // Every algorithm a scheme maps to is one of those verified.
        for (_, algs) in SIGNATURES.mapping {
            for a in *algs {
                let id = a.signature_alg_id();
                assert!(SIGNATURES.all.iter().any(|b| b.signature_alg_id() == id
                    && b.public_key_alg_id() == a.public_key_alg_id()));
            }
        }
    }

    #[test]
    fn refuses_keys() {
        let key = PrivateKeyDer::Pkcs8(vec![0u8; 16].into());
        assert!(provider().key_provider.load_private_key(key).is_err());
    }

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = ureq::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            inner.clone(),
        ));
        assert_eq!(rustls_error(&e), Some(&inner));
        assert_eq!(
            describe(rustls_error(&e).unwrap()),
            "invalid peer certificate: UnknownIssuer"
        );
        let plain = ureq::Error::Io(std::io::Error::other("connection reset"));
        assert_eq!(rustls_error(&plain), None);
    }

    #[test]
    fn clock_errors() {
        use rustls::CertificateError as C;
        use rustls::pki_types::UnixTime;
        use std::time::Duration;
        let t = UnixTime::since_unix_epoch(Duration::from_secs(100));
        for c in [
            C::Expired,
            C::NotValidYet,
            C::ExpiredContext {
                time: t,
                not_after: t,
            },
            C::NotValidYetContext {
                time: t,
                not_before: t,
            },
        ] {
            assert!(is_clock_error(&rustls::Error::InvalidCertificate(c)));
        }
        assert!(!is_clock_error(&rustls::Error::InvalidCertificate(
            C::UnknownIssuer
        )));
    }
}
