use super::*;

const GOOD: &str = r#"
[cluster]
name = "test"
secret_file = "cluster.secret"
lease = "4s"
heartbeat = "500ms"

[[node]]
name = "main"
role = "primary"
peer = "127.0.0.1:7401"
http = "127.0.0.1:7301"
data_dir = "../data/main"

[[node]]
name = "lan-1"
role = "spare"
peer = "127.0.0.1:7402"
http = "127.0.0.1:7302"
peer_advertise = "spare1.example.com:7402"
window = "16MiB"

[[node]]
name = "watch-1"
role = "monitor"
peer = "127.0.0.1:7404"
http = "127.0.0.1:7304"
"#;

fn parse(text: &str) -> Result<ClusterConfig> {
    ClusterConfig::parse(Path::new("conf/cluster.toml"), text)
}

fn err(text: &str) -> String {
    parse(text).expect_err("must be refused").to_string()
}

#[test]
fn example_parses_with_defaults_and_relative_paths() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.nodes.len(), 3);
    assert_eq!(c.primary().name, "main");
    assert_eq!(c.cluster.secret_file, Path::new("conf/cluster.secret"));
    let main = c.node("main").unwrap();
    assert_eq!(main.data_dir, Path::new("conf/../data/main"));
    assert_eq!(main.peer_advertise, "127.0.0.1:7401");
    let spare = c.node("lan-1").unwrap();
    assert_eq!(spare.peer_advertise, "spare1.example.com:7402");
    assert_eq!(spare.window, 16 * 1024 * 1024);
    assert_eq!(spare.data_dir, Path::new("conf/data/lan-1"));
    assert_eq!(c.cluster.commit, CommitRule::Async);
}

#[test]
fn unknown_key_names_file_node_and_field() {
    let e = err(&GOOD.replace("window = \"16MiB\"", "apply_dealy = \"5m\""));
    assert!(
        e.contains("conf/cluster.toml: node \"lan-1\": field \"apply_dealy\": unknown key"),
        "{e}"
    );
}

#[test]
fn duplicate_names_are_refused() {
    let e = err(&GOOD.replace("name = \"watch-1\"", "name = \"lan-1\""));
    assert!(
        e.contains("node \"lan-1\": field \"name\": duplicate"),
        "{e}"
    );
}

#[test]
fn zero_or_two_primaries_are_refused() {
    let none = err(&GOOD.replace("role = \"primary\"", "role = \"spare\""));
    assert!(none.contains("no node has role = \"primary\""), "{none}");
    let two = err(&GOOD.replace("role = \"monitor\"", "role = \"primary\""));
    assert!(
        two.contains("2 nodes have role = \"primary\" (main, watch-1)"),
        "{two}"
    );
}

#[test]
fn bad_addresses_are_refused_with_an_example() {
    let e = err(&GOOD.replace("127.0.0.1:7302", "127.0.0.1:99999"));
    assert!(
        e.contains("node \"lan-1\": field \"http\": \"127.0.0.1:99999\" is not an address"),
        "{e}"
    );
    let e = err(&GOOD.replace("spare1.example.com:7402", "spare1.example.com"));
    assert!(e.contains("field \"peer_advertise\""), "{e}");
    let e = err(&GOOD.replace("127.0.0.1:7304", "127.0.0.1:7302"));
    assert!(
        e.contains("node \"watch-1\": field \"http\": address 127.0.0.1:7302 is already used"),
        "{e}"
    );
}

#[test]
fn bad_values_are_refused() {
    let e = err(&GOOD.replace("lease = \"4s\"", "lease = \"4 parsecs\""));
    assert!(e.contains("[cluster]: field \"lease\""), "{e}");
    let e = err(&GOOD.replace("heartbeat = \"500ms\"", "heartbeat = \"10s\""));
    assert!(e.contains("shorter than lease"), "{e}");
    let e = err(&GOOD.replace("role = \"monitor\"", "role = \"monitor\"\nwindow = 100000"));
    assert!(
        e.contains("node \"watch-1\": field \"window\": only applies to spares"),
        "{e}"
    );
    let e = err(&GOOD.replace("role = \"spare\"", "role = \"replica\""));
    assert!(e.contains("\"replica\" is not a role"), "{e}");
    let e = err("[cluster\nname=");
    assert!(e.contains("conf/cluster.toml: not valid TOML"), "{e}");
}

#[test]
fn commit_rule_must_name_spares() {
    let with_rule = GOOD.replace(
        "heartbeat = \"500ms\"",
        "heartbeat = \"500ms\"\ncommit = { any = 1, of = [\"lan-1\"], deadline = \"2s\" }",
    );
    let c = parse(&with_rule).unwrap();
    assert_eq!(
        c.cluster.commit,
        CommitRule::Any {
            any: 1,
            of: vec!["lan-1".into()],
            deadline: Duration::from_secs(2)
        }
    );
    let e = err(&with_rule.replace("of = [\"lan-1\"]", "of = [\"watch-1\"]"));
    assert!(e.contains("\"watch-1\" in `of` is not a spare"), "{e}");
    let e = err(&with_rule.replace("any = 1", "any = 2"));
    assert!(e.contains("field \"any\""), "{e}");
}

#[test]
fn missing_secret_says_how_to_create_it() {
    let c = parse(GOOD).unwrap();
    let e = c.read_secret().err().unwrap().to_string();
    assert!(
        e.contains("field \"secret_file\"") && e.contains("spare up"),
        "{e}"
    );
}

#[test]
fn lag_warn_is_cluster_wide_unless_a_spare_sets_its_own() {
    let text = GOOD
        .replace(
            "heartbeat = \"500ms\"",
            "heartbeat = \"500ms\"\nlag_warn = \"30s\"\nnotify_command = 'logger spare'",
        )
        .replace(
            "window = \"16MiB\"",
            "window = \"16MiB\"\nlag_warn = \"2m\"",
        );
    let c = parse(&text).unwrap();
    assert_eq!(c.lag_warn("lan-1"), Duration::from_secs(120));
    assert_eq!(c.cluster.lag_warn, Duration::from_secs(30));
    assert_eq!(c.cluster.notify_command.as_deref(), Some("logger spare"));
    assert_eq!(parse(GOOD).unwrap().lag_warn("lan-1"), DEFAULT_LAG_WARN);
    let e = err(&GOOD.replace(
        "role = \"monitor\"",
        "role = \"monitor\"\nlag_warn = \"5s\"",
    ));
    assert!(
        e.contains("node \"watch-1\": field \"lag_warn\": only applies to spares"),
        "{e}"
    );
}

#[test]
fn a_learned_leader_becomes_the_primary_and_the_file_primary_a_spare() {
    let cell =
        ConfigCell::new(ClusterConfig::parse(Path::new("/etc/spare/cluster.toml"), GOOD).unwrap());
    assert_eq!(cell.get().primary().name, "main");
    assert!(cell.learn(2, "lan-1"));
    let c = cell.get();
    assert_eq!(c.primary().name, "lan-1");
    assert_eq!(
        c.spares().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["main"]
    );
    assert_eq!(
        c.node("watch-1").unwrap().role,
        Role::Monitor,
        "monitors stay monitors"
    );
    assert_eq!(
        cell.file().primary().name,
        "main",
        "the file's roles are kept"
    );
    assert!(!cell.learn(1, "main"), "an older epoch changes nothing");
    assert!(!cell.learn(3, "nobody"), "an unknown node is not taken");
    assert_eq!(cell.get().primary().name, "lan-1");
    // A reload keeps the leader.
    cell.set(ClusterConfig::parse(Path::new("/etc/spare/cluster.toml"), GOOD).unwrap());
    assert_eq!(cell.get().primary().name, "lan-1");
}

#[test]
fn remote_link_settings_are_checked() {
    let wan = GOOD.replace("window = \"16MiB\"", "link = \"wan\"");
    let e = err(&wan);
    assert!(
        e.contains("node \"lan-1\": field \"link\": \"wan\" needs TLS"),
        "{e}"
    );
    let tls = wan.replace(
        "heartbeat = \"500ms\"",
        "heartbeat = \"500ms\"\ntls_dir = \"tls\"",
    );
    let c = parse(&tls).unwrap();
    assert_eq!(c.node("lan-1").unwrap().window, DEFAULT_WAN_WINDOW_BYTES);
    assert_eq!(c.cluster.tls_dir.as_deref(), Some(Path::new("conf/tls")));
    let e = err(&tls.replace("name = \"lan-1\"", "name = \"Lan_1\""));
    assert!(e.contains("field \"name\": with tls_dir"), "{e}");
    let e = err(&GOOD.replace(
        "heartbeat = \"500ms\"",
        "heartbeat = \"500ms\"\nhttp_tls = true",
    ));
    assert!(e.contains("field \"http_tls\": needs tls_dir"), "{e}");
}

#[test]
fn allow_from_takes_networks_and_addresses_and_refuses_the_rest() {
    let ok = GOOD.replace(
        "window = \"16MiB\"",
        "allow_from = [\"203.0.113.0/24\", \"198.51.100.7\", \"::1\"]",
    );
    let c = parse(&ok).unwrap();
    let allow = &c.node("lan-1").unwrap().allow_from;
    assert_eq!(allow.len(), 3);
    assert!(allow[0].contains(&"203.0.113.9".parse::<std::net::IpAddr>().unwrap()));
    assert!(!allow[1].contains(&"198.51.100.8".parse::<std::net::IpAddr>().unwrap()));
    let e = err(&GOOD.replace("window = \"16MiB\"", "allow_from = [\"office\"]"));
    assert!(
        e.contains("field \"allow_from\": \"office\" is not a network"),
        "{e}"
    );
    let e = err(&GOOD.replace("window = \"16MiB\"", "allow_from = \"10.0.0.0/8\""));
    assert!(e.contains("field \"allow_from\": must be a list"), "{e}");
}

#[test]
fn an_api_token_file_must_exist_and_be_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    let text = GOOD.replace(
        "heartbeat = \"500ms\"",
        "heartbeat = \"500ms\"\napi_token_file = \"api.token\"",
    );
    let c = ClusterConfig::parse(&path, &text).unwrap();
    let e = c.read_api_token().unwrap_err().to_string();
    assert!(
        e.contains("api_token_file") && e.contains("head -c 24 /dev/urandom"),
        "{e}"
    );
    std::fs::write(dir.path().join("api.token"), "short\n").unwrap();
    assert!(c
        .read_api_token()
        .unwrap_err()
        .to_string()
        .contains("at least"));
    std::fs::write(dir.path().join("api.token"), "a-long-enough-token-123\n").unwrap();
    assert_eq!(
        c.read_api_token().unwrap().as_deref(),
        Some("a-long-enough-token-123")
    );
}

#[test]
fn client_limits_default_and_are_checked_against_their_bounds() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.cluster.limits, ClientLimits::default());
    let with = |line: &str| GOOD.replacen("[cluster]\n", &format!("[cluster]\n{line}\n"), 1);
    let c = parse(&with(
        "read_time_limit = \"30s\"\nmax_result_bytes = \"64MiB\"\nmax_concurrent_reads = 32",
    ))
    .unwrap();
    assert_eq!(c.cluster.limits.read_time_limit, Duration::from_secs(30));
    assert_eq!(c.cluster.limits.max_result_bytes, 64 << 20);
    assert_eq!(c.cluster.limits.max_concurrent_reads, 32);
    for (line, says) in [
        ("write_time_limit = \"0s\"", "above zero"),
        ("read_time_limit = \"soon\"", "not a duration"),
        ("max_result_bytes = \"2GiB\"", "between 1KiB and 1GiB"),
        ("max_concurrent_reads = 0", "from 1 to 256"),
        ("max_concurrent_reads = \"8\"", "from 1 to 256"),
    ] {
        let e = err(&with(line));
        let field = line.split(' ').next().unwrap();
        assert!(
            e.contains(&format!("field \"{field}\"")) && e.contains(says),
            "{line}: {e}"
        );
    }
}

#[test]
fn verify_every_is_off_by_default_and_not_too_often() {
    assert_eq!(parse(GOOD).unwrap().cluster.verify_every, None);
    let on = GOOD.replace(
        "heartbeat = \"500ms\"",
        "heartbeat = \"500ms\"\nverify_every = \"6h\"",
    );
    assert_eq!(
        parse(&on).unwrap().cluster.verify_every,
        Some(Duration::from_secs(6 * 3600))
    );
    let e = err(&GOOD.replace(
        "heartbeat = \"500ms\"",
        "heartbeat = \"500ms\"\nverify_every = \"1s\"",
    ));
    assert!(
        e.contains("field \"verify_every\": must be at least 10s"),
        "{e}"
    );
}

#[test]
fn a_configuration_where_nobody_votes_is_refused() {
    let none = GOOD
        .replace("role = \"primary\"", "role = \"primary\"\nvote = false")
        .replace("role = \"spare\"", "role = \"spare\"\nvote = false")
        .replace("role = \"monitor\"", "role = \"monitor\"\nvote = false");
    let e = err(&none);
    assert!(e.contains("no node votes"), "{e}");
}
