//! The daemon's side of `approve-login`: a Unix socket (`approve.sock` in the runtime
//! directory) that only root and the daemon's own user may use, served by a small thread
//! beside the poll loop. Each request (one per connection, see [`crate::chat::approve`]) is
//! asked of every allowed user with its own Bot API request, with Allow and Deny buttons,
//! and waits in [`Approvals`]; the poll loop hands presses on those buttons to
//! [`Approvals::press`]. The first allowed user's press decides; a stranger's never does;
//! after the outcome (or the timeout) a press changes nothing, and every copy of the
//! question is edited to the outcome. The daemon ending closes the socket: a waiting
//! `approve-login` reads no answer and refuses the login.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::base::error::{Error, Result};
use crate::base::ids::{ChatId, MessageId};
use crate::chat::approve::{self, Answer, Outcome, Request};
use crate::chat::bot::Bot;
use crate::chat::telegram::{BotApi, CallbackQuery};
use crate::store::config::Config;

/// How long a client has to send its whole request (a slow sender is cut off).
pub(crate) const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Requests served at once; a connection beyond them is closed unanswered (a refusal).
pub(crate) const MAX_WAITING: usize = 32;

/// The most questions that wait at once about logins from one source.
pub(crate) const MAX_PER_SOURCE: usize = 2;

/// The questions waiting for a press, by id.
#[derive(Default)]
pub(crate) struct Approvals {
    /// Each question's source (RHOST) and, once decided, its outcome.
    waiting: Mutex<HashMap<String, (String, Option<Outcome>)>>,
    decided: Condvar,
    /// Connections being served.
    serving: AtomicUsize,
    next: AtomicU64,
    /// Random per daemon: a button of an earlier daemon's question never matches a new one.
    nonce: u64,
}

impl Approvals {
    pub(crate) fn new() -> Approvals {
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        Approvals {
            nonce: u64::from_le_bytes(seed)
                ^ crate::os::clock::wall().as_nanos() as u64
                ^ u64::from(std::process::id()),
            ..Approvals::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Option<Outcome>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new question about a login from `rhost`, waiting; `None` when
    /// [`MAX_PER_SOURCE`] questions about that source wait already (one who holds a
    /// stolen key and logs in again and again neither fills every slot nor floods the
    /// owners with questions, one of which a mis-tap would allow).
    fn open(&self, rhost: &str) -> Option<String> {
        let mut w = self.lock();
        if w.values()
            .filter(|(r, o)| r == rhost && o.is_none())
            .count()
            >= MAX_PER_SOURCE
        {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{n:x}", self.nonce);
        w.insert(id.clone(), (rhost.to_string(), None));
        Some(id)
    }

    /// Waits until the question `id` is decided, `until`, or `gone()` says the login went
    /// away (asked once a second); takes the question out either way.
    fn wait(&self, id: &str, until: Instant, gone: &dyn Fn() -> bool) -> Outcome {
        let mut w = self.lock();
        loop {
            if let Some((_, Some(o))) = w.get(id) {
                let o = o.clone();
                w.remove(id);
                return o;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                w.remove(id);
                return Outcome::Expired;
            }
            drop(w);
            if gone() {
                let mut w = self.lock();
                // A press that came meanwhile decided it: that stands.
                return match w.remove(id) {
                    Some((_, Some(o))) => o,
                    _ => Outcome::Abandoned,
                };
            }
            w = self.lock();
            if matches!(w.get(id), Some((_, Some(_)))) {
                continue;
            }
            w = self
                .decided
                .wait_timeout(w, left.min(Duration::from_secs(1)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Decides the question `id` when it still waits; whether it did.
    fn decide(&self, id: &str, outcome: Outcome) -> bool {
        let mut w = self.lock();
        match w.get_mut(id).map(|(_, o)| o) {
            Some(slot @ None) => {
                *slot = Some(outcome);
                self.decided.notify_all();
                true
            }
            _ => false,
        }
    }

    fn still_waiting(&self, id: &str) -> bool {
        matches!(self.lock().get(id), Some((_, None)))
    }

    /// A press from the poll loop. `false` when it is no press on a question's button (then
    /// it is the poll loop's, as any other press); otherwise it is handled here: a
    /// stranger's press costs no request and decides nothing; an allowed user's is
    /// answered, and decides the question when it still waits and the answer went through.
    pub(crate) fn press(&self, api: &dyn Bot, cfg: &Config, q: &CallbackQuery, now: u64) -> bool {
        if !approve::is_question_press(q.data.as_deref()) {
            return false;
        }
        let who = q.from.describe();
        if !cfg.telegram.allowed_users.contains(&q.from.id) {
            log::debug!("ignoring a press on a login question from stranger {who}");
            return true;
        }
        let Some((id, allow)) = approve::press(q.data.as_deref()) else {
            log::warn!("refusing a press from {who}: its data is not a login question's");
            let _ = api.answer_press(&q.id, Some("This button is not one of tgknock's."));
            return true;
        };
        if !self.still_waiting(&id) {
            log::info!("a press from {who} on a login question that no longer waits");
            let _ = api.answer_press(&q.id, Some("This login no longer waits: nothing changed."));
            return true;
        }
        if let Err(e) = api.answer_press(&q.id, None) {
            log::warn!("not deciding a login on a press by {who}: answering it failed: {e}");
            return true;
        }
        let by = approve::name(&q.from);
        let outcome = if allow {
            Outcome::Allowed { by, at: now }
        } else {
            Outcome::Denied { by }
        };
        if self.decide(&id, outcome) {
            log::info!(
                "login question {id}: {} by {who}",
                if allow { "allowed" } else { "denied" }
            );
        }
        true
    }
}

/// Binds `path` so that only the daemon's user (and root) can connect: the socket is made
/// under a temporary name, given mode 0600, then renamed into place, so it is never
/// reachable with looser permissions.
fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("sock.new");
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| Error::file(&tmp, "bind", e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::file(&tmp, "chmod", e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, "rename", e))?;
    Ok(listener)
}

/// Binds the socket at `path` and serves it on a thread of its own. When it cannot, the
/// daemon goes on without it (saying so): `approve-login` then finds no daemon and refuses
/// every login that needs approval, which is what it does with the daemon stopped.
pub(crate) fn serve(path: &Path, cfg: Config, api: BotApi, approvals: Arc<Approvals>) {
    if let Err(e) = start(path, cfg, api, approvals) {
        log::error!("approve-login cannot be served ({e}): logins that need approval are refused");
    }
}

fn start(path: &Path, cfg: Config, api: BotApi, approvals: Arc<Approvals>) -> Result<()> {
    let listener = bind(path)?;
    let host = crate::cli::login::hostname();
    let shared = Arc::new((cfg, api, host));
    std::thread::Builder::new()
        .name("approve".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else {
                    // Out of descriptors, say: not a reason to spin.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                if approvals.serving.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
                    approvals.serving.fetch_sub(1, Ordering::SeqCst);
                    log::warn!("{MAX_WAITING} logins wait for approval already: refusing another");
                    continue;
                }
                let (a, s) = (Arc::clone(&approvals), Arc::clone(&shared));
                let spawned = std::thread::Builder::new()
                    .name("approve-conn".into())
                    .spawn(move || {
                        serve_one(conn, &s.0, &s.1, &s.2, &a);
                        a.serving.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    approvals.serving.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .map_err(|source| Error::Spawn {
            what: "the approval thread".into(),
            source,
        })?;
    Ok(())
}

/// Reads one request line of at most [`approve::MAX_LINE`] bytes within [`REQUEST_TIME`]
/// in all (a sender of a byte a second is cut off all the same).
pub(crate) fn read_request(
    conn: &mut UnixStream,
    within: Duration,
) -> std::result::Result<Request, String> {
    let until = Instant::now() + within;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the request did not come in time".into());
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match conn.read(&mut chunk) {
            Ok(0) => return Request::parse(&buf),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err("the request did not come in time".into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            if end + 1 != buf.len() {
                return Err("more than one line".into());
            }
            return Request::parse(&buf);
        }
        if buf.len() > approve::MAX_LINE {
            return Err(format!("longer than {} bytes", approve::MAX_LINE));
        }
    }
}

fn send_answer(conn: &mut UnixStream, answer: &Answer) {
    let _ = conn.set_write_timeout(Some(REQUEST_TIME));
    let _ = conn.write_all(answer.line().as_bytes());
}

/// Whether the peer may ask: root, or the daemon's own user.
pub(crate) fn peer_allowed(conn: &UnixStream) -> std::result::Result<(), String> {
    match crate::os::sys::peer_uid(conn) {
        Ok(0) => Ok(()),
        Ok(uid) if uid == crate::os::sys::euid() => Ok(()),
        Ok(uid) => Err(format!("user {uid} may not ask")),
        Err(e) => Err(format!("its credentials cannot be read: {e}")),
    }
}

fn serve_one(mut conn: UnixStream, cfg: &Config, api: &BotApi, host: &str, a: &Approvals) {
    if let Err(why) = peer_allowed(&conn) {
        log::warn!("refusing a connection to the approval socket: {why}");
        send_answer(&mut conn, &Answer::Deny(why));
        return;
    }
    let req = match read_request(&mut conn, REQUEST_TIME) {
        Ok(r) => r,
        Err(why) => {
            log::warn!("refusing a request on the approval socket: {why}");
            send_answer(&mut conn, &Answer::Deny(format!("bad request: {why}")));
            return;
        }
    };
    ask(&mut conn, &req, cfg, api, host, a);
}

/// Whether the client at the other end of `conn` went away (its login ended).
fn hung_up(conn: &UnixStream) -> bool {
    if conn.set_nonblocking(true).is_err() {
        return false;
    }
    // The client sends nothing after its request: a byte read here is junk, and 0 is the
    // end of the connection.
    let mut b = [0u8; 1];
    let gone = match (&*conn).read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = conn.set_nonblocking(false);
    gone
}

/// Asks the allowed users about `req`, waits for the outcome, answers the client at once,
/// then edits the questions to the outcome (the login does not wait for the edits).
fn ask(
    conn: &mut UnixStream,
    req: &Request,
    cfg: &Config,
    api: &BotApi,
    host: &str,
    a: &Approvals,
) {
    let source = req.rhost.as_deref().unwrap_or("");
    let Some(id) = a.open(source) else {
        log::warn!(
            "{} refused: {MAX_PER_SOURCE} logins from there wait for approval already",
            req.question(host)
        );
        send_answer(
            conn,
            &Answer::Deny(format!(
                "{MAX_PER_SOURCE} logins from this source wait for approval already"
            )),
        );
        return;
    };
    let until = Instant::now() + Duration::from_secs(cfg.approve.timeout);
    let question = req.question(host);
    let keyboard = approve::keyboard(&id);
    let mut sent: Vec<(ChatId, MessageId)> = Vec::new();
    for &user in &cfg.telegram.allowed_users {
        let body = serde_json::json!({
            "chat_id": user,
            "text": question,
            "reply_markup": keyboard,
        });
        let left = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(15));
        match api.call("sendMessage", &body, left.max(Duration::from_secs(1))) {
            Ok(answer) => match answer.result::<serde_json::Value>() {
                Ok(m) => sent.push((
                    user.chat(),
                    MessageId(m["message_id"].as_i64().unwrap_or(0)),
                )),
                Err(e) => log::warn!("the login question to {user}: {e}"),
            },
            Err(e) => log::warn!("could not ask {user} about a login: {e}"),
        }
    }
    if sent.is_empty() {
        a.lock().remove(&id);
        log::warn!("{question} refused: no allowed user could be asked");
        send_answer(
            conn,
            &Answer::Deny("no allowed user could be asked (Telegram cannot be reached)".into()),
        );
        return;
    }
    log::info!("asked about a login ({id}): {question}");
    let outcome = a.wait(&id, until, &|| hung_up(conn));
    let answer = match &outcome {
        Outcome::Allowed { by, .. } => Answer::Allow(format!("allowed by {by}")),
        Outcome::Denied { by } => Answer::Deny(format!("denied by {by}")),
        Outcome::Expired => Answer::Deny(format!(
            "no answer within {} s (TGKNOCK_APPROVE_TIMEOUT)",
            cfg.approve.timeout
        )),
        Outcome::Abandoned => Answer::Deny("the login went away".into()),
    };
    send_answer(conn, &answer);
    let now = crate::os::clock::now();
    let text = req.outcome(host, &outcome, now);
    log::info!("{text}");
    for (chat, message) in sent {
        if let Err(e) = api.edit_message(chat, message, &text, None) {
            log::info!("could not edit the login question in chat {chat}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_request_is_read_whole_or_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"tgknock-approve 1 user=ada rhost=203.0.113.7\n")
            .unwrap();
        let r = read_request(&mut b, Duration::from_secs(5)).unwrap();
        assert_eq!(r.user, "ada");
        // In pieces.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || read_request(&mut b, Duration::from_secs(5)));
        for piece in ["tgknock-ap", "prove 1 us", "er=ada\n"] {
            a.write_all(piece.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(t.join().unwrap().unwrap().user, "ada");
    }

    #[test]
    fn hostile_peers_are_cut_off() {
        // Oversize, without a newline: refused once past the limit, not read forever.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || read_request(&mut b, Duration::from_secs(5)));
        let _ = a.write_all(&vec![b'a'; 4096]);
        let e = t.join().unwrap().unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        // No newline, then the end: refused.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"tgknock-approve 1 user=ada").unwrap();
        drop(a);
        assert!(
            read_request(&mut b, Duration::from_secs(5))
                .unwrap_err()
                .contains("no newline")
        );
        // Two lines: one request per connection.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"tgknock-approve 1 user=ada\ntgknock-approve 1 user=bob\n")
            .unwrap();
        assert!(
            read_request(&mut b, Duration::from_secs(5))
                .unwrap_err()
                .contains("one line")
        );
        // Slow loris: a byte now and then never ends the wait for good.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            for _ in 0..40 {
                if a.write_all(b"t").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        let e = read_request(&mut b, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("in time"), "{e}");
        writer.join().unwrap();
        // Silence.
        let (_a, mut b) = UnixStream::pair().unwrap();
        assert!(
            read_request(&mut b, Duration::from_millis(100))
                .unwrap_err()
                .contains("in time")
        );
        // NULs.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"tgknock-approve 1 user=a\0a\n").unwrap();
        assert!(read_request(&mut b, Duration::from_secs(5)).is_err());
    }

    #[test]
    fn the_peer_is_known_by_its_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        // This test's own process: the daemon's own user, so allowed.
        assert_eq!(
            crate::os::sys::peer_uid(&a).unwrap(),
            crate::os::sys::euid()
        );
        assert!(peer_allowed(&a).is_ok());
    }

    #[test]
    fn the_first_press_decides_and_later_ones_change_nothing() {
        let a = Approvals::new();
        let id = a.open("203.0.113.7").unwrap();
        let other = a.open("203.0.113.8").unwrap();
        assert_ne!(id, other);
        assert!(a.decide(&id, Outcome::Denied { by: "Ada".into() }));
        assert!(!a.decide(
            &id,
            Outcome::Allowed {
                by: "Bob".into(),
                at: 1
            }
        ));
        assert_eq!(
            a.wait(&id, Instant::now() + Duration::from_secs(5), &|| false),
            Outcome::Denied { by: "Ada".into() }
        );
        // Taken out once decided: a late press finds nothing.
        assert!(!a.decide(
            &id,
            Outcome::Allowed {
                by: "Bob".into(),
                at: 1
            }
        ));
        assert_eq!(a.wait(&other, Instant::now(), &|| false), Outcome::Expired);
        assert!(!a.decide(
            &other,
            Outcome::Allowed {
                by: "Bob".into(),
                at: 1
            }
        ));
        // Another daemon's ids are others.
        assert_ne!(Approvals::new().open(""), Approvals::new().open(""));
    }

    #[test]
    fn a_wait_wakes_on_a_decision() {
        let a = Arc::new(Approvals::new());
        let id = a.open("203.0.113.7").unwrap();
        let (a2, id2) = (Arc::clone(&a), id.clone());
        let t = std::thread::spawn(move || {
            a2.wait(&id2, Instant::now() + Duration::from_secs(60), &|| false)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(a.decide(
            &id,
            Outcome::Allowed {
                by: "Ada".into(),
                at: 5
            }
        ));
        assert_eq!(
            t.join().unwrap(),
            Outcome::Allowed {
                by: "Ada".into(),
                at: 5
            }
        );
    }

    /// Review: one who holds a stolen key and logs in again and again held every slot for
    /// the whole timeout and sent the owners question after question. Now at most
    /// MAX_PER_SOURCE wait per source, and a question whose login went away ends at once.
    #[test]
    fn logins_from_one_source_wait_at_most_two_at_once() {
        let a = Approvals::new();
        let first = a.open("203.0.113.7").expect("the first");
        assert!(a.open("203.0.113.7").is_some(), "the second");
        assert_eq!(a.open("203.0.113.7"), None, "a third from the same source");
        assert!(a.open("198.51.100.1").is_some(), "another source is asked");
        assert!(a.decide(&first, Outcome::Denied { by: "Ada".into() }));
        assert_eq!(
            a.wait(&first, Instant::now() + Duration::from_secs(5), &|| false),
            Outcome::Denied { by: "Ada".into() }
        );
        assert!(
            a.open("203.0.113.7").is_some(),
            "a slot again once one ended"
        );
    }

    #[test]
    fn a_login_that_went_away_is_abandoned_at_once() {
        let a = Approvals::new();
        let id = a.open("203.0.113.7").unwrap();
        let started = Instant::now();
        let far = started + Duration::from_secs(600);
        assert_eq!(a.wait(&id, far, &|| true), Outcome::Abandoned);
        assert!(
            !a.decide(&id, Outcome::Denied { by: "Ada".into() }),
            "taken out"
        );
        // A decision that came first stands even when the login is gone by then.
        let id = a.open("203.0.113.7").unwrap();
        assert!(a.decide(&id, Outcome::Denied { by: "Ada".into() }));
        assert_eq!(
            a.wait(&id, far, &|| true),
            Outcome::Denied { by: "Ada".into() }
        );
        // A client that hangs up is seen as gone; one that waits is not.
        let (server, client) = UnixStream::pair().unwrap();
        assert!(!hung_up(&server), "a client waiting for its answer");
        drop(client);
        assert!(hung_up(&server), "a client that hung up");
    }
}
