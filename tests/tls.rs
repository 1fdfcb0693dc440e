//! The TLS tier: the real binary against the fake Bot API served over HTTPS on 127.0.0.1
//! (a rustls server), trusting a test CA given in `TGKNOCK_CA_FILE`. The certificates are
//! made at run time (rcgen) in the test's scratch directory; the RSA leaf's key is a fixed
//! test key (tests/data/test-rsa-2048-key.pem), as rcgen with ring cannot make RSA keys.
//!
//! Every build speaks the same TLS (src/chat/tls.rs): the same tests run the ARM builds under
//! qemu (tests/cross.sh), and expect the same of them.

use std::process::Output;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::env::{stderr, stdout};
use crate::support::{Env, FakeApi, OWNER, now, wait_for};

/// The leaf key of the RSA case: a throwaway key made for these tests, nothing else.
const RSA_KEY: &str = include_str!("data/test-rsa-2048-key.pem");
const CLOCK_HINT: &str = "is the system clock right?";

/// A certificate authority of the tests: its certificate (PEM, for `TGKNOCK_CA_FILE`) and
/// what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// An ECDSA P-384 CA, which every build verifies.
    fn new(name: &str) -> Ca {
        Ca::with_key(name, Key::P384)
    }

    fn with_key(name: &str, key: Key) -> Ca {
        let key = key.pair();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost with a key of this kind, signed by
    /// this CA.
    fn leaf(&self, key: Key, validity: Validity) -> Leaf {
        let key = key.pair();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tgknock test server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        match validity {
            Validity::Now => {}
            Validity::From(t) => {
                let (y, m, d) = day(t);
                params.not_before = rcgen::date_time_ymd(y, m, d);
            }
            Validity::Until(t) => {
                let (y, m, d) = day(t);
                params.not_after = rcgen::date_time_ymd(y, m, d);
            }
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

/// The day (UTC) of Unix time `t`: year, month, day.
fn day(t: i64) -> (i32, u8, u8) {
    let (y, m, d, ..) = tgknock::base::duration::civil(t as u64);
    (y as i32, m as u8, d as u8)
}

#[derive(Debug, Clone, Copy)]
enum Key {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Key {
    fn pair(self) -> KeyPair {
        let alg: &'static SignatureAlgorithm = match self {
            Key::Rsa => return KeyPair::from_pem(RSA_KEY).unwrap(),
            Key::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Key::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Key::Ed25519 => &rcgen::PKCS_ED25519,
        };
        KeyPair::generate_for(alg).unwrap()
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
enum Validity {
    /// From 1975 to 4096 (rcgen's default).
    Now,
    /// Not valid before the day of this time.
    From(i64),
    /// Not valid after the day of this time.
    Until(i64),
}

struct Leaf {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// The fake Bot API over HTTPS with this leaf (rustls' full ring provider on the server
/// side: whatever the client lacks is the client's doing).
fn https_api(leaf: Leaf) -> FakeApi {
    https_api_with(
        leaf,
        rustls::crypto::ring::default_provider(),
        rustls::ALL_VERSIONS,
    )
}

/// The fake Bot API over HTTPS with this leaf, this provider and these protocol versions
/// (to leave the client one way through).
fn https_api_with(
    leaf: Leaf,
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> FakeApi {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert], leaf.key)
        .unwrap();
    FakeApi::start_tls(Arc::new(config))
}

/// An environment whose Bot API is served over HTTPS with `leaf`, and whose
/// `TGKNOCK_CA_FILE` holds `trusted`'s certificate.
fn tls_env(leaf: Leaf, trusted: &Ca) -> Env {
    tls_env_on(https_api(leaf), trusted)
}

/// An environment whose Bot API is `api` (HTTPS), and whose `TGKNOCK_CA_FILE` holds
/// `trusted`'s certificate.
fn tls_env_on(api: FakeApi, trusted: &Ca) -> Env {
    let mut env = Env::with_api(api);
    assert!(env.api.url().starts_with("https://127.0.0.1:"));
    let ca = env.path("ca.pem");
    std::fs::write(&ca, &trusted.pem).unwrap();
    env.set("TGKNOCK_CA_FILE", &ca.display().to_string());
    env
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// With a `key` leaf of `ca`, the daemon logs in over TLS, carries out an `/open`, and
/// `check` passes.
fn works(ca: &Ca, key: Key) {
    works_in(&tls_env(ca.leaf(key, Validity::Now), ca), key);
}

/// In `env` (HTTPS), the daemon logs in, carries out an `/open`, and `check` passes.
fn works_in(env: &Env, key: Key) {
    let d = env.spawn();
    d.wait_log("logged in as @tgknock_test_bot", 60);
    env.api.say(OWNER, "/open");
    let reply = env.api.wait_reply(OWNER, "ssh (22/tcp)", 60);
    assert!(reply.contains("open to everyone until"), "{key:?}: {reply}");
    assert!(
        !env.drops(4, "ssh") && !env.drops(6, "ssh"),
        "{key:?}: {}",
        env.rules(4)
    );
    assert!(env.api.handshake_errors().is_empty(), "{key:?}");
    assert!(!d.output().contains("TLS error"), "{key:?}: {}", d.output());
    drop(d);

    let o = env.run(&["check"]);
    assert_eq!(
        code(&o),
        0,
        "{key:?}: check\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("@tgknock_test_bot"), "{}", stdout(&o));
}

/// Waits until the daemon has failed `n` times with `needle` in the line, backing off.
fn wait_failures(d: &crate::support::Daemon, needle: &str, n: usize) -> Vec<String> {
    wait_for(90, &format!("{n} failures with {needle:?}"), || {
        let lines: Vec<String> = d
            .output()
            .lines()
            .filter(|l| l.contains(needle) && l.contains("retrying in"))
            .map(String::from)
            .collect();
        (lines.len() >= n).then_some(lines)
    })
}

/// The daemon's TLS fails: it never reaches the API (no request, no update handled, the
/// gate stays closed), keeps retrying with backoff and does not exit; `check` fails, saying
/// `needle`. Returns the lines of the failures.
fn refused(env: &Env, needle: &str) -> Vec<String> {
    env.api.say(OWNER, "/open");
    let mut d = env.spawn();
    let lines = wait_failures(&d, needle, 2);
    for l in &lines {
        assert!(l.contains("getMe failed: TLS error: "), "{l}");
    }
    // Backing off: the second wait is longer than the first (1 s, then 2 s, less jitter).
    let wait = |l: &str| -> f64 {
        let (_, w) = l.rsplit_once("retrying in ").unwrap();
        w.trim_end_matches(" s").parse().unwrap()
    };
    assert!(wait(&lines[1]) > wait(&lines[0]), "{lines:?}");
    assert!(d.try_exit().is_none(), "exited:\n{}", d.output());
    assert!(env.api.requests("getMe").is_empty());
    assert!(env.api.requests("getUpdates").is_empty());
    assert_eq!(env.api.pending(), 1, "the /open is never fetched");
    assert!(env.api.sent().is_empty());
    assert!(
        env.drops(4, "ssh") && env.drops(6, "ssh"),
        "closed:\n{}",
        env.rules(4)
    );
    drop(d);

    let o = env.run(&["check"]);
    assert_eq!(code(&o), 1, "check\n{}\n{}", stdout(&o), stderr(&o));
    let fail = stdout(&o)
        .lines()
        .find(|l| l.starts_with("[FAIL] Telegram: TLS error: "))
        .map(String::from)
        .unwrap_or_else(|| panic!("no TLS failure in check:\n{}", stdout(&o)));
    assert!(fail.contains(needle), "{fail}");
    lines
}

#[test]
fn an_rsa_certificate_works() {
    works(&Ca::new("tgknock test CA"), Key::Rsa);
}

#[test]
fn an_ecdsa_p384_certificate_works() {
    works(&Ca::new("tgknock test CA"), Key::P384);
}

#[test]
fn an_ed25519_certificate_works() {
    works(&Ca::new("tgknock test CA"), Key::Ed25519);
}

/// A server behind an ECDSA P-256 certificate (certbot's default key type) that speaks
/// only the P-256 key exchange (secp256r1), so no handshake can fall back to X25519 or
/// P-384: it works on every target, in TLS 1.3 and in TLS 1.2 (ECDHE-ECDSA).
#[test]
fn an_ecdsa_p256_certificate_and_key_exchange_work() {
    use rustls::crypto::ring::{default_provider, kx_group};
    let ca = Ca::new("tgknock test CA");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let provider = rustls::crypto::CryptoProvider {
            kx_groups: vec![kx_group::SECP256R1],
            ..default_provider()
        };
        let api = https_api_with(ca.leaf(Key::P256, Validity::Now), provider, &[version]);
        let env = tls_env_on(api, &ca);
        works_in(&env, Key::P256);
        let handshakes = env.api.handshakes();
        assert!(!handshakes.is_empty(), "{version:?}");
        for h in &handshakes {
            assert_eq!(h.group, "secp256r1", "{version:?}: {handshakes:?}");
            assert_eq!(
                format!("{:?}", version.version),
                h.version,
                "{handshakes:?}"
            );
        }
    }
}

/// A chain whose CA signs with ECDSA P-256 verifies on every target.
#[test]
fn a_chain_signed_with_ecdsa_p256_works() {
    works(&Ca::with_key("tgknock test CA", Key::P256), Key::Rsa);
}

#[test]
fn a_certificate_of_another_ca_is_refused() {
    let ours = Ca::new("tgknock test CA");
    let theirs = Ca::new("someone else's CA");
    let env = tls_env(theirs.leaf(Key::P384, Validity::Now), &ours);
    let lines = refused(&env, "invalid peer certificate: UnknownIssuer");
    assert!(!lines[0].contains(CLOCK_HINT), "{}", lines[0]);
}

/// A board whose clock is behind sees a certificate that is not valid yet: the log says
/// the clock looks wrong, and the daemon keeps trying.
#[test]
fn a_certificate_not_yet_valid_points_at_the_clock() {
    let ca = Ca::new("tgknock test CA");
    let env = tls_env(ca.leaf(Key::P384, Validity::From(now() + 2 * 86_400)), &ca);
    let lines = refused(&env, "certificate not valid yet");
    assert!(lines[0].contains(CLOCK_HINT), "{}", lines[0]);
}

/// And a board whose clock is ahead, an expired one.
#[test]
fn an_expired_certificate_points_at_the_clock() {
    let ca = Ca::new("tgknock test CA");
    let env = tls_env(ca.leaf(Key::Rsa, Validity::Until(now() - 2 * 86_400)), &ca);
    let lines = refused(&env, "certificate expired");
    assert!(lines[0].contains(CLOCK_HINT), "{}", lines[0]);
}

/// Without `TGKNOCK_CA_FILE` the built-in roots are used: the test CA is unknown there.
#[test]
fn the_built_in_roots_do_not_hold_the_test_ca() {
    let ca = Ca::new("tgknock test CA");
    let mut env = tls_env(ca.leaf(Key::Rsa, Validity::Now), &ca);
    env.unset("TGKNOCK_CA_FILE");
    refused(&env, "invalid peer certificate: UnknownIssuer");
}

/// A `TGKNOCK_CA_FILE` tgknock cannot use is a configuration error naming the key and the
/// file: the daemon exits 2 before it touches anything.
#[test]
fn an_unusable_ca_file_is_a_configuration_error() {
    let ca = Ca::new("tgknock test CA");
    let mut env = tls_env(ca.leaf(Key::Rsa, Validity::Now), &ca);
    let key_only = env.path("key.pem");
    std::fs::write(&key_only, RSA_KEY).unwrap();
    let not_pem = env.path("not-pem.pem");
    std::fs::write(
        &not_pem,
        "-----BEGIN CERTIFICATE-----\nthis is not base64!\n",
    )
    .unwrap();
    let text = env.path("text.txt");
    std::fs::write(&text, "hello, I am not a certificate\n").unwrap();
    let missing = env.path("missing.pem");
    for (file, problem) in [
        (&missing, "cannot read"),
        (&not_pem, "is not a PEM file (PEM: "),
        (&text, "holds no certificate"),
        (&key_only, "holds no certificate"),
    ] {
        let file = file.display().to_string();
        env.set("TGKNOCK_CA_FILE", &file);
        let mut d = env.spawn();
        let status = d.wait_exit(60);
        let out = d.output();
        assert_eq!(status.code(), Some(2), "{file}: {out}");
        let line = out
            .lines()
            .find(|l| l.contains("TGKNOCK_CA_FILE"))
            .unwrap_or_else(|| panic!("{file}: the key is not named:\n{out}"));
        assert!(line.contains(&file) && line.contains(problem), "{line}");
        assert!(env.api.requests("getMe").is_empty());
        assert!(env.api.handshake_errors().is_empty());

        // `check` reports it among its failed checks.
        let o = env.run(&["check"]);
        assert_eq!(code(&o), 1, "{file}: check\n{}", stdout(&o));
        let out = stdout(&o);
        assert!(
            out.lines()
                .any(|l| l.starts_with("[FAIL] configuration: TGKNOCK_CA_FILE: ")
                    && l.contains(&file)
                    && l.contains(problem)),
            "{file}: check\n{out}"
        );
    }
}
