//! The real binary's handling of bad input: one clear line naming the problem, exit status 2,
//! nothing touched. Runs without root.

use std::process::{Command, Output};

fn ftagent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ftagent"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run ftagent")
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ftagent-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Issue 2: `config check` on a file with a wrong key prints file:line and exits 2.
#[test]
fn issue2_config_check_names_file_line_and_key() {
    let path = temp_file(
        "wrong-key.toml",
        "[agent]\ntick = \"100ms\"\ntik = \"1s\"\n",
    );
    let out = ftagent(&["config", "check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let expected = format!("{}:3:1: agent.tik:", path.display());
    assert!(
        stderr.contains(&expected),
        "want {expected:?} in {stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
}

#[test]
fn issue2_config_check_accepts_a_good_file_and_rejects_bad_values() {
    let good = temp_file(
        "good.toml",
        "[[service]]\nport = \"8000-8100\"\nproto = \"udp\"\n",
    );
    let out = ftagent(&["config", "check", "-c", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let bad = temp_file("bad.toml", "[mitigation]\nban_duration = \"10 parsecs\"\n");
    let out = ftagent(&["config", "check", "-c", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(":2:") && stderr.contains("mitigation.ban_duration"),
        "{stderr}"
    );

    let missing = ftagent(&["config", "check", "-c", "/nonexistent/ftagent.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/ftagent.toml"));
}

#[test]
fn issue2_unknown_flags_and_bad_arguments_exit_2() {
    for args in [
        &["--frobnicate"][..],
        &["rules", "dump", "--bogus"],
        &["ban", "10.0.0.1", "--for", "soon"],
        &["nosuchcommand"],
    ] {
        let out = ftagent(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let out = ftagent(&["ban", "10.0.0.1/24"]);
    assert_eq!(out.status.code(), Some(2), "host bits set: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("host bits"));
}

#[test]
fn issue2_version_and_help_exit_0() {
    let out = ftagent(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ftagent "));
    let out = ftagent(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "rules", "config", "ban", "unban"] {
        assert!(help.contains(word), "{word} missing from --help: {help}");
    }
}

/// Issue 15: `lift` names what it cannot lift before it asks anyone; without a daemon there is
/// nothing to lift.
#[test]
fn issue15_lift_checks_its_measure_and_needs_a_daemon() {
    let out = ftagent(&["lift", "1-1", "limit"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("limit_port"),
        "the measures are listed: {stderr}"
    );
    let config = temp_file(
        "lift.toml",
        "[agent]\ncontrol_socket = \"/nonexistent/ftagent.sock\"\n",
    );
    let out = ftagent(&["-c", config.to_str().unwrap(), "lift", "1-1", "synproxy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no ftagent is running"), "{stderr}");
}

/// `ftagent config defaults` prints a configuration that loads as it is, and `config keys`
/// names every key the defaults set (both come from the config's descriptors).
#[test]
fn issue16_config_defaults_load_and_config_keys_lists_every_key() {
    let defaults = ftagent(&["config", "defaults"]);
    assert!(defaults.status.success());
    let text = String::from_utf8(defaults.stdout).unwrap();
    let path = temp_file("defaults.toml", &text);
    let check = ftagent(&["-c", path.to_str().unwrap(), "config", "check"]);
    assert!(
        check.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
    let keys = ftagent(&["config", "keys"]);
    assert!(keys.status.success());
    let keys = String::from_utf8(keys.stdout).unwrap();
    let mut section = "";
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            section = name;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if let Some((key, _)) = line.split_once(" = ") {
            let name = format!("{section}.{key}");
            assert!(
                keys.lines().any(|l| l == name),
                "{name} is not in `config keys`"
            );
        }
    }
}

/// A reader that went away (`ftagent config keys | head -1`) ends the command quietly with 0,
/// as for any filter, instead of a panic on "failed printing to stdout" (found while packaging
/// for issue 17).
#[test]
fn issue17_a_closed_stdout_is_no_panic() {
    let file = temp_file("closed-stdout.toml", "");
    let file = file.to_str().expect("a UTF-8 path");
    for args in [
        &["config", "keys"][..],
        &["config", "defaults"],
        &["config", "check", "--config", file],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_ftagent"))
            .args(args)
            .stdout(writer)
            .output()
            .expect("ftagent runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
