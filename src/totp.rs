//! The second factor: RFC 6238 one-time codes (HMAC-SHA-1, 30 s steps, 6 digits, one step
//! either side), compared in constant time, each accepted once; and the limit on wrong
//! codes per user. Pure but for [`Secret::generate`]: the caller passes `now`.

use std::collections::HashMap;
use std::fmt;

use ring::hmac;

/// Seconds per time step.
pub(crate) const STEP: u64 = 30;
/// How long the bot waits for the code after asking, in seconds.
pub(crate) const ASK_SECS: u64 = 120;
/// Wrong codes in [`WRONG_WINDOW`] seconds that lock a user out for [`LOCKOUT`] seconds.
pub(crate) const WRONG_MAX: usize = 5;
pub(crate) const WRONG_WINDOW: u64 = 600;
pub(crate) const LOCKOUT: u64 = 600;
/// The shortest secret accepted: 128 bits (RFC 4226 §4); `totp-setup` writes 160.
const MIN_BYTES: usize = 16;
const NEW_BYTES: usize = 20;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A TOTP secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The base32 text of a secret file (RFC 4648; any case; spaces, newlines and `=`
    /// padding ignored, as authenticator apps show secrets in groups).
    pub(crate) fn parse(text: &str) -> Result<Secret, String> {
        let mut bits: u64 = 0;
        let mut n = 0;
        let mut out = Vec::new();
        for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
            let v = ALPHABET
                .iter()
                .position(|a| *a == c.to_ascii_uppercase() as u8)
                .filter(|_| c.is_ascii())
                .ok_or("not a base32 secret (letters A-Z and digits 2-7)")?;
            bits = (bits << 5) | v as u64;
            n += 5;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        if out.len() < MIN_BYTES {
            return Err(format!(
                "the secret is {} bits; at least {} are needed (`tgknock totp-setup` writes a new one)",
                out.len() * 8,
                MIN_BYTES * 8
            ));
        }
        Ok(Secret(out))
    }

    /// A new random secret, from the operating system's random source.
    pub(crate) fn generate() -> Result<Secret, String> {
        use ring::rand::SecureRandom;
        let mut bytes = vec![0u8; NEW_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "the system's random source failed".to_string())?;
        Ok(Secret(bytes))
    }

    /// The base32 form (no padding), as secret files and `otpauth://` URIs hold it.
    pub(crate) fn base32(&self) -> String {
        let mut out = String::new();
        let mut bits: u64 = 0;
        let mut n = 0;
        for b in &self.0 {
            bits = (bits << 8) | u64::from(*b);
            n += 8;
            while n >= 5 {
                n -= 5;
                out.push(ALPHABET[((bits >> n) & 31) as usize] as char);
            }
        }
        if n > 0 {
            out.push(ALPHABET[((bits << (5 - n)) & 31) as usize] as char);
        }
        out
    }

    /// The 6-digit code of time step `step` (RFC 4226 dynamic truncation).
    pub(crate) fn code(&self, step: u64) -> u32 {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let mac = hmac::sign(&key, &step.to_be_bytes());
        let h = mac.as_ref();
        let at = (h[h.len() - 1] & 0x0f) as usize;
        let n = u32::from_be_bytes([h[at] & 0x7f, h[at + 1], h[at + 2], h[at + 3]]);
        n % 1_000_000
    }

    /// The `otpauth://` URI an authenticator app reads (from the QR code).
    pub(crate) fn uri(&self, label: &str) -> String {
        let label: String = label
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!(
            "otpauth://totp/tgknock:{label}?secret={}&issuer=tgknock&algorithm=SHA1&digits=6&period={STEP}",
            self.base32()
        )
    }
}

/// Whether a word is a code: exactly six ASCII digits.
pub(crate) fn is_code(word: &str) -> bool {
    word.len() == 6 && word.bytes().all(|b| b.is_ascii_digit())
}

/// Equality that takes the same time wherever the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// What became of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Right, and now used (its time step).
    Accepted(u64),
    /// Wrong (or used before); `left` more wrong codes before a lockout.
    Wrong { replayed: bool, left: usize },
    /// That wrong code was one too many: openings are refused until `until`.
    LockedNow { until: u64 },
    /// The user is locked out until `until`; the code was not looked at.
    Locked { until: u64 },
}

/// The codes used and the wrong codes counted, in the daemon's memory (the used steps are
/// also saved with the state, so a restart forgets none).
#[derive(Debug)]
pub(crate) struct Guard {
    secret: Secret,
    used: Vec<u64>,
    wrong: HashMap<i64, Vec<u64>>,
    locked: HashMap<i64, u64>,
}

impl Guard {
    pub(crate) fn new(secret: Secret, used: &[u64]) -> Guard {
        Guard {
            secret,
            used: used.to_vec(),
            wrong: HashMap::new(),
            locked: HashMap::new(),
        }
    }

    /// Until when `user` may not open, if locked out at `now`.
    pub(crate) fn locked_until(&self, user: i64, now: u64) -> Option<u64> {
        self.locked.get(&user).copied().filter(|u| *u > now)
    }

    /// Checks `code` from `user` at `now`: a code of the current step or one either side
    /// that was not used before is accepted once.
    pub(crate) fn check(&mut self, user: i64, code: &str, now: u64) -> Check {
        if let Some(until) = self.locked_until(user, now) {
            return Check::Locked { until };
        }
        self.locked.retain(|_, u| *u > now);
        let step = now / STEP;
        // Every candidate is computed and compared: the time taken does not tell which.
        let mut matched = None;
        for s in [step.saturating_sub(1), step, step + 1] {
            let want = format!("{:06}", self.secret.code(s));
            if same(want.as_bytes(), code.as_bytes()) {
                matched = Some(s);
            }
        }
        // A step's code is valid while the clock is within a step of it.
        self.used.retain(|s| s + 1 >= step);
        let replayed = matched.is_some_and(|s| self.used.contains(&s));
        if let Some(s) = matched.filter(|_| !replayed) {
            self.used.push(s);
            self.wrong.remove(&user);
            return Check::Accepted(s);
        }
        let times = self.wrong.entry(user).or_default();
        times.retain(|t| t + WRONG_WINDOW > now);
        times.push(now);
        if times.len() >= WRONG_MAX {
            self.wrong.remove(&user);
            let until = now + LOCKOUT;
            self.locked.insert(user, until);
            return Check::LockedNow { until };
        }
        Check::Wrong {
            replayed,
            left: WRONG_MAX - times.len(),
        }
    }

    /// The used steps that could still be valid, to save with the state.
    pub(crate) fn used(&self) -> Vec<u64> {
        self.used.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238's SHA-1 key, "12345678901234567890".
    fn rfc() -> Secret {
        Secret(b"12345678901234567890".to_vec())
    }

    #[test]
    fn rfc_6238_vectors() {
        for (t, code) in [
            (59u64, 287_082),
            (1_111_111_109, 81_804),
            (1_111_111_111, 50_471),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
            (20_000_000_000, 353_130),
        ] {
            assert_eq!(rfc().code(t / STEP), code, "at {t}");
        }
    }

    #[test]
    fn base32_round_trip_and_bad_secrets() {
        let s = rfc();
        assert_eq!(s.base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            Secret::parse("gezd gnbv gy3t qojq gezd gnbv gy3t qojq\n"),
            Ok(s)
        );
        assert!(
            Secret::parse("GEZDGNBVGY3TQOJQ")
                .unwrap_err()
                .contains("80 bits")
        );
        assert!(
            Secret::parse("GEZDGNBVGY3TQOJQGEZDGNB1")
                .unwrap_err()
                .contains("base32")
        );
        assert!(Secret::parse("").is_err());
        let new = Secret::generate().unwrap();
        assert_eq!(new.base32().len(), 32);
        assert_ne!(new, Secret::generate().unwrap());
        assert!(!format!("{new:?}").contains(&new.base32()));
        assert_eq!(
            rfc().uri("pi 4"),
            "otpauth://totp/tgknock:pi%204?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=tgknock&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn codes_are_six_digits() {
        assert!(is_code("012345"));
        for bad in ["12345", "1234567", "12 345", "12345a", "１２３４５６", ""] {
            assert!(!is_code(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_code_is_accepted_once_within_a_step_either_side() {
        let now = 1_111_111_111;
        let step = now / STEP;
        let code = |s: u64| format!("{:06}", rfc().code(s));
        let mut g = Guard::new(rfc(), &[]);
        assert_eq!(g.check(1, &code(step), now), Check::Accepted(step));
        assert_eq!(
            g.check(1, &code(step), now),
            Check::Wrong {
                replayed: true,
                left: 4
            },
            "a code is accepted once"
        );
        assert_eq!(g.check(2, &code(step + 1), now), Check::Accepted(step + 1));
        assert_eq!(g.check(2, &code(step - 1), now), Check::Accepted(step - 1));
        assert!(matches!(
            g.check(2, &code(step + 2), now),
            Check::Wrong {
                replayed: false,
                ..
            }
        ));
        // Saved and read back, the used steps still refuse a replay.
        let mut again = Guard::new(rfc(), &g.used());
        assert!(matches!(
            again.check(3, &code(step), now + 10),
            Check::Wrong { replayed: true, .. }
        ));
        // Steps that can no longer be valid are forgotten.
        again.check(3, "000000", now + 10 * STEP);
        assert!(again.used().is_empty(), "{:?}", again.used());
    }

    #[test]
    fn five_wrong_codes_in_ten_minutes_lock_out_for_ten() {
        let now = 1_800_000_000;
        let mut g = Guard::new(rfc(), &[]);
        let right = |t: u64| format!("{:06}", rfc().code(t / STEP));
        for (i, left) in [4, 3, 2, 1].into_iter().enumerate() {
            let r = g.check(7, "000001", now + i as u64 * 60);
            assert_eq!(
                r,
                Check::Wrong {
                    replayed: false,
                    left
                },
                "try {i}"
            );
        }
        assert_eq!(
            g.check(7, "000001", now + 240),
            Check::LockedNow {
                until: now + 240 + LOCKOUT
            }
        );
        let t = now + 300;
        assert_eq!(
            g.check(7, &right(t), t),
            Check::Locked {
                until: now + 240 + LOCKOUT
            },
            "even a right code is refused while locked out"
        );
        assert_eq!(
            g.check(8, &right(t), t),
            Check::Accepted(t / STEP),
            "per user"
        );
        let t = now + 240 + LOCKOUT;
        assert_eq!(g.locked_until(7, t), None);
        assert_eq!(g.check(7, &right(t), t), Check::Accepted(t / STEP));
        // Wrong codes further apart than the window do not add up.
        for i in 0..8 {
            let t = now + 2_000 + i * 200;
            assert!(
                matches!(g.check(9, "000001", t), Check::Wrong { .. }),
                "{i}"
            );
        }
    }
}
