//! `tgknock setup` with answers piped on standard input, against the fake Bot API's `getMe`
//! and `getUpdates`: the files it writes (and keeps), answers it asks again, a token
//! Telegram rejects, no message in time, and the LAN it finds (in a namespace of its own).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::env::{assert_no_secret, stdout};
use crate::support::netns::{env_in, in_netns, ip, is_root, skip};
use crate::support::{BOT, Env, OWNER, SECRET, TOKEN, wait_for};

/// An environment for setup: the token and the users come from the answers, not from the
/// environment; the config goes to `etc/tgknock.conf` of the scratch directory.
fn setup_env(env: &mut Env) -> PathBuf {
    env.unset("TGKNOCK_TOKEN");
    env.unset("TGKNOCK_ALLOWED_USERS");
    env.set("RUST_LOG", "info");
    env.path("etc/tgknock.conf")
}

/// Runs `cmd` with `input` on standard input; checks no output holds the token.
fn feed(mut cmd: Command, input: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run tgknock setup");
    let mut stdin = child.stdin.take().unwrap();
    // Setup may stop reading early (an error): a broken pipe is its answer.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    wait_for(120, "setup to finish", || child.try_wait().unwrap());
    let out = child.wait_with_output().unwrap();
    assert_no_secret(&String::from_utf8_lossy(&out.stdout));
    assert_no_secret(&String::from_utf8_lossy(&out.stderr));
    out
}

fn setup(env: &Env, config: &Path, extra: &[&str], input: &str) -> Output {
    let mut args = vec!["setup", "--config", config.to_str().unwrap()];
    args.extend(extra);
    feed(env.command(&args), input)
}

fn both(out: &Output) -> String {
    format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn piped_answers_take_a_token_to_a_working_bot() {
    let mut env = Env::new();
    let config = setup_env(&mut env);
    let out = setup_then(
        &env,
        &config,
        &[],
        &format!("not a token\n{TOKEN}\n\n\n\n"),
        || {
            env.api.say(OWNER, "hello");
        },
    );
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in [
        "That is not a bot token: BotFather's look like 123456789:AAH…",
        &format!("it is @{BOT} (tgknock)."),
        &format!("Now send any message to @{BOT} in Telegram"),
        "Got \"hello\" from user111111111 (@u111111111): user id 111111111.",
        "[ ok ] Telegram: the token belongs to @tgknock_test_bot",
        "all checks passed",
        "One command left, to start the service:\n  tgknock run --config ",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let written = std::fs::read_to_string(&config).unwrap();
    let token_file = env.path("etc/token");
    assert!(
        written.contains(&format!("TGKNOCK_TOKEN_FILE={}\n", token_file.display())),
        "{written}"
    );
    assert!(
        written.contains("TGKNOCK_ALLOWED_USERS=111111111\n"),
        "{written}"
    );
    assert!(written.contains("TGKNOCK_GATES=ssh=22/tcp\n"), "{written}");
    if text.contains("Never block it") {
        assert!(written.contains("TGKNOCK_ALWAYS_ALLOW="), "{written}");
    }
    assert!(!written.contains(SECRET));
    assert_eq!(mode(&config), 0o640);
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        format!("{TOKEN}\n")
    );
    assert_eq!(env.api.pending(), 0, "the hello was confirmed");

    // The bot works with what setup wrote (and the test's firewall and state settings).
    let d = env.spawn_with(&["run", "--config", config.to_str().unwrap()]);
    d.wait_log("logged in as @tgknock_test_bot", 20);
    env.api.say(OWNER, "/open");
    env.api
        .wait_reply(OWNER, "ssh (22/tcp) open to everyone until", 20);
    assert!(
        !env.api.sent_to(OWNER).iter().any(|t| t.contains("hello")),
        "the hello reached the daemon"
    );
}

#[test]
fn answers_that_are_not_ids_or_gates_are_asked_again_with_the_reason() {
    let mut env = Env::new();
    let config = setup_env(&mut env);
    // The package's template: an empty token file, and lines setup keeps.
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let token_file = env.path("etc/token");
    std::fs::write(&token_file, "").unwrap();
    std::fs::write(
        &config,
        format!(
            "# mine\nTGKNOCK_TOKEN_FILE={}\nTGKNOCK_ALLOWED_USERS=\nTGKNOCK_OPEN_FOR=5m\n",
            token_file.display()
        ),
    )
    .unwrap();
    let out = setup_then(
        &env,
        &config,
        &[],
        &format!("{TOKEN}\n@ada\n42, 43\nssh\nweb=80/tcp,443/tcp\nmaybe\nn\n"),
        || {
            env.api.say(OWNER, "hi");
        },
    );
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("'@ada' is not a numeric Telegram user id. Try again."),
        "{text}"
    );
    assert!(
        text.contains("'ssh' is not of the form name=port/proto"),
        "{text}"
    );
    assert!(text.contains(
        "the file exists: setup replaces its token, gates and LAN lines, keeps the users"
    ));
    if text.contains("Never block it") {
        assert!(text.contains("Answer y or n. Try again."), "{text}");
    }
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.starts_with("# mine\nTGKNOCK_TOKEN_FILE="),
        "{written}"
    );
    assert!(
        written.contains("\nTGKNOCK_ALLOWED_USERS=42,43\nTGKNOCK_OPEN_FOR=5m\n"),
        "{written}"
    );
    assert!(
        written.contains("TGKNOCK_GATES=web=80/tcp,443/tcp\n"),
        "{written}"
    );
    assert!(!written.contains("TGKNOCK_ALWAYS_ALLOW"), "{written}");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap(),
        format!("{TOKEN}\n")
    );
    assert_eq!(mode(&token_file), 0o600);
}

#[test]
fn a_rejected_token_exits_3_and_writes_nothing() {
    let mut env = Env::new();
    let config = setup_env(&mut env);
    let other = "7000000002:AAF-OtherSecretOtherSecretOther_x9";
    let out = setup(&env, &config, &[], &format!("{other}\n\n\n\n"));
    let text = both(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("Telegram rejected the bot token: HTTP 401: Unauthorized"),
        "{text}"
    );
    assert!(!text.contains("OtherSecretOther"), "{text}");
    assert!(!config.exists() && !env.path("etc/token").exists());
    // No token at all: the end of input is an error that says what was missing.
    let out = setup(&env, &config, &[], "");
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        both(&out).contains("standard input ended before the bot token was given"),
        "{}",
        both(&out)
    );
    assert!(!config.exists());
    // A place setup could not write to is found before the first question.
    let out = setup(
        &env,
        Path::new("/proc/tgknock/tgknock.conf"),
        &[],
        &format!("{TOKEN}\n"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        both(&out).contains("cannot write in /proc"),
        "{}",
        both(&out)
    );
    assert!(!both(&out).contains("Bot token"), "{}", both(&out));
}

#[test]
fn without_a_message_in_time_the_id_is_asked_for() {
    let mut env = Env::new();
    let config = setup_env(&mut env);
    let out = setup(
        &env,
        &config,
        &["--wait", "2s"],
        &format!("{TOKEN}\n\n555\n\nn\n"),
    );
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("No message came in 2 s."), "{text}");
    assert!(
        text.contains("at least one user id is needed. Try again."),
        "{text}"
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("TGKNOCK_ALLOWED_USERS=555\n"), "{written}");
    let out = env.run(&["setup", "--wait", "2h"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(both(&out).contains("--wait: must be between 1s and 1h"));
}

#[test]
fn the_lan_of_the_board_is_proposed() {
    if !is_root() {
        return skip("setup's LAN detection test needs root (ip netns)");
    }
    let ns = format!("tgk{}-setup", std::process::id());
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = ip(&["netns", "del", &self.0]);
        }
    }
    if let Err(e) = ip(&["netns", "add", &ns]) {
        return skip(&format!("ip netns add: {e}"));
    }
    let _gone = Gone(ns.clone());
    for args in [
        &["link", "set", "lo", "up"][..],
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ],
        &["addr", "add", "192.168.77.2/24", "dev", "eth0"],
        &["addr", "add", "fd12:3456::2/64", "dev", "eth0", "nodad"],
        &[
            "link", "add", "docker0", "type", "veth", "peer", "name", "docker1",
        ],
        &["addr", "add", "172.17.0.1/16", "dev", "docker0"],
        &["link", "set", "eth1", "up"],
        &["link", "set", "eth0", "up"],
        &["link", "set", "docker1", "up"],
        &["link", "set", "docker0", "up"],
    ] {
        let mut a = vec!["-n", ns.as_str()];
        a.extend(args);
        ip(&a).unwrap();
    }
    let mut env = env_in(&ns);
    let config = setup_env(&mut env);
    let cmd = in_netns(
        &ns,
        &env.command(&["setup", "--config", config.to_str().unwrap()]),
    );
    let out = feed_then(&env, cmd, &format!("{TOKEN}\n\n\n\n"), || {
        env.api.say(OWNER, "hello");
    });
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("This board is on 192.168.77.0/24,fd12:3456::/64. Never block it"),
        "{text}"
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("TGKNOCK_ALWAYS_ALLOW=192.168.77.0/24,fd12:3456::/64\n"),
        "{written}"
    );
}

/// Someone else who writes to the bot.
const STRANGER: i64 = 666_666_666;

/// Runs setup with `input` piped, and once it has asked for the owner's message (its
/// first `getUpdates`), runs `then` (the messages sent after it asked).
fn setup_then(
    env: &Env,
    config: &Path,
    extra: &[&str],
    input: &str,
    then: impl FnOnce(),
) -> Output {
    let mut args = vec!["setup", "--config", config.to_str().unwrap()];
    args.extend(extra);
    feed_then(env, env.command(&args), input, then)
}

/// [`feed`], running `then` once setup has asked for the owner's message.
fn feed_then(env: &Env, mut cmd: Command, input: &str, then: impl FnOnce()) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let before = env.api.requests("getUpdates").len();
    let mut child = cmd.spawn().expect("run tgknock setup");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    wait_for(60, "setup to ask for a message", || {
        (env.api.requests("getUpdates").len() > before || child.try_wait().unwrap().is_some())
            .then_some(())
    });
    then();
    wait_for(120, "setup to finish", || child.try_wait().unwrap());
    let out = child.wait_with_output().unwrap();
    assert_no_secret(&String::from_utf8_lossy(&out.stdout));
    assert_no_secret(&String::from_utf8_lossy(&out.stderr));
    out
}

fn allowed(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("TGKNOCK_ALLOWED_USERS="))
        .unwrap_or("")
        .to_string()
}

/// A stranger's `/start` from an hour ago waits in the queue: setup never proposes a
/// message that was there before it asked, and proposes the owner's, sent after.
#[test]
fn a_message_that_was_waiting_is_never_proposed() {
    let mut env = Env::new();
    let config = setup_env(&mut env);
    let hour_ago = env.api.now() - 3600;
    env.api
        .push_message_at(STRANGER, STRANGER, "private", "/start", hour_ago);
    env.api
        .push_message_at(STRANGER, STRANGER, "private", "hi", env.api.now() - 5);
    let out = setup_then(&env, &config, &[], &format!("{TOKEN}\n\n\n\n"), || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        env.api.say(OWNER, "hello");
    });
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(allowed(&config), OWNER.to_string(), "{text}");
    assert!(
        text.contains("Got \"hello\" from user111111111 (@u111111111): user id 111111111."),
        "{text}"
    );
    assert!(!text.contains(&STRANGER.to_string()), "{text}");

    // Only the waiting ones, and no message after: nothing is proposed, the id is asked.
    let mut env = Env::new();
    let config = setup_env(&mut env);
    env.api
        .push_message_at(STRANGER, STRANGER, "private", "/start", hour_ago);
    let out = setup(
        &env,
        &config,
        &["--wait", "3s"],
        &format!("{TOKEN}\n\n555\n\n\n"),
    );
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("No message came in 3 s."), "{text}");
    assert_eq!(allowed(&config), "555", "{text}");
}

/// Two people write after setup asked: it asks which, and piped answers that cannot
/// choose (Enter) are refused rather than guessed; an id among them chooses.
#[test]
fn two_senders_are_asked_which_and_never_guessed() {
    let mut env = Env::new();
    let config = setup_env(&mut env);
    let both_write = || {
        env.api.say(STRANGER, "/start");
        env.api.say(OWNER, "hello");
    };
    let out = setup_then(&env, &config, &[], &format!("{TOKEN}\n\n\n\n"), both_write);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("user666666666 (@u666666666), user id 666666666")
            && text.contains("user111111111 (@u111111111), user id 111111111"),
        "{text}"
    );
    assert!(text.contains("setup does not guess"), "{text}");
    assert!(!config.exists(), "a config was written: {text}");

    let out = setup_then(
        &env,
        &config,
        &[],
        &format!("{TOKEN}\n{OWNER}\n\n\n"),
        both_write,
    );
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(allowed(&config), OWNER.to_string(), "{text}");
}

/// Setup run again on a config that allows users already keeps them (the new sender is
/// added), unless the answer says to replace them.
#[test]
fn users_already_allowed_are_kept_unless_replaced() {
    let mut env = Env::new();
    let config = setup_env(&mut env);
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "TGKNOCK_ALLOWED_USERS=42,43\n").unwrap();
    let out = setup_then(&env, &config, &[], &format!("{TOKEN}\n\n\n\n"), || {
        env.api.say(OWNER, "hello");
    });
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(allowed(&config), format!("42,43,{OWNER}"), "{text}");
    assert!(text.contains("already allowed: 42,43"), "{text}");

    // A bare id adds; "replace" replaces.
    let out = setup_then(&env, &config, &[], &format!("{TOKEN}\n44\n\n\n"), || {
        env.api.say(OWNER, "again");
    });
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(
        allowed(&config),
        format!("42,43,{OWNER},44"),
        "{}",
        both(&out)
    );
    let out = setup_then(
        &env,
        &config,
        &[],
        &format!("{TOKEN}\nreplace {OWNER}\n\n\n"),
        || {
            env.api.say(OWNER, "once more");
        },
    );
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(allowed(&config), OWNER.to_string(), "{}", both(&out));
}

/// The token pasted again at the user-id prompt, or at the gates prompt, is never
/// shown: refused with a clear message, and asked again.
#[test]
fn a_token_pasted_at_another_prompt_is_never_echoed() {
    let mut env = Env::new();
    let config = setup_env(&mut env);
    // `setup` checks every output for the token's secret (and pieces of it).
    let out = setup(
        &env,
        &config,
        &["--wait", "2s"],
        &format!("{TOKEN}\n{TOKEN}\n555\n{TOKEN}\n\n\n"),
    );
    let text = both(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.matches("That looks like a bot token").count(),
        2,
        "{text}"
    );
    assert_eq!(allowed(&config), "555", "{text}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("TGKNOCK_GATES=ssh=22/tcp\n"), "{written}");
    assert!(!written.contains(SECRET), "{written}");
}
