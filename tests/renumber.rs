//! After a week without updates Telegram numbers the next update afresh, possibly far
//! below the offset the bot confirmed (the Bot API's `Update.update_id`). The fake does
//! it ([`FakeApi::renumber`]) the way Telegram did in go-telegram-bot-api issue #156: a
//! client asking with the old, higher offset gets the new updates anyway, over and over.
//! An update below the offset that is newer than everything carried out is the new
//! numbering and is carried out, in a running daemon and after a restart; a true repeat
//! of one carried out (same id, same date) never is, and neither is a press answered
//! before.

use crate::support::{Env, OWNER, wait_for};

/// A week and a day: long enough for Telegram to number afresh.
const QUIET: i64 = 8 * 86_400;
/// Where the new numbering starts: far below the fake's first ids (500,000,001 on).
const BASE: i64 = 1_000;
const STRANGER: i64 = 222_222_222;
const GROUP: i64 = -1_001_234_567_890;

fn open_everywhere(env: &Env, gate: &str) -> bool {
    !env.drops(4, gate) && !env.drops(6, gate)
}

fn closed_everywhere(env: &Env, gate: &str) -> bool {
    env.drops(4, gate) && env.drops(6, gate)
}

/// The owner says `text` and the `n`th reply comes; returns the update id and the reply.
fn ask(env: &Env, text: &str, n: usize) -> (i64, String) {
    let id = env.api.say(OWNER, text);
    (id, env.api.wait_nth_reply(OWNER, n, 30))
}

/// A week passes without updates: Telegram's clock moves on, and it numbers afresh.
fn quiet_week(env: &Env) {
    env.api.set_clock_offset(QUIET);
    env.api.renumber(BASE);
}

fn offset(env: &Env) -> Option<i64> {
    env.state()["offset"].as_i64()
}

/// The gate was used once, then not for a week: the owner's `/open` is heard.
#[test]
fn the_owner_is_heard_after_a_quiet_week_in_a_running_daemon() {
    let env = Env::new();
    let d = env.start();
    let (_, r) = ask(&env, "/open 10m", 1);
    assert!(r.starts_with("ssh (22/tcp) open"), "{r}");
    let (close, r) = ask(&env, "/close", 2);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    assert_eq!(offset(&env), Some(close + 1));
    quiet_week(&env);
    let id = env.api.say(OWNER, "/open 10m");
    assert!(id < close, "the fake numbers afresh, below the offset");
    let r = env.api.wait_nth_reply(OWNER, 3, 30);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(open_everywhere(&env, "ssh"), "{}", env.rules(4));
    // The new numbering is followed from then on, and saved.
    let (next, r) = ask(&env, "/close", 4);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    assert!(closed_everywhere(&env, "ssh"));
    wait_for(20, "the new offset saved", || {
        (offset(&env) == Some(next + 1)).then_some(())
    });
    let out = d.output();
    assert!(!out.contains("handled before"), "{out}");
    assert!(out.contains("numbers updates afresh"), "{out}");
    d.check_secret();
}

/// The old, higher offset is on disk when the renumbered `/open` comes.
#[test]
fn the_owner_is_heard_after_a_quiet_week_and_a_restart() {
    let env = Env::new();
    let mut d = env.start();
    ask(&env, "/open 10m", 1);
    let (close, _) = ask(&env, "/close", 2);
    d.kill9();
    assert_eq!(offset(&env), Some(close + 1));
    quiet_week(&env);
    let id = env.api.say(OWNER, "/open 10m");
    assert!(id < close);
    let d2 = env.start();
    let r = env.api.wait_nth_reply(OWNER, 3, 30);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(open_everywhere(&env, "ssh"));
    wait_for(20, "the new offset saved", || {
        (offset(&env) == Some(id + 1)).then_some(())
    });
    let (_, r) = ask(&env, "/status", 4);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    d2.check_secret();
}

/// A state file written before the newest date was saved loads, and the renumbered
/// `/open` is carried out.
#[test]
fn an_old_state_file_loads_and_the_owner_is_heard_after_a_quiet_week() {
    let env = Env::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    std::fs::write(
        env.state_dir().join("state.json"),
        "{\n  \"version\": 1,\n  \"offset\": 900000000,\n  \"openings\": {}\n}\n",
    )
    .unwrap();
    quiet_week(&env);
    env.api.say(OWNER, "/open 10m");
    let d = env.start();
    let r = env.api.wait_nth_reply(OWNER, 1, 30);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(open_everywhere(&env, "ssh"));
    d.check_secret();
}

/// An update carried out, sent again as it was (same id, same date) below the offset,
/// is not carried out again: in the daemon that carried it out, after a restart, and
/// after a renumbering.
#[test]
fn a_true_repeat_below_the_offset_is_never_carried_out_twice() {
    let env = Env::new();
    let mut d = env.start();
    let (open, _) = ask(&env, "/open", 1);
    let (_, r) = ask(&env, "/close", 2);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    let mut n = 2;
    env.api.replay(&[open]);
    still_closed(&env, &mut n, "replayed to the running daemon");
    confirmed(&env);
    d.kill9();
    let mut d = env.start();
    env.api.replay(&[open]);
    still_closed(&env, &mut n, "replayed after a restart");
    // The same after a renumbering: the new numbering's /open is carried out once.
    quiet_week(&env);
    n += 1;
    let (low, r) = ask(&env, "/open", n);
    assert!(low < open);
    assert!(r.starts_with("ssh (22/tcp) open"), "{r}");
    n += 1;
    let (_, r) = ask(&env, "/close", n);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    env.api.replay(&[low]);
    still_closed(&env, &mut n, "the new numbering's /open replayed");
    // The old numbering's /open is above the new offset: by its date it is a week old,
    // and refused as stale.
    env.api.replay(&[open]);
    n += 1;
    let r = env.api.wait_nth_reply(OWNER, n, 30);
    assert!(
        r.starts_with("Not executed: this command was sent 8 d"),
        "{r}"
    );
    still_closed(&env, &mut n, "the old numbering's /open replayed");
    confirmed(&env);
    d.kill9();
    let d = env.start();
    env.api.replay(&[low]);
    still_closed(
        &env,
        &mut n,
        "the new numbering's /open replayed after a restart",
    );
    // And the new numbering goes on.
    n += 1;
    let (_, r) = ask(&env, "/open", n);
    assert!(r.starts_with("ssh (22/tcp) open"), "{r}");
    d.check_secret();
}

/// Waits until a poll confirmed every update queued: the offset past the last one that
/// was carried out is saved by then (a kill before it would have it carried out again).
fn confirmed(env: &Env) {
    wait_for(30, "every update confirmed", || {
        (env.api.pending() == 0).then_some(())
    });
}

/// After a replay is served, the owner's `/status` (reply `n`) finds ssh closed.
fn still_closed(env: &Env, n: &mut usize, why: &str) {
    env.api.wait_faults_served(30);
    *n += 1;
    let (_, r) = ask(env, "/status", *n);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{why}: {r}");
    assert!(closed_everywhere(env, "ssh"), "{why}");
    assert!(env.openings().is_empty(), "{why}: {}", env.state());
}

/// A press has no date of its own: below the offset it is neither skipped for good (the
/// owner's first press after a quiet week is carried out) nor carried out twice (Telegram
/// refuses to answer a press twice, and a press is carried out only once answered).
#[test]
fn a_press_after_a_quiet_week_is_carried_out_once() {
    let env = Env::new();
    let d = env.start();
    env.api.say(OWNER, "/status");
    env.api.wait_reply(OWNER, "ssh (22/tcp)", 30);
    let (panel, _) = env.api.keyboard_of(OWNER, "ssh (22/tcp)");
    let before = wait_for(20, "the offset saved", || offset(&env));
    quiet_week(&env);
    let q = env.api.press(OWNER, OWNER, panel, "/open ssh");
    let press: i64 = q.trim_start_matches('q').parse().unwrap();
    assert!(press < before);
    env.api
        .wait_edit(OWNER, "ssh (22/tcp) open to everyone", 30);
    assert!(open_everywhere(&env, "ssh"));
    let (close, r) = ask(&env, "/close", 2);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    // Both sent again: the press is answered no more, the /close is dated.
    env.api.replay(&[press, close]);
    env.api.wait_faults_served(30);
    let (_, r) = ask(&env, "/status", 3);
    assert!(
        r.starts_with("ssh (22/tcp) closed"),
        "the press was replayed: {r}"
    );
    assert!(closed_everywhere(&env, "ssh"));
    assert_eq!(
        env.api.answers().iter().filter(|(id, _)| *id == q).count(),
        2,
        "the replayed press is asked about once more, and refused"
    );
    assert_eq!(env.api.sent_to(OWNER).len(), 3, "{:?}", env.api.sent());
    d.check_secret();
}

/// Presses have no date: a queue of strangers' presses (more than a batch) in the new
/// numbering does not keep the owner's `/open` behind it from being heard.
#[test]
fn strangers_presses_after_a_quiet_week_do_not_make_it_deaf() {
    let env = Env::new();
    let d = env.start();
    let (close, _) = ask(&env, "/close", 1);
    quiet_week(&env);
    for k in 0..150 {
        env.api.press(STRANGER + k, GROUP, 1, "/open ssh");
    }
    let id = env.api.say(OWNER, "/open 10m");
    assert!(id < close);
    let r = env.api.wait_nth_reply(OWNER, 2, 60);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(open_everywhere(&env, "ssh"));
    let out = d.output();
    assert!(!out.contains("gave no usable update_id"), "{out}");
    d.check_secret();
}
