//! The real daemon driven by chat through the fake Bot API, with the recording fake iptables.

use crate::support::{Env, OWNER, wait_for};

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
