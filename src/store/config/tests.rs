use super::*;

const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_file(text: &str) -> Result<Config> {
    Config::from_sources(Some((Path::new("/etc/t.conf"), text)), &[])
}

#[test]
fn defaults() {
    let c = Config::from_sources(None, &[]).unwrap();
    assert_eq!(c.gates.len(), 1);
    assert_eq!(c.gates[0].name, "ssh");
    assert_eq!(c.limits.open_for, 900);
    assert_eq!(c.limits.max_open_for, 86_400);
    assert_eq!(c.limits.max_age, 60);
    assert_eq!(c.telegram.poll_timeout, 50);
    assert!(c.telegram.notify_denied);
    assert_eq!(c.telegram.api_url, "https://api.telegram.org");
    assert_eq!(c.firewall.iptables, PathBuf::from("/usr/sbin/iptables"));
    assert_eq!(
        c.firewall.ip6tables,
        Some(PathBuf::from("/usr/sbin/ip6tables"))
    );
    assert_eq!(c.firewall.chain, "TGKNOCK");
    assert_eq!(c.files.state_dir, PathBuf::from("/var/lib/tgknock"));
    assert_eq!(
        c.files.log_file,
        PathBuf::from("/var/lib/tgknock/tgknock.log")
    );
    assert_eq!(c.knock, None);
    assert!(c.telegram.token.is_none());
    assert!(c.require_bot().is_err());
}

#[test]
fn file_format() {
    let c = from_file(&format!(
            "# comment\n\n  TGKNOCK_TOKEN=\"{TOKEN}\"\nTGKNOCK_ALLOWED_USERS='111, 222'\nTGKNOCK_GATES=ssh=22/tcp web=80/tcp,443/tcp\nOTHER=ignored\nTGKNOCK_IP6TABLES=off\n"
        ))
        .unwrap();
    assert_eq!(c.telegram.token.as_ref().unwrap().expose(), TOKEN);
    assert_eq!(
        c.telegram.allowed_users,
        vec![crate::base::ids::UserId(111), crate::base::ids::UserId(222)]
    );
    assert_eq!(c.gates.len(), 2);
    assert_eq!(c.firewall.ip6tables, None);
    assert!(c.require_bot().is_ok());
}

#[test]
fn environment_wins() {
    let c = Config::from_sources(
        Some((Path::new("/x"), "TGKNOCK_OPEN_FOR=5m\n")),
        &env(&[("TGKNOCK_OPEN_FOR", "7m"), ("HOME", "/root")]),
    )
    .unwrap();
    assert_eq!(c.limits.open_for, 420);
    assert_eq!(c.origin, "/x + the environment");
}

#[test]
fn unknown_keys_are_named() {
    let e = from_file("TGKNOCK_TOKN=x\n").unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let m = e.to_string();
    assert!(
        m.contains("TGKNOCK_TOKN") && m.contains("line 1") && m.contains("TGKNOCK_TOKEN"),
        "{m}"
    );
    let e = Config::from_sources(None, &env(&[("TGKNOCK_GATE", "x")])).unwrap_err();
    assert!(
        e.to_string().contains("TGKNOCK_GATE in the environment"),
        "{e}"
    );
}

#[test]
fn errors_name_the_key() {
    for (text, key) in [
        ("TGKNOCK_OPEN_FOR=15", "TGKNOCK_OPEN_FOR"),
        ("TGKNOCK_OPEN_FOR=2d", "TGKNOCK_MAX_OPEN_FOR=1d"),
        ("TGKNOCK_OPEN_FOR=0", "TGKNOCK_MAX_OPEN_FOR=0"),
        ("TGKNOCK_ALLOWED_USERS=@me", "TGKNOCK_ALLOWED_USERS"),
        ("TGKNOCK_ALLOWED_USERS=-5", "TGKNOCK_ALLOWED_USERS"),
        ("TGKNOCK_GATES=ssh", "TGKNOCK_GATES"),
        ("TGKNOCK_ALWAYS_ALLOW=10.0.0.0/33", "TGKNOCK_ALWAYS_ALLOW"),
        ("TGKNOCK_MAX_AGE=0", "TGKNOCK_MAX_AGE"),
        ("TGKNOCK_NOTIFY_DENIED=maybe", "TGKNOCK_NOTIFY_DENIED"),
        ("TGKNOCK_API_URL=ftp://x", "TGKNOCK_API_URL"),
        ("TGKNOCK_PROXY=gopher://x", "TGKNOCK_PROXY"),
        ("TGKNOCK_POLL_TIMEOUT=0", "TGKNOCK_POLL_TIMEOUT"),
        ("TGKNOCK_IPTABLES=iptables", "TGKNOCK_IPTABLES"),
        ("TGKNOCK_CHAIN=INPUT", "TGKNOCK_CHAIN"),
        ("TGKNOCK_CHAIN=a b", "TGKNOCK_CHAIN"),
        ("TGKNOCK_STATE_DIR=var", "TGKNOCK_STATE_DIR"),
        ("TGKNOCK_FIREWALL=pf", "TGKNOCK_FIREWALL"),
        ("TGKNOCK_KNOCK=1,x", "TGKNOCK_KNOCK"),
        ("TGKNOCK_KNOCK=0,5", "TGKNOCK_KNOCK"),
        ("TGKNOCK_KNOCK_GATE=web", "TGKNOCK_KNOCK_GATE"),
        ("TGKNOCK_TOKEN=\"x", "unmatched quote"),
        ("just words", "line 1"),
    ] {
        let e = from_file(text).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{text}");
        assert!(e.to_string().contains(key), "{text}: {e}");
        assert!(!e.to_string().contains(TOKEN));
    }
}

/// A token that cannot be used fails only the commands that need one (the others
/// still run: `teardown` on a board with an empty token file), naming the key.
#[test]
fn an_unusable_token_fails_only_what_needs_it() {
    for (text, key) in [
        ("TGKNOCK_TOKEN=nope", "TGKNOCK_TOKEN"),
        (
            "TGKNOCK_TOKEN_FILE=/nonexistent/token",
            "TGKNOCK_TOKEN_FILE",
        ),
    ] {
        let c = from_file(text).unwrap();
        assert!(c.warnings[0].contains(key), "{text}: {:?}", c.warnings);
        let e = c.require_token().unwrap_err();
        assert_eq!(e.exit_code(), 2, "{text}");
        assert!(e.to_string().contains(key), "{text}: {e}");
    }
}

#[test]
fn token_never_in_debug() {
    let c = from_file(&format!("TGKNOCK_TOKEN={TOKEN}")).unwrap();
    assert!(!format!("{c:?}").contains("AAHdq"));
    let bad = from_file("TGKNOCK_TOKEN=123:short")
        .unwrap()
        .require_token()
        .unwrap_err()
        .to_string();
    assert!(!bad.contains("123:short"), "{bad}");
}

#[test]
fn token_file_and_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tgk-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("token");
    std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!("TGKNOCK_TOKEN_FILE={}", f.display());
    let c = from_file(&text).unwrap();
    assert_eq!(c.telegram.token.unwrap().expose(), TOKEN);
    assert!(c.warnings[0].contains("chmod 600"), "{:?}", c.warnings);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(from_file(&text).unwrap().warnings.is_empty());
    let both = format!("{text}\nTGKNOCK_TOKEN={TOKEN}");
    let e = from_file(&both).unwrap().require_token().unwrap_err();
    assert!(e.to_string().contains("both set"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn proxy_from_env() {
    let c =
        Config::from_sources(None, &env(&[("HTTPS_PROXY", "socks5h://127.0.0.1:1080")])).unwrap();
    assert_eq!(c.telegram.proxy.unwrap().source, "HTTPS_PROXY");
    let c = Config::from_sources(
        None,
        &env(&[("HTTPS_PROXY", "socks5h://h:1"), ("TGKNOCK_PROXY", "")]),
    )
    .unwrap();
    assert!(c.telegram.proxy.is_none());
}

#[test]
fn actions_are_a_family_of_keys() {
    let c = from_file(
            "TGKNOCK_ACTION_RESTART_NGINX=\"/usr/bin/systemctl restart nginx\"\nTGKNOCK_ACTION_backup='/usr/local/bin/backup \"my files\"'\nTGKNOCK_ACTION_TIMEOUT=2m\n",
        )
        .unwrap();
    assert_eq!(c.actions.timeout, 120);
    let names: Vec<&str> = c.actions.list.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["backup", "restart_nginx"]);
    assert_eq!(
        c.actions.find("backup").unwrap().argv,
        ["/usr/local/bin/backup", "my files"]
    );
    assert_eq!(
        c.actions.find("restart_nginx").unwrap().argv,
        ["/usr/bin/systemctl", "restart", "nginx"]
    );
    let c = Config::from_sources(None, &env(&[("TGKNOCK_ACTION_X", "/bin/true")])).unwrap();
    assert_eq!(c.actions.find("x").unwrap().argv, ["/bin/true"]);
    assert_eq!(c.actions.timeout, 30);
    for (text, key, why) in [
        (
            "TGKNOCK_ACTION_X=true",
            "TGKNOCK_ACTION_X (from /etc/t.conf line 1)",
            "absolute path",
        ),
        ("TGKNOCK_ACTION_X=", "TGKNOCK_ACTION_X", "is empty"),
        (
            "TGKNOCK_ACTION_=/bin/true",
            "TGKNOCK_ACTION_",
            "letters, digits and _",
        ),
        (
            "TGKNOCK_ACTION_A=/bin/true\nTGKNOCK_ACTION_a=/bin/false",
            "TGKNOCK_ACTION_a",
            "already declares",
        ),
        (
            "TGKNOCK_ACTION_TIMEOUT=0",
            "TGKNOCK_ACTION_TIMEOUT",
            "between 1s and 1d",
        ),
        ("TGKNOCK_ACTION_TIMEOUT=5", "TGKNOCK_ACTION_TIMEOUT", ""),
        (
            "TGKNOCK_ACTION_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=/bin/true",
            "TGKNOCK_ACTION_AAAA",
            "at most 32",
        ),
    ] {
        let e = from_file(text).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{text}");
        let m = e.to_string();
        assert!(m.contains(key) && m.contains(why), "{text}: {m}");
    }
    let e = Config::from_sources(None, &env(&[("TGKNOCK_ACTION_a-b", "/bin/true")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("TGKNOCK_ACTION_a-b"), "{e}");
    let many: String = (0..33)
        .map(|i| format!("TGKNOCK_ACTION_A{i}=/bin/true\n"))
        .collect();
    assert!(
        from_file(&many)
            .unwrap_err()
            .to_string()
            .contains("more than 32 actions")
    );
    // Near misses of the family's prefix are still typos.
    let e = from_file("TGKNOCK_ACTON_X=/bin/true")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown key TGKNOCK_ACTON_X"), "{e}");
}

#[test]
fn knock_and_firewall_keys() {
    let c = from_file("TGKNOCK_FIREWALL=nft\nTGKNOCK_KNOCK=7101, 7102,7103").unwrap();
    assert_eq!(c.firewall.kind, FirewallKind::Nft);
    let k = c.knock.unwrap();
    assert_eq!(k.ports, vec![7101, 7102, 7103]);
    assert_eq!(k.open_for, 30);
    assert_eq!(k.gate, "ssh");
    let c = from_file("TGKNOCK_KNOCK=7311,2918").unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = from_file("TGKNOCK_KNOCK=7101,7102").unwrap();
    assert!(
        c.warnings[0].contains("in-order port scan"),
        "{:?}",
        c.warnings
    );
    for (bad, why) in [
        ("TGKNOCK_KNOCK=7101", "2 to 8"),
        ("TGKNOCK_KNOCK=7101,7101", "twice"),
        ("TGKNOCK_KNOCK=7101,22", "gate ssh"),
        ("TGKNOCK_KNOCK=1,2,3,4,5,6,7,8,9", "2 to 8"),
        (
            "TGKNOCK_KNOCK=7101,7102\nTGKNOCK_KNOCK_OPEN_FOR=0",
            "more than 0",
        ),
    ] {
        let e = from_file(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

/// The layers read every key of the table by its constant: its default when unset, the
/// file's value under the environment's, and where a bad value was set.
#[test]
fn layers_read_keys_by_their_constants() {
    let none = Layers::new(None, &[]).unwrap();
    for k in KEYS.iter().filter(|k| k.family_prefix().is_none()) {
        assert_eq!(none.get(*k), k.default.unwrap_or(""), "{}", k.name);
        assert_eq!(none.given(*k), None, "{}", k.name);
    }
    assert_eq!(none.origin, "defaults only");
    let e = env(&[("TGKNOCK_OPEN_FOR", "5m"), ("PATH", "/bin")]);
    let text = "TGKNOCK_OPEN_FOR=1m\nTGKNOCK_CHAIN=X\nTGKNOCK_ACTION_A=/bin/true\n";
    let l = Layers::new(Some((Path::new("/etc/t.conf"), text)), &e).unwrap();
    assert_eq!(l.get(keys::OPEN_FOR), "5m");
    assert_eq!(l.given(keys::CHAIN), Some("X"));
    assert_eq!(l.origin, "/etc/t.conf + the environment");
    assert_eq!(
        l.family(keys::ACTION_PREFIX).collect::<Vec<_>>(),
        [("TGKNOCK_ACTION_A", "/bin/true")]
    );
    assert_eq!(
        l.bad(keys::CHAIN, "no").to_string(),
        "configuration: TGKNOCK_CHAIN (from /etc/t.conf line 2): no"
    );
    assert_eq!(
        keys::nearest_key("TGKNOCK_OPEN_FRO"),
        Some("TGKNOCK_OPEN_FOR")
    );
    assert_eq!(keys::nearest_key("TGKNOCK_ACTION_"), None);
}
