//! Inline buttons through the fake Bot API: the keyboards replies carry, a press by the
//! owner (answered, then carried out, then its message edited to the verified state), by a
//! stranger, with forged data, one Telegram no longer takes an answer to, and one replayed
//! after a crash.

use std::time::Duration;

use crate::support::api::TOO_OLD;
use crate::support::{Env, OWNER, wait_for};

const STRANGER: i64 = 222_222_222;
const GROUP: i64 = -1_001_234_567_890;
const GATES: &str = "ssh=22/tcp web=80/tcp,443/tcp";

type Rows = Vec<Vec<(String, String)>>;

fn rows(spec: &[&[(&str, &str)]]) -> Rows {
    spec.iter()
        .map(|r| {
            r.iter()
                .map(|(t, d)| (t.to_string(), d.to_string()))
                .collect()
        })
        .collect()
}

fn closed_everywhere(env: &Env, gate: &str) -> bool {
    env.drops(4, gate) && env.drops(6, gate)
}

fn open_everywhere(env: &Env, gate: &str) -> bool {
    !env.drops(4, gate) && !env.drops(6, gate)
}

/// The owner's `/status` in `chat`: the id of the reply, and its keyboard.
fn status_panel(env: &Env, chat: i64) -> (i64, Rows) {
    if chat == OWNER {
        env.api.say(OWNER, "/status");
    } else {
        env.api
            .push_message_at(OWNER, chat, "supergroup", "/status", env.api.now());
    }
    env.api.wait_reply(chat, "ssh (22/tcp)", 20);
    env.api.keyboard_of(chat, "ssh (22/tcp)")
}

#[test]
fn the_owner_opens_and_closes_with_one_tap() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    let d = env.start();
    let (panel, keyboard) = status_panel(&env, OWNER);
    assert_eq!(
        keyboard,
        rows(&[
            &[
                ("Open ssh · 15 min", "/open ssh"),
                ("Open web · 15 min", "/open web")
            ],
            &[("Refresh", "/status")],
        ])
    );

    let q = env.api.press(OWNER, OWNER, panel, "/open ssh");
    let (edited, text) = env
        .api
        .wait_edit(OWNER, "ssh (22/tcp) open to everyone until", 20);
    assert_eq!(edited, panel, "the keyboard's own message is edited");
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains(" UTC, 15 min")),
        "{text}"
    );
    assert!(text.contains("\nweb (80/tcp,443/tcp) closed\n"), "{text}");
    assert!(text.contains("IPv4: iptables chain TGKNOCK with"), "{text}");
    assert!(open_everywhere(&env, "ssh"), "{}", env.rules(4));
    assert!(closed_everywhere(&env, "web"));
    assert_eq!(
        env.openings()["ssh"][0]["by"],
        format!("telegram:{OWNER}"),
        "a press opens as the presser"
    );
    // Answered first (no spinner; and only an answered press is carried out), then edited.
    assert_eq!(env.api.answers(), vec![(q, None)]);
    let answered = env.api.requests("answerCallbackQuery")[0].at;
    let edit = env.api.requests("editMessageText")[0].at;
    assert!(answered < edit);
    let (_, keyboard) = env.api.keyboard_of(OWNER, "ssh (22/tcp) open");
    assert_eq!(
        keyboard,
        rows(&[
            &[
                ("Close ssh", "/close ssh"),
                ("Open web · 15 min", "/open web")
            ],
            &[("Refresh", "/status")],
        ])
    );

    env.api.press(OWNER, OWNER, panel, "/close ssh");
    let (_, text) = env.api.wait_edit(OWNER, "ssh (22/tcp) closed", 20);
    assert!(text.contains("web (80/tcp,443/tcp) closed"), "{text}");
    assert!(closed_everywhere(&env, "ssh"));
    assert!(env.openings().is_empty(), "{}", env.state());

    env.api.press(OWNER, OWNER, panel, "/status");
    wait_for(20, "three edits", || {
        (env.api.edits().len() == 3).then_some(())
    });
    assert!(env.api.edits()[2].2.starts_with("ssh (22/tcp) closed"));
    // Presses edit; they send nothing new.
    assert_eq!(env.api.sent_to(OWNER).len(), 1, "{:?}", env.api.sent());
    let last = env.api.requests("getUpdates").pop().unwrap();
    assert!(
        last.body["allowed_updates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "callback_query"),
        "{}",
        last.body
    );
    d.check_secret();
}

#[test]
fn replies_to_commands_carry_the_keyboard_their_state_calls_for() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    env.set("TGKNOCK_OPEN_FOR", "30m");
    env.set("TGKNOCK_ACTION_BACKUP", "/bin/true");
    let _d = env.start();
    env.api.say(OWNER, "/open web");
    env.api.wait_reply(OWNER, "web (80/tcp,443/tcp) open", 20);
    let (_, k) = env.api.keyboard_of(OWNER, "web (80/tcp,443/tcp) open");
    assert_eq!(
        k,
        rows(&[
            &[
                ("Open ssh · 30 min", "/open ssh"),
                ("Close web", "/close web")
            ],
            &[("Refresh", "/status")],
        ])
    );
    env.api.say(OWNER, "/close");
    env.api.wait_reply(OWNER, "web (80/tcp,443/tcp) closed", 20);
    let (_, k) = env.api.keyboard_of(OWNER, "web (80/tcp,443/tcp) closed");
    assert_eq!(k[0][1], ("Open web · 30 min".into(), "/open web".into()));
    for cmd in ["/help", "/start"] {
        env.api.say(OWNER, cmd);
    }
    wait_for(20, "two usages", || {
        (env.api
            .sent_to(OWNER)
            .iter()
            .filter(|t| t.contains("/open [GATE]"))
            .count()
            == 2)
            .then_some(())
    });
    let (_, k) = env.api.keyboard_of(OWNER, "/open [GATE]");
    assert_eq!(
        k,
        rows(&[
            &[
                ("Open ssh · 30 min", "/open ssh"),
                ("Open web · 30 min", "/open web")
            ],
            &[("Run backup", "/run backup")],
            &[("Refresh", "/status")],
        ])
    );
    let usage = env.api.wait_reply(OWNER, "/open [GATE]", 5);
    assert!(usage.contains("Actions (/run NAME): backup"), "{usage}");
    // A refusal carries no keyboard.
    env.api.say(OWNER, "/open 3d");
    env.api.wait_reply(OWNER, "Refused:", 20);
    let (_, k) = env.api.keyboard_of(OWNER, "Refused:");
    assert!(k.is_empty(), "{k:?}");
}

/// A flood of strangers' presses ahead of the owner's `/open` costs no request before it
/// is carried out: no `answerCallbackQuery` for a stranger (it was one blocking round
/// trip each: 1,300 presses delayed an `/open` by two minutes, then it was stale). The
/// requests are counted, not timed.
#[test]
fn strangers_presses_cost_no_request_before_the_owners_open() {
    const PRESSES: i64 = 1_000;
    let mut env = Env::new();
    env.set("RUST_LOG", "info");
    env.set("TGKNOCK_MAX_AGE", "10m");
    for k in 0..PRESSES {
        env.api.press(STRANGER + k, GROUP, 1, "/open ssh");
    }
    env.api.say(OWNER, "/open");
    let d = env.spawn();
    let r = env.api.wait_reply(OWNER, "ssh (22/tcp)", 180);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    let requests = env.api.all_requests();
    let reply = requests
        .iter()
        .position(|q| q.method == "sendMessage" && q.body["chat_id"].as_i64() == Some(OWNER))
        .unwrap();
    let before: Vec<&str> = requests[..reply]
        .iter()
        .map(|q| q.method.as_str())
        .filter(|m| *m != "getUpdates" && *m != "getMe")
        .collect();
    assert!(
        before.is_empty(),
        "{} requests before the owner's /open was carried out, e.g. {:?}",
        before.len(),
        before.first()
    );
    assert!(open_everywhere(&env, "ssh"));
    // Nor later: a stranger's spinner stops by itself.
    let summary = env
        .api
        .wait_reply(OWNER, "(not in TGKNOCK_ALLOWED_USERS)", 90);
    assert!(summary.starts_with("Ignored "), "{summary}");
    assert!(
        env.api.answers().is_empty(),
        "{:?}",
        env.api.answers().len()
    );
    assert!(env.api.sent_to(GROUP).is_empty() && env.api.edits().is_empty());
    d.check_secret();
}

#[test]
fn a_strangers_press_costs_no_request_and_changes_nothing() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    let _d = env.start();
    let (panel, _) = status_panel(&env, GROUP);
    let restores = env.restores();
    let q = env.api.press(STRANGER, GROUP, panel, "/open ssh");
    // The owners hear of it in the summary of strangers; nothing else happens.
    env.api
        .wait_reply(OWNER, "(not in TGKNOCK_ALLOWED_USERS)", 20);
    assert!(
        env.api.answers().is_empty(),
        "a stranger's press costs no request: {:?} ({q})",
        env.api.answers()
    );
    assert!(env.api.sent_to(STRANGER).is_empty());
    assert!(env.api.edits().is_empty());
    assert_eq!(env.restores(), restores);
    assert!(closed_everywhere(&env, "ssh"));
    let summary = env
        .api
        .wait_reply(OWNER, "(not in TGKNOCK_ALLOWED_USERS)", 1);
    assert!(summary.contains("222222222 (@u222222222) ×1"), "{summary}");
    // The owner's press on the same keyboard works.
    env.api.press(OWNER, GROUP, panel, "/open ssh");
    env.api
        .wait_edit(GROUP, "ssh (22/tcp) open to everyone", 20);
    assert!(open_everywhere(&env, "ssh"));
}

#[test]
fn forged_and_stale_button_data_is_refused() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    let d = env.start();
    let (panel, _) = status_panel(&env, OWNER);
    let restores = env.restores();
    let long = format!("/open ssh {}", "1".repeat(60));
    let forged = [
        "rm -rf /",
        "open:ssh",
        "enable ssh",
        &long,
        "/open ssh\n/close",
    ];
    let mut queries = Vec::new();
    for data in forged {
        queries.push(env.api.press(OWNER, OWNER, panel, data));
    }
    // Commands of a button that no longer matches the config (a gate since removed), or
    // that no button of tgknock's carries: refused with the reason, as typed.
    let gone = env.api.press(OWNER, OWNER, panel, "/open mosh");
    let refused = env
        .api
        .wait_reply(OWNER, "'mosh' is not a gate (gates: ssh, web)", 20);
    assert!(refused.contains("/open [GATE]"), "{refused}");
    let other_bot = env.api.press(OWNER, OWNER, panel, "/open@other_bot ssh");
    let unlimited = env.api.press(OWNER, OWNER, panel, "/open ssh 0");
    env.api
        .wait_reply(OWNER, "cannot be opened without an end", 20);
    wait_for(20, "every press answered", || {
        (env.api.answers().len() == forged.len() + 3).then_some(())
    });
    let answers = env.api.answers();
    for (q, (id, text)) in queries.iter().zip(&answers) {
        assert_eq!(q, id);
        assert_eq!(
            text.as_deref(),
            Some("This button is not one of tgknock's.")
        );
    }
    let rest: Vec<&(String, Option<String>)> = answers[forged.len()..].iter().collect();
    for (q, (id, text)) in [&gone, &other_bot, &unlimited].iter().zip(rest) {
        assert_eq!(*q, id);
        assert_eq!(*text, None);
    }
    d.wait_log(
        "refusing a press from 111111111 (@u111111111): its data is longer than 64 bytes",
        5,
    );
    d.wait_log("its data is not a command", 5);
    assert_eq!(env.restores(), restores, "{}", env.calls());
    assert!(env.api.edits().is_empty(), "{:?}", env.api.edits());
    assert!(closed_everywhere(&env, "ssh"));
    assert!(env.openings().is_empty());
}

#[test]
fn a_press_telegram_will_not_answer_is_not_carried_out() {
    let env = Env::new();
    let d = env.start();
    let (panel, _) = status_panel(&env, OWNER);
    let restores = env.restores();
    let q = env.api.press_too_old(OWNER, OWNER, panel, "/open ssh");
    d.wait_log("not carrying out \"/open ssh\" pressed by 111111111", 20);
    d.wait_log(TOO_OLD, 1);
    // A later press works, so the stale one was taken off the queue, not stuck in it.
    let fresh = env.api.press(OWNER, OWNER, panel, "/status");
    env.api.wait_edit(OWNER, "ssh (22/tcp) closed", 20);
    assert_eq!(env.api.answers(), vec![(q, None), (fresh, None)]);
    assert_eq!(
        env.restores(),
        restores,
        "the stale press changed the rules"
    );
    assert!(closed_everywhere(&env, "ssh"));
    assert!(env.openings().is_empty());
}

#[test]
fn a_press_carried_out_is_not_carried_out_again_after_a_crash() {
    let env = Env::new();
    let mut d = env.start();
    let (panel, _) = status_panel(&env, OWNER);
    // The edit hangs: the daemon is between the change and its next poll when it dies.
    env.api.hang("editMessageText", Duration::from_secs(60));
    let q = env.api.press(OWNER, OWNER, panel, "/open ssh");
    let press = env.api.requests("getUpdates").len();
    wait_for(20, "the press carried out", || {
        env.openings().contains_key("ssh").then_some(())
    });
    wait_for(20, "the edit under way", || {
        (!env.api.requests("editMessageText").is_empty()).then_some(())
    });
    let offset = env.state()["offset"].as_i64().unwrap();
    d.kill9();
    // The fake never saw an offset past the press: it sends it again, as Telegram would.
    let id = offset - 1;
    assert!(env.api.requests("getUpdates").len() >= press);
    env.api.push_update_with_id(
        id,
        serde_json::json!({"callback_query": {
            "id": q,
            "from": {"id": OWNER, "is_bot": false, "first_name": "Owner"},
            "message": {"message_id": panel, "chat": {"id": OWNER, "type": "private"}, "date": 0},
            "data": "/close ssh",
        }}),
    );
    let _d = env.start();
    env.api.say(OWNER, "/status");
    env.api
        .wait_reply(OWNER, "ssh (22/tcp) open to everyone", 20);
    assert_eq!(
        env.api.answers().len(),
        1,
        "the replayed press was answered again: {:?}",
        env.api.answers()
    );
    assert!(open_everywhere(&env, "ssh"));
}
