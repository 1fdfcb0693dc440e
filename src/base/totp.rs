//! The second factor: RFC 6238 one-time codes (HMAC-SHA-1, 30 s steps, 6 digits, one step
//! either side), compared in constant time, each accepted once; and the limit on wrong
//! codes per user. Pure but for [`Secret::generate`]: the caller passes `now`, and the
//! used codes and wrong-code counts, which the state file keeps (a restart forgets none).

use crate::base::ids::UserId;
use std::fmt;

use ring::hmac;
use serde::{Deserialize, Serialize};

/// Seconds per time step.
pub(crate) const STEP: u64 = 30;
/// How long the bot waits for the code after asking, in seconds.
pub(crate) const ASK_SECS: u64 = 120;
/// Wrong codes within [`WRONG_WINDOW`] seconds that lock a user out of code-guarded
/// commands for [`LOCKOUT`] seconds.
pub(crate) const WRONG_MAX: usize = 5;
pub(crate) const WRONG_WINDOW: u64 = 3600;
pub(crate) const LOCKOUT: u64 = 3600;
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
    /// That wrong code was one too many: code-guarded commands are refused until `until`.
    LockedNow { until: u64 },
    /// The user is locked out until `until`; the code was not looked at.
    Locked { until: u64 },
}

/// One user's wrong codes, as the state file keeps them (times by Telegram's clock, like
/// the codes themselves).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WrongCodes {
    pub(crate) user: UserId,
    /// When each wrong code of the last [`WRONG_WINDOW`] came.
    #[serde(default)]
    pub(crate) at: Vec<u64>,
    /// Code-guarded commands from this user are refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) locked_until: Option<u64>,
}

/// The codes used and the wrong codes counted: the state file's `totp_used` and
/// `totp_wrong`, which every check reads and changes (and the caller saves before it acts).
#[derive(Debug)]
pub(crate) struct Ledger<'a> {
    pub(crate) used: &'a mut Vec<u64>,
    pub(crate) wrong: &'a mut Vec<WrongCodes>,
}

/// Until when `user` is locked out, if at `now`.
pub(crate) fn locked_until(wrong: &[WrongCodes], user: UserId, now: u64) -> Option<u64> {
    wrong
        .iter()
        .find(|w| w.user == user)
        .and_then(|w| w.locked_until)
        .filter(|u| *u > now)
}

/// The second factor's secret.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    secret: Secret,
}

impl Guard {
    pub(crate) fn new(secret: Secret) -> Guard {
        Guard { secret }
    }

    /// Checks `code` from `user` at `now` against the ledger: a code of the current step or
    /// one either side that was not used before is accepted once. Wrong codes count per
    /// user, right ones do not wipe them: [`WRONG_MAX`] within [`WRONG_WINDOW`] lock the
    /// user out for [`LOCKOUT`]. What has aged out is dropped from the ledger.
    pub(crate) fn check(&self, ledger: Ledger<'_>, user: UserId, code: &str, now: u64) -> Check {
        let Ledger { used, wrong } = ledger;
        for w in wrong.iter_mut() {
            w.at.retain(|t| t + WRONG_WINDOW > now);
            w.locked_until = w.locked_until.filter(|u| *u > now);
        }
        wrong.retain(|w| !w.at.is_empty() || w.locked_until.is_some());
        if let Some(until) = locked_until(wrong, user, now) {
            return Check::Locked { until };
        }
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
        used.retain(|s| s + 1 >= step);
        let replayed = matched.is_some_and(|s| used.contains(&s));
        if let Some(s) = matched.filter(|_| !replayed) {
            used.push(s);
            return Check::Accepted(s);
        }
        if replayed {
            // The right code, used already (a second command within the same 30 s, or a
            // command delivered again after a crash): refused, but no guess, so not
            // counted: counting it would let the owner lock themselves out.
            let so_far = wrong
                .iter()
                .find(|w| w.user == user)
                .map_or(0, |w| w.at.len());
            return Check::Wrong {
                replayed: true,
                left: WRONG_MAX - so_far,
            };
        }
        let entry = match wrong.iter().position(|w| w.user == user) {
            Some(i) => &mut wrong[i],
            None => {
                wrong.push(WrongCodes {
                    user,
                    ..WrongCodes::default()
                });
                wrong.last_mut().expect("just pushed")
            }
        };
        entry.at.push(now);
        if entry.at.len() >= WRONG_MAX {
            entry.at.clear();
            let until = now + LOCKOUT;
            entry.locked_until = Some(until);
            return Check::LockedNow { until };
        }
        Check::Wrong {
            replayed,
            left: WRONG_MAX - entry.at.len(),
        }
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

    /// A ledger as the state file holds it.
    #[derive(Default)]
    struct Book {
        used: Vec<u64>,
        wrong: Vec<WrongCodes>,
    }

    impl Book {
        fn check(&mut self, g: &Guard, user: i64, code: &str, now: u64) -> Check {
            let ledger = Ledger {
                used: &mut self.used,
                wrong: &mut self.wrong,
            };
            g.check(ledger, UserId(user), code, now)
        }

        /// Written to JSON and read back, as a restart does.
        fn restarted(&self) -> Book {
            let text = serde_json::to_string(&(&self.used, &self.wrong)).unwrap();
            let (used, wrong) = serde_json::from_str(&text).unwrap();
            Book { used, wrong }
        }
    }

    /// Found by review: the right code sent again (two commands within the same 30 s)
    /// counted as a wrong one, so the owner could lock themselves out with right codes.
    #[test]
    fn the_right_code_sent_again_never_locks_anyone_out() {
        let now = 1_111_111_111;
        let code = format!("{:06}", rfc().code(now / STEP));
        let g = Guard::new(rfc());
        let mut b = Book::default();
        assert_eq!(b.check(&g, 1, &code, now), Check::Accepted(now / STEP));
        for _ in 0..WRONG_MAX + 1 {
            assert_eq!(
                b.check(&g, 1, &code, now),
                Check::Wrong {
                    replayed: true,
                    left: WRONG_MAX
                }
            );
        }
        assert!(
            locked_until(&b.wrong, UserId(1), now).is_none(),
            "{:?}",
            b.wrong
        );
    }

    #[test]
    fn a_code_is_accepted_once_within_a_step_either_side() {
        let now = 1_111_111_111;
        let step = now / STEP;
        let code = |s: u64| format!("{:06}", rfc().code(s));
        let g = Guard::new(rfc());
        let mut b = Book::default();
        assert_eq!(b.check(&g, 1, &code(step), now), Check::Accepted(step));
        assert_eq!(
            b.check(&g, 1, &code(step), now),
            Check::Wrong {
                replayed: true,
                left: 5
            },
            "a code is accepted once; the right code again is no guess and is not counted"
        );
        assert_eq!(
            b.check(&g, 2, &code(step + 1), now),
            Check::Accepted(step + 1)
        );
        assert_eq!(
            b.check(&g, 2, &code(step - 1), now),
            Check::Accepted(step - 1)
        );
        assert!(matches!(
            b.check(&g, 2, &code(step + 2), now),
            Check::Wrong {
                replayed: false,
                ..
            }
        ));
        // Saved and read back, the used steps still refuse a replay.
        let mut again = b.restarted();
        assert!(matches!(
            again.check(&g, 3, &code(step), now + 10),
            Check::Wrong { replayed: true, .. }
        ));
        // Steps that can no longer be valid are forgotten.
        again.check(&g, 3, "000000", now + 10 * STEP);
        assert!(again.used.is_empty(), "{:?}", again.used);
    }

    #[test]
    fn five_wrong_codes_in_an_hour_lock_out_for_an_hour() {
        let now = 1_800_000_000;
        let g = Guard::new(rfc());
        let mut b = Book::default();
        let right = |t: u64| format!("{:06}", rfc().code(t / STEP));
        // Four every ten minutes, and a restart between each: they add up.
        for (i, left) in [4, 3, 2, 1].into_iter().enumerate() {
            let r = b.check(&g, 7, "000001", now + i as u64 * 600);
            assert_eq!(
                r,
                Check::Wrong {
                    replayed: false,
                    left
                },
                "try {i}"
            );
            b = b.restarted();
        }
        // A right code between them does not wipe them.
        let t = now + 2_000;
        assert_eq!(b.check(&g, 7, &right(t), t), Check::Accepted(t / STEP));
        let t = now + 2_400;
        assert_eq!(
            b.check(&g, 7, "000001", t),
            Check::LockedNow { until: t + LOCKOUT }
        );
        assert_eq!(LOCKOUT, 3600);
        let mut b = b.restarted();
        let later = t + LOCKOUT - 1;
        assert_eq!(
            b.check(&g, 7, &right(later), later),
            Check::Locked { until: t + LOCKOUT },
            "even a right code is refused while locked out, after a restart too"
        );
        assert_eq!(locked_until(&b.wrong, UserId(7), later), Some(t + LOCKOUT));
        assert_eq!(
            b.check(&g, 8, &right(later - 30), later),
            Check::Accepted(later / STEP - 1),
            "per user"
        );
        let end = t + LOCKOUT;
        assert_eq!(locked_until(&b.wrong, UserId(7), end), None);
        assert_eq!(
            b.check(&g, 7, &right(end), end),
            Check::Accepted(end / STEP)
        );
        assert!(
            b.wrong.is_empty(),
            "an ended lockout is forgotten: {:?}",
            b.wrong
        );
        // Wrong codes further apart than the hour do not add up, and age out.
        for i in 0..8 {
            let t = now + 20_000 + i * 1_000;
            assert!(
                matches!(b.check(&g, 9, "000001", t), Check::Wrong { .. }),
                "{i}"
            );
        }
        assert!(b.wrong.iter().all(|w| w.at.len() <= 4), "{:?}", b.wrong);
    }
}
