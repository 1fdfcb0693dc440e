//! Pre-declared actions (`TGKNOCK_ACTION_<NAME>`, `/run NAME`) through the fake Bot API:
//! what runs and how (no shell, cleared environment, stdin closed, its own process group),
//! the reply, a timeout that kills the whole group while the bot keeps answering, one run
//! at a time, strangers, bad names, and the buttons of `/help`.

use crate::support::env::{stderr, stdout};
use crate::support::{Env, OWNER, SECRET, TOKEN, wait_for};

const STRANGER: i64 = 222_222_222;

#[test]
fn the_owner_runs_an_action_and_reads_its_output() {
    let mut env = Env::new();
    let marker = env.path("marker");
    env.set(
        "TGKNOCK_ACTION_TOUCH",
        &format!("/usr/bin/touch {}", marker.display()),
    );
    // A shell only because the action names one: tgknock runs it as a program.
    env.set(
        "TGKNOCK_ACTION_Inspect",
        &format!(
            "/bin/sh -c \"echo pid=$$; cut -d' ' -f5 /proc/$$/stat; env | sort; read x || echo stdin-closed; printf '\\033[1mbold\\033[0m\\r\\n'; echo {TOKEN}; echo to-stderr >&2; exit 3\""
        ),
    );
    let d = env.start();

    env.api.say(OWNER, "/run touch");
    let reply = env.api.wait_reply(OWNER, "touch: ", 30);
    assert!(
        reply.starts_with("touch: exit status 0 after ") && reply.ends_with(" s\n(no output)"),
        "{reply}"
    );
    assert!(marker.exists(), "the action did not run");
    d.wait_log(
        "111111111 (@u111111111) runs action touch: /usr/bin/touch",
        5,
    );

    env.api.say(OWNER, "/run INSPECT");
    let reply = env.api.wait_reply(OWNER, "inspect: ", 30);
    let lines: Vec<&str> = reply.lines().collect();
    assert!(
        lines[0].starts_with("inspect: exit status 3 after "),
        "{reply}"
    );
    assert_eq!(lines[1], "", "{reply}");
    let pid = lines[2].strip_prefix("pid=").expect(&reply);
    assert_eq!(lines[3], pid, "its own process group: pgid = pid\n{reply}");
    assert_eq!(
        &lines[4..6],
        [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PWD=/"
        ],
        "a cleared environment\n{reply}"
    );
    assert_eq!(lines[6], "stdin-closed", "{reply}");
    assert_eq!(lines[7], "bold", "escape sequences removed\n{reply}");
    assert_eq!(lines[8], "7000000001:<redacted>", "{reply}");
    assert_eq!(lines[9], "to-stderr", "{reply}");
    assert_eq!(lines.len(), 10, "{reply}");
    assert!(!reply.contains(SECRET) && !reply.contains("TGKNOCK_"));
    d.check_secret();
}

#[test]
fn a_stuck_action_is_killed_with_its_group_and_never_deafens_the_bot() {
    let mut env = Env::new();
    let child = env.path("child.pid");
    env.set("TGKNOCK_ACTION_TIMEOUT", "3s");
    env.set(
        "TGKNOCK_ACTION_SLOW",
        &format!(
            "/bin/sh -c \"sleep 300 & echo $! > {}; echo started; wait\"",
            child.display()
        ),
    );
    let _d = env.start();
    env.api.say(OWNER, "/run slow");
    let pid: u32 = wait_for(20, "the action's child", || {
        std::fs::read_to_string(&child).ok()?.trim().parse().ok()
    });
    // While it runs, the bot answers; a second run of it is told it is running.
    env.api.say(OWNER, "/status");
    env.api.wait_reply(OWNER, "ssh (22/tcp) closed", 20);
    env.api.say(OWNER, "/run slow");
    let busy = env.api.wait_reply(OWNER, "slow is running already", 20);
    assert!(busy.contains("its result comes when it ends"), "{busy}");
    assert!(
        !env.api
            .sent_to(OWNER)
            .iter()
            .any(|t| t.contains("timed out")),
        "the status came after the timeout: {:?}",
        env.api.sent_to(OWNER)
    );
    let reply = env.api.wait_reply(OWNER, "slow: timed out", 30);
    assert_eq!(
        reply,
        "slow: timed out after 3 s (TGKNOCK_ACTION_TIMEOUT); its process group was killed\n\nstarted"
    );
    // The background `sleep` went with the group (gone, or a zombie nobody reaped yet).
    wait_for(10, "the action's child to die", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
        matches!(state, None | Some('Z') | Some('X')).then_some(())
    });
    // Over: it may run again.
    env.api.say(OWNER, "/run slow");
    wait_for(20, "a second run", || {
        (env.api
            .sent_to(OWNER)
            .iter()
            .filter(|t| t.starts_with("slow: timed out"))
            .count()
            == 2)
            .then_some(())
    });
}

#[test]
fn strangers_and_bad_names_run_nothing() {
    let mut env = Env::new();
    let marker = env.path("marker");
    env.set(
        "TGKNOCK_ACTION_TOUCH",
        &format!("/usr/bin/touch {}", marker.display()),
    );
    env.set("TGKNOCK_ACTION_BACKUP", "/bin/true");
    let d = env.start();
    env.api.say(STRANGER, "/run touch");
    env.api
        .wait_reply(OWNER, "(not in TGKNOCK_ALLOWED_USERS)", 20);
    assert!(env.api.sent_to(STRANGER).is_empty());

    env.api.say(OWNER, "/run nope");
    let r = env.api.wait_reply(OWNER, "There is no action", 20);
    assert_eq!(r, "There is no action 'nope'. Actions: backup, touch.");
    env.api.say(OWNER, "/run to;uch");
    let r = env.api.wait_reply(OWNER, "is not an action name", 20);
    assert!(r.starts_with("'to;uch' is not an action name"), "{r}");
    env.api.say(OWNER, "/run ../../bin/sh");
    env.api
        .wait_reply(OWNER, "'../../bin/sh' is not an action name", 20);

    env.api.say(OWNER, "/run");
    let list = env.api.wait_reply(OWNER, "Actions (/run NAME):", 20);
    assert!(
        list.contains("\n  backup - /bin/true\n  touch - /usr/bin/touch "),
        "{list}"
    );
    assert!(list.ends_with("Each may run 30 s at most (TGKNOCK_ACTION_TIMEOUT)."));
    let (_, keyboard) = env.api.keyboard_of(OWNER, "Actions (/run NAME):");
    assert_eq!(
        keyboard,
        vec![vec![
            ("Run backup".to_string(), "/run backup".to_string()),
            ("Run touch".to_string(), "/run touch".to_string())
        ]]
    );
    d.check_secret();
    assert!(!marker.exists(), "a stranger or a bad name ran the action");
}

#[test]
fn a_run_button_of_help_runs_the_action_and_replies_in_a_new_message() {
    let mut env = Env::new();
    let marker = env.path("marker");
    env.set(
        "TGKNOCK_ACTION_TOUCH",
        &format!("/usr/bin/touch {}", marker.display()),
    );
    let _d = env.start();
    env.api.say(OWNER, "/help");
    env.api.wait_reply(OWNER, "/run [NAME]", 20);
    let (help, keyboard) = env.api.keyboard_of(OWNER, "/run [NAME]");
    assert!(
        keyboard
            .iter()
            .flatten()
            .any(|(t, d)| t == "Run touch" && d == "/run touch"),
        "{keyboard:?}"
    );
    let q = env.api.press(OWNER, OWNER, help, "/run touch");
    env.api.wait_reply(OWNER, "touch: exit status 0", 30);
    assert!(marker.exists());
    assert_eq!(env.api.answers(), vec![(q, None)]);
    assert!(env.api.edits().is_empty(), "the help message stays");
    // A stranger's press on the same button runs nothing and costs no request.
    std::fs::remove_file(&marker).unwrap();
    env.api.press(STRANGER, OWNER, help, "/run touch");
    env.api
        .wait_reply(OWNER, "(not in TGKNOCK_ALLOWED_USERS)", 20);
    assert_eq!(env.api.answers().len(), 1);
    assert!(!marker.exists());
}

#[test]
fn action_keys_are_checked_and_named() {
    let mut env = Env::new();
    env.set("TGKNOCK_ACTION_RESTART", "systemctl restart nginx");
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("TGKNOCK_ACTION_RESTART") && err.contains("must be an absolute path"),
        "{err}"
    );
    env.set(
        "TGKNOCK_ACTION_RESTART",
        "/usr/bin/systemctl \"restart nginx",
    );
    let err = stderr(&env.run(&["check"]));
    assert!(err.contains("a double quote is not closed"), "{err}");
    env.set(
        "TGKNOCK_ACTION_RESTART",
        "/nonexistent/systemctl restart nginx",
    );
    env.set("TGKNOCK_ACTION_TIMEOUT", "0");
    let err = stderr(&env.run(&["check"]));
    assert!(err.contains("TGKNOCK_ACTION_TIMEOUT"), "{err}");
    env.unset("TGKNOCK_ACTION_TIMEOUT");
    env.set("TGKNOCK_ACTIONS", "x");
    let err = stderr(&env.run(&["check"]));
    assert!(err.contains("unknown key TGKNOCK_ACTIONS"), "{err}");
    env.unset("TGKNOCK_ACTIONS");
    // A missing program is worth a warning: the gates do not depend on it.
    let out = env.run(&["check"]);
    let text = stdout(&out);
    assert!(
        text.contains("[warn] action restart: /nonexistent/systemctl: "),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
}

#[test]
fn an_action_is_never_run_twice_after_a_crash() {
    let mut env = Env::new();
    let count = env.path("count");
    let group = env.path("group");
    env.set(
        "TGKNOCK_ACTION_ONCE",
        &format!(
            "/bin/sh -c \"echo $$ > {}; echo ran >> {}; sleep 30\"",
            group.display(),
            count.display()
        ),
    );
    let mut d = env.start();
    let id = env.api.say(OWNER, "/run once");
    let pgid: i32 = wait_for(20, "the action to start", || {
        std::fs::read_to_string(&group).ok()?.trim().parse().ok()
    });
    // Saved as handled before the action started: the state says so while it runs.
    assert_eq!(env.state()["offset"].as_i64(), Some(id + 1));
    d.kill9();
    // The action outlives the daemon (its own group); Telegram sends the command again.
    let text = "/run once";
    env.api.push_update_with_id(
        id,
        serde_json::json!({"message": {
            "message_id": 7, "from": {"id": OWNER, "is_bot": false, "first_name": "Owner"},
            "chat": {"id": OWNER, "type": "private"}, "date": env.api.now(), "text": text,
        }}),
    );
    let _d = env.start();
    env.api.say(OWNER, "/status");
    env.api.wait_reply(OWNER, "ssh (22/tcp) closed", 20);
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
    assert_eq!(
        std::fs::read_to_string(&count).unwrap(),
        "ran\n",
        "the action ran again after the crash"
    );
}
