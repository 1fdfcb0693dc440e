//! The real daemon driven by chat through the fake Bot API, with the recording fake iptables.

use serde_json::json;

use crate::support::{BOT, Env, OWNER, now, wait_for};

const STRANGER: i64 = 222_222_222;
const GROUP: i64 = -1_001_234_567_890;
const GATES: &str = "ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp";

/// Sends `text` as the owner and waits for the owner's `n`th reply overall.
fn ask(env: &Env, text: &str, n: usize) -> String {
    env.api.say(OWNER, text);
    env.api.wait_nth_reply(OWNER, n, 20)
}

/// Seconds left on the first opening of `gate` in the saved state.
fn left(env: &Env, gate: &str) -> i64 {
    env.openings()[gate][0]["until"].as_i64().expect("an until") - now()
}

fn open_everywhere(env: &Env, gate: &str) -> bool {
    !env.drops(4, gate) && !env.drops(6, gate)
}

fn closed_everywhere(env: &Env, gate: &str) -> bool {
    env.drops(4, gate) && env.drops(6, gate)
}

#[test]
fn open_and_close_by_chat() {
    let env = Env::new();
    let d = env.spawn();
    d.wait_log("logged in as @tgknock_test_bot", 20);
    assert!(
        env.drops(4, "ssh") && env.drops(6, "ssh"),
        "closed at start:\n{}",
        env.rules(4)
    );
    env.api.say(OWNER, "/open");
    let reply = env.api.wait_reply(OWNER, "ssh (22/tcp)", 20);
    assert!(reply.contains("open to everyone until"), "{reply}");
    assert!(reply.ends_with("15 min"), "{reply}");
    assert!(
        !env.drops(4, "ssh") && !env.drops(6, "ssh"),
        "{}",
        env.rules(4)
    );
    env.api.say(OWNER, "/close");
    env.api.wait_reply(OWNER, "ssh (22/tcp) closed", 20);
    assert!(env.drops(4, "ssh") && env.drops(6, "ssh"));
    wait_for(10, "offset saved", || {
        env.state()["offset"].as_i64().filter(|o| *o > 0)
    });
}

#[test]
fn open_arguments_in_any_order_with_several_gates() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    let _d = env.start();
    for g in ["ssh", "web", "mosh"] {
        assert!(closed_everywhere(&env, g), "{g} closed at start");
    }

    let r = ask(&env, "/open web 30m", 1);
    assert!(
        r.starts_with("web (80/tcp,443/tcp) open to everyone until"),
        "{r}"
    );
    assert!(r.ends_with("30 min"), "{r}");
    assert!(open_everywhere(&env, "web"), "{}", env.rules(4));
    assert!(closed_everywhere(&env, "ssh") && closed_everywhere(&env, "mosh"));
    assert!((1740..=1800).contains(&left(&env, "web")));

    let r = ask(&env, "/open 2h mosh", 2);
    assert!(
        r.starts_with("mosh (60000:61000/udp) open to everyone"),
        "{r}"
    );
    assert!(r.ends_with("2 h"), "{r}");
    assert!(open_everywhere(&env, "mosh"));
    assert!((7140..=7200).contains(&left(&env, "mosh")));

    // A bare number means minutes; no gate means the first one.
    let r = ask(&env, "/open 45", 3);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(r.ends_with("45 min"), "{r}");
    assert!((2640..=2700).contains(&left(&env, "ssh")));

    // Mixed case, units combined, gate last.
    let r = ask(&env, "/OPEN 1h30m WEB", 4);
    assert!(r.starts_with("web (80/tcp,443/tcp) open"), "{r}");
    assert!(r.ends_with("1 h 30 min"), "{r}");
    assert!((5340..=5400).contains(&left(&env, "web")));
    assert_eq!(env.api.sent_to(OWNER).len(), 4);
}

#[test]
fn commands_addressed_to_this_bot_run_and_to_another_bot_are_ignored() {
    let env = Env::new();
    let _d = env.start();
    let restores = env.restores();
    env.api.say(OWNER, "/open@otherbot");
    env.api.say(OWNER, "/close@otherbot all");
    env.api.say(OWNER, "/status@other_bot");
    let r = ask(&env, &format!("/status@{BOT}"), 1);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    assert_eq!(
        env.restores(),
        restores,
        "another bot's commands changed rules"
    );
    assert!(closed_everywhere(&env, "ssh"));

    let r = ask(&env, &format!("/open@{BOT} 20m"), 2);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(r.ends_with("20 min"), "{r}");
    assert!(open_everywhere(&env, "ssh"));
    assert_eq!(env.api.sent_to(OWNER).len(), 2, "{:?}", env.api.sent());
}

#[test]
fn close_one_gate_or_all() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    let _d = env.start();
    ask(&env, "/open ssh", 1);
    ask(&env, "/open web", 2);
    ask(&env, "/open mosh", 3);
    assert!(open_everywhere(&env, "ssh") && open_everywhere(&env, "web"));

    let r = ask(&env, "/close web", 4);
    assert_eq!(r, "web (80/tcp,443/tcp) closed");
    assert!(closed_everywhere(&env, "web"));
    assert!(open_everywhere(&env, "ssh") && open_everywhere(&env, "mosh"));
    assert!(!env.openings().contains_key("web"));

    let r = ask(&env, "/close all", 5);
    for line in [
        "ssh (22/tcp) closed",
        "web (80/tcp,443/tcp) closed",
        "mosh (60000:61000/udp) closed",
    ] {
        assert!(r.contains(line), "{r}");
    }
    for g in ["ssh", "web", "mosh"] {
        assert!(closed_everywhere(&env, g), "{g}: {}", env.rules(4));
    }
    assert!(env.openings().is_empty(), "{}", env.state());

    ask(&env, "/open", 6);
    assert!(open_everywhere(&env, "ssh"));
    let r = ask(&env, "/close", 7);
    assert_eq!(r.lines().count(), 3, "{r}");
    assert!(closed_everywhere(&env, "ssh"));
}

#[test]
fn status_help_and_start() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    let _d = env.start();
    ask(&env, "/open web 10m", 1);
    let s = ask(&env, "/status", 2);
    assert!(s.contains("ssh (22/tcp) closed"), "{s}");
    assert!(
        s.contains("web (80/tcp,443/tcp) open to everyone until"),
        "{s}"
    );
    assert!(s.contains("mosh (60000:61000/udp) closed"), "{s}");
    assert!(s.contains("IPv4: iptables chain TGKNOCK with"), "{s}");
    assert!(s.contains("IPv6: iptables chain TGKNOCK with"), "{s}");
    for (i, cmd) in ["/help", "/start"].iter().enumerate() {
        let h = ask(&env, cmd, 3 + i);
        assert!(h.contains("/open [GATE]"), "{h}");
        assert!(h.contains("ssh (22/tcp) - the default"), "{h}");
        assert!(h.contains("web (80/tcp,443/tcp)"), "{h}");
        assert!(h.contains("mosh (60000:61000/udp)"), "{h}");
    }
    // The menu of commands was registered.
    wait_for(10, "setMyCommands", || {
        (!env.api.requests("setMyCommands").is_empty()).then_some(())
    });
}

#[test]
fn plain_text_enable_and_disable_ssh() {
    let env = Env::new();
    let _d = env.start();
    // Only a message that is exactly the phrase is a command.
    env.api.say(OWNER, "don't enable ssh");
    env.api.say(OWNER, "please enable ssh for me");
    let r = ask(&env, "Enable SSH!", 1);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(r.ends_with("15 min"), "{r}");
    assert!(open_everywhere(&env, "ssh"));
    let r = ask(&env, "disable ssh", 2);
    assert_eq!(r, "ssh (22/tcp) closed");
    assert!(closed_everywhere(&env, "ssh"));
    // Chatter is not a command.
    env.api.say(OWNER, "hello there, how is the board?");
    let r = ask(&env, "/status", 3);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
}

#[test]
fn group_chat_commands_from_the_owner_work() {
    let env = Env::new();
    let _d = env.start();
    let restores = env.restores();
    // A stranger in the same group changes nothing and gets no answer.
    env.api.push_message_at(
        STRANGER,
        GROUP,
        "supergroup",
        &format!("/open@{BOT}"),
        now(),
    );
    env.api
        .push_message_at(STRANGER, GROUP, "supergroup", "/open", now());
    // Unknown commands in a group are other bots' business: no usage there.
    env.api
        .push_message_at(OWNER, GROUP, "supergroup", "/weather", now());
    env.api.push_message_at(
        OWNER,
        GROUP,
        "supergroup",
        &format!("/open@{BOT} 5m"),
        now(),
    );
    let r = env.api.wait_nth_reply(GROUP, 1, 20);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(r.ends_with("5 min"), "{r}");
    assert!(open_everywhere(&env, "ssh"));
    assert_eq!(env.restores(), restores + 2, "one change, in v4 and v6");
    assert!(env.openings()["ssh"][0]["by"] == json!(format!("telegram:{OWNER}")));

    env.api
        .push_message_at(OWNER, GROUP, "group", "/close", now());
    let r = env.api.wait_nth_reply(GROUP, 2, 20);
    assert_eq!(r, "ssh (22/tcp) closed");
    assert!(closed_everywhere(&env, "ssh"));
    assert!(env.api.sent_to(STRANGER).is_empty());
    assert_eq!(env.api.sent_to(GROUP).len(), 2, "{:?}", env.api.sent());
}

#[test]
fn opening_to_one_ipv4_address() {
    let env = Env::new();
    let _d = env.start();
    let r = ask(&env, "/open 203.0.113.7 10m", 1);
    assert!(
        r.starts_with("ssh (22/tcp) open to 203.0.113.7 (IPv4 only) until"),
        "{r}"
    );
    let v4 = env.rules(4);
    let v6 = env.rules(6);
    // The RETURN carries the deadline the kernel keeps (`-m time --datestop …`).
    let ret = "-A TGKNOCK -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m time --datestop ";
    let lines: Vec<&str> = v4.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(ret) && l.ends_with("--comment tgknock-gate:ssh -j RETURN"));
    let drop = lines
        .iter()
        .position(|l| l.contains("tgknock-gate:ssh") && l.ends_with("-j DROP"));
    assert!(
        matches!((at, drop), (Some(a), Some(d)) if a < d),
        "RETURN for the address before the DROP:\n{v4}"
    );
    assert!(!v6.contains("203.0.113.7"), "{v6}");
    assert!(!v6.contains("-j RETURN") || !v6.contains("-s "), "{v6}");
    assert!(env.drops(6, "ssh"), "v6 stays closed:\n{v6}");
    assert_eq!(env.openings()["ssh"][0]["from"], "203.0.113.7");

    let s = ask(&env, "/status", 2);
    assert!(s.contains("open to 203.0.113.7 (IPv4 only)"), "{s}");
    assert!(!s.contains("MISMATCH"), "{s}");
}

#[test]
fn opening_to_one_ipv6_block() {
    let env = Env::new();
    let _d = env.start();
    let r = ask(&env, "/open 2001:db8:1::/48 ssh 90s", 1);
    assert!(
        r.starts_with("ssh (22/tcp) open to 2001:db8:1::/48 (IPv6 only) until"),
        "{r}"
    );
    assert!(r.ends_with("1 min 30 s"), "{r}");
    let v6 = env.rules(6);
    assert!(
        v6.lines().any(|l| l.starts_with(
            "-A TGKNOCK -s 2001:db8:1::/48 -p tcp -m tcp --dport 22 -m time --datestop "
        ) && l.ends_with(" -m comment --comment tgknock-gate:ssh -j RETURN")),
        "{v6}"
    );
    assert!(env.drops(6, "ssh"));
    let v4 = env.rules(4);
    assert!(!v4.contains("2001:db8"), "{v4}");
    assert!(!v4.lines().any(|l| l.contains("-s ")), "{v4}");
    assert!(env.drops(4, "ssh"));
}

#[test]
fn longer_than_max_open_for_is_refused() {
    let mut env = Env::new();
    env.set("TGKNOCK_MAX_OPEN_FOR", "1h");
    let _d = env.start();
    let restores = env.restores();
    let calls = env.calls();
    let r = ask(&env, "/open 2h", 1);
    assert!(r.starts_with("Refused"), "{r}");
    assert!(
        r.contains("1 h") && r.contains("TGKNOCK_MAX_OPEN_FOR"),
        "{r}"
    );
    let r = ask(&env, "/open 0", 2);
    assert!(r.starts_with("Refused") && r.contains("1 h"), "{r}");
    assert_eq!(env.restores(), restores);
    // Nothing but the daemon's regular reading of the rules (its check for other programs'
    // changes).
    let changes = |c: String| -> Vec<String> {
        c.lines()
            .filter(|l| !l.ends_with(" -S"))
            .map(String::from)
            .collect()
    };
    assert_eq!(changes(env.calls()), changes(calls), "no firewall change");
    assert!(closed_everywhere(&env, "ssh"));
    assert!(env.openings().is_empty());
    // At the limit is fine.
    let r = ask(&env, "/open 60", 3);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert!(r.ends_with("1 h"), "{r}");
}

#[test]
fn open_until_closed_is_refused_by_default() {
    let env = Env::new();
    let _d = env.start();
    let restores = env.restores();
    let r = ask(&env, "/open 0", 1);
    assert!(r.starts_with("Refused"), "{r}");
    assert!(r.contains("without an end") && r.contains("1 d"), "{r}");
    assert!(r.contains("TGKNOCK_MAX_OPEN_FOR"), "{r}");
    assert_eq!(env.restores(), restores);
    assert!(closed_everywhere(&env, "ssh"));
}

#[test]
fn open_until_closed_with_no_limit() {
    let mut env = Env::new();
    env.set("TGKNOCK_MAX_OPEN_FOR", "0");
    let _d = env.start();
    let r = ask(&env, "/open 0", 1);
    assert_eq!(r, "ssh (22/tcp) open to everyone until closed");
    assert!(open_everywhere(&env, "ssh"));
    assert!(
        env.openings()["ssh"][0]["until"].is_null(),
        "{}",
        env.state()
    );
    // A long one is fine too.
    let r = ask(&env, "/open 300d", 2);
    assert!(r.ends_with("300 d"), "{r}");
}

#[test]
fn unparseable_commands_get_the_usage() {
    let env = Env::new();
    let _d = env.start();
    let restores = env.restores();
    let bad = [
        "/open sssh",
        "/open 5x",
        "/open 256.1.1.1",
        "/open 0.0.0.0/0",
        "/open ssh 5m 1.2.3.4 extra",
        "/open -j ACCEPT",
        "/open $(reboot)",
        "/close nope",
        "/status now",
        "/frobnicate",
    ];
    for (i, text) in bad.iter().enumerate() {
        let r = ask(&env, text, i + 1);
        assert!(r.contains("/open [GATE]"), "{text:?} gave {r}");
        assert!(!r.starts_with("ssh (22/tcp)"), "{text:?} gave {r}");
    }
    let r = env.api.sent_to(OWNER)[0].clone();
    assert!(r.starts_with("'sssh' is not a gate"), "{r}");
    assert_eq!(env.restores(), restores, "no change for a bad command");
    assert!(closed_everywhere(&env, "ssh"));
    assert!(!env.calls().contains("reboot"));
}

#[test]
fn stale_commands_are_not_executed() {
    let mut env = Env::new();
    env.set("TGKNOCK_MAX_AGE", "30s");
    let _d = env.start();
    let restores = env.restores();
    env.api
        .push_message_at(OWNER, OWNER, "private", "/open", now() - 45);
    let r = env.api.wait_nth_reply(OWNER, 1, 20);
    assert!(r.starts_with("Not executed"), "{r}");
    assert!(r.contains("TGKNOCK_MAX_AGE") && r.contains("30 s"), "{r}");
    assert!(r.contains(" ago"), "{r}");
    assert_eq!(env.restores(), restores);
    assert!(closed_everywhere(&env, "ssh"));
    // A fresh one, within the age, is.
    env.api
        .push_message_at(OWNER, OWNER, "private", "/open", now() - 10);
    let r = env.api.wait_nth_reply(OWNER, 2, 20);
    assert!(r.starts_with("ssh (22/tcp) open"), "{r}");
}

#[test]
fn strangers_get_nothing_and_the_owner_a_summary() {
    let env = Env::new();
    let d = env.start();
    let restores = env.restores();
    env.api.say(STRANGER, "/open");
    env.api.say(STRANGER, "/open ssh 1d");
    env.api.say(STRANGER + 1, "enable ssh");
    env.api.say(STRANGER + 2, "/close");
    let summary = env.api.wait_reply(OWNER, "Ignored", 20);
    // However the four arrive (in one batch or several), the summary names the first.
    assert!(summary.starts_with("Ignored "), "{summary}");
    assert!(summary.contains(&STRANGER.to_string()), "{summary}");
    assert!(summary.contains("TGKNOCK_ALLOWED_USERS"), "{summary}");
    // The bot still serves the owner, and nothing was answered to or done for strangers.
    let r = ask(&env, "/status", 2);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    assert_eq!(
        env.restores(),
        restores,
        "a stranger's message touched the firewall"
    );
    assert!(closed_everywhere(&env, "ssh"));
    for s in [STRANGER, STRANGER + 1, STRANGER + 2] {
        assert!(env.api.sent_to(s).is_empty(), "{:?}", env.api.sent());
    }
    assert!(env.openings().is_empty());
    d.wait_log(&format!("stranger {STRANGER}"), 10);
}

#[test]
fn openings_expire() {
    let env = Env::new();
    let _d = env.start();
    // The reply is the state verified after the change: open, for now.
    let r = ask(&env, "/open 2s", 1);
    assert!(r.starts_with("ssh (22/tcp) open to everyone until"), "{r}");
    assert!(r.ends_with(" 2 s") || r.ends_with(" 1 s"), "{r}");
    wait_for(10, "the opening to expire", || {
        closed_everywhere(&env, "ssh").then_some(())
    });
    wait_for(5, "the expired opening to leave the state", || {
        env.openings().is_empty().then_some(())
    });
    // Nobody asked again: the expiry thread did it.
    assert_eq!(env.api.sent_to(OWNER).len(), 1);
    let s = ask(&env, "/status", 2);
    assert!(s.starts_with("ssh (22/tcp) closed"), "{s}");
}

#[test]
fn a_restarted_daemon_does_not_replay_and_keeps_openings() {
    let env = Env::new();
    let mut d = env.start();
    let id = env.api.say(OWNER, "/open 10m");
    let r = env.api.wait_nth_reply(OWNER, 1, 20);
    assert!(r.starts_with("ssh (22/tcp) open"), "{r}");
    assert_eq!(
        env.state()["offset"].as_i64(),
        Some(id + 1),
        "{}",
        env.state()
    );
    d.kill9();
    // Telegram may never have seen the confirmation: it delivers the update again.
    if env.api.pending() == 0 {
        env.api.push_update_with_id(
            id,
            json!({"message": {"message_id": 7, "from": {"id": OWNER, "is_bot": false, "first_name": "o"},
                "chat": {"id": OWNER, "type": "private"}, "date": now(), "text": "/open 10m"}}),
        );
    }
    let before = env.api.requests("getUpdates").len();
    let d2 = env.start();
    let first = env.api.requests("getUpdates")[before].clone();
    assert_eq!(
        first.body["offset"].as_i64(),
        Some(id + 1),
        "{:?}",
        first.body
    );
    let r = ask(&env, "/status", 2);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    assert_eq!(env.api.sent_to(OWNER).len(), 2, "{:?}", env.api.sent());
    assert!(open_everywhere(&env, "ssh"));
    assert!(left(&env, "ssh") > 500);
    d2.check_secret();
}

#[test]
fn an_opening_that_ran_out_while_down_is_closed_at_start() {
    let env = Env::new();
    let mut d = env.start();
    let r = ask(&env, "/open 10m", 1);
    assert!(r.starts_with("ssh (22/tcp) open"), "{r}");
    d.kill9();
    assert!(open_everywhere(&env, "ssh"), "nobody closed it while down");
    // Time passes while the daemon is down: its deadline is behind us.
    let mut state = env.state();
    state["openings"]["ssh"][0]["until"] = json!(now() - 5);
    std::fs::write(
        env.state_dir().join("state.json"),
        serde_json::to_string(&state).unwrap(),
    )
    .unwrap();
    let d2 = env.spawn();
    d2.wait_log("logged in as", 20);
    assert!(closed_everywhere(&env, "ssh"), "{}", env.rules(4));
    assert!(env.openings().is_empty(), "{}", env.state());
    // Not executed again either.
    let r = ask(&env, "/status", 2);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    assert_eq!(env.api.sent_to(OWNER).len(), 2);
}

#[test]
fn edited_messages_and_callback_queries_change_nothing() {
    let env = Env::new();
    let _d = env.start();
    let restores = env.restores();
    env.api.push_update(json!({"edited_message": {
        "message_id": 18, "from": {"id": OWNER, "is_bot": false, "first_name": "Ada"},
        "chat": {"id": OWNER, "type": "private"}, "date": now(), "edit_date": now(),
        "text": "/open"}}));
    env.api.push_update(json!({"callback_query": {
        "id": "4382bfdwdsb323b2d9", "from": {"id": OWNER, "is_bot": false, "first_name": "Ada"},
        "chat_instance": "-8812376453", "data": "open:ssh"}}));
    env.api.push_update(
        json!({"my_chat_member": {"chat": {"id": GROUP, "type": "supergroup"},
        "from": {"id": OWNER, "is_bot": false, "first_name": "Ada"}, "date": now()}}),
    );
    let r = ask(&env, "/status", 1);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    assert_eq!(env.restores(), restores);
    assert!(closed_everywhere(&env, "ssh"));
    assert_eq!(env.api.sent().len(), 1, "{:?}", env.api.sent());
}

#[test]
fn the_token_never_appears_in_output_or_replies() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    let d = env.start();
    // Owner pastes the token by mistake, in places that are echoed back.
    let token = crate::support::TOKEN;
    let secret = crate::support::SECRET;
    ask(&env, &format!("/open {token}"), 1);
    ask(&env, &format!("/close {secret}"), 2);
    ask(&env, &format!("/{secret}"), 3);
    ask(&env, "/open web", 4);
    for (_, text) in env.api.sent() {
        assert!(!text.contains(secret), "a reply holds the secret: {text}");
    }
    d.wait_log("open:", 10);
    d.check_secret();
    // The most a build logs: everything in debug builds; release builds (the ARM tier's
    // TGKNOCK_TEST_BIN) are compiled with info and above only, to fit the size budgets.
    let release = std::env::var("TGKNOCK_TEST_BIN").is_ok_and(|b| !b.trim().is_empty());
    let out = d.output();
    assert!(
        out.contains("TRACE") || out.contains("DEBUG") || (release && out.contains("INFO")),
        "RUST_LOG=trace is in effect"
    );
}
