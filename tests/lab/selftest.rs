//! Self-tests of the namespace lab (included from tests/lab/mod.rs as `mod selftest;`):
//! exact arrival counting per source, process guards, and cleanup also on panic.

use super::*;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

fn assert_ns_gone(names: &[String]) {
    let list = netns_list();
    for n in names {
        assert!(
            !list.contains(n),
            "namespace {n} still exists after drop: {list:?}"
        );
    }
}

fn assert_no_root_veth() {
    let out = host(&["ip", "-o", "link", "show"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [VICTIM_IF, ATTACKER_IF] {
        assert!(
            !text.contains(&format!(": {name}@")) && !text.contains(&format!(": {name}:")),
            "lab interface {name} present in the root namespace:\n{text}"
        );
    }
}

fn all_arrivals(lab: &Lab) -> [u64; 4] {
    [
        lab.arrivals(ATTACKER4),
        lab.arrivals(OTHER4),
        lab.arrivals(ATTACKER6),
        lab.arrivals(OTHER6),
    ]
}

#[test]
fn lab_counts_arrivals_exactly_per_source() {
    if !require_root("lab_counts_arrivals_exactly_per_source") {
        return;
    }
    let _serial = serial();
    let names;
    {
        let lab = Lab::new("selftest-count");
        names = vec![
            lab.victim.name().to_string(),
            lab.attacker.name().to_string(),
        ];
        assert!(lab.dir().is_dir());
        lab.count_arrivals();
        assert_eq!(all_arrivals(&lab), [0, 0, 0, 0]);

        lab.ping(ATTACKER4, VICTIM4, 7);
        assert_eq!(all_arrivals(&lab), [7, 0, 0, 0]);

        lab.ping(OTHER4, VICTIM4, 5);
        assert_eq!(all_arrivals(&lab), [7, 5, 0, 0]);

        lab.ping(ATTACKER6, VICTIM6, 9);
        assert_eq!(all_arrivals(&lab), [7, 5, 9, 0]);

        lab.ping(OTHER6, VICTIM6, 3);
        assert_eq!(all_arrivals(&lab), [7, 5, 9, 3]);

        // Replies came back too: the path works both ways.
        let out = lab.attacker.run_ok(&[
            "ping", "-n", "-c", "2", "-i", "0.01", "-W", "1", "-I", ATTACKER4, VICTIM4,
        ]);
        assert!(out.contains("2 received"), "{out}");
        assert_eq!(all_arrivals(&lab), [9, 5, 9, 3]);

        // Non-canonical spelling of a counted address is accepted.
        assert_eq!(lab.arrivals("fd00:250:0:0::1"), 9);
    }
    assert_ns_gone(&names);
    assert_no_root_veth();
}

#[test]
fn lab_counts_nothing_when_dropped_in_prerouting() {
    if !require_root("lab_counts_nothing_when_dropped_in_prerouting") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-drop");
    lab.count_arrivals();
    // A prerouting drop (as the agent would install) hides packets from the input counter.
    let rules = lab.dir().join("drop.nft");
    std::fs::write(
        &rules,
        format!(
            "table inet dropper {{\n chain pre {{\n  type filter hook prerouting priority -300; policy accept;\n  ip saddr {ATTACKER4} drop\n }}\n}}\n"
        ),
    )
    .unwrap();
    lab.victim.run_ok(&["nft", "-f", rules.to_str().unwrap()]);
    lab.ping(ATTACKER4, VICTIM4, 5);
    lab.ping(OTHER4, VICTIM4, 4);
    assert_eq!(all_arrivals(&lab), [0, 4, 0, 0]);
}

#[test]
fn lab_cleans_up_when_test_panics() {
    if !require_root("lab_cleans_up_when_test_panics") {
        return;
    }
    let _serial = serial();
    let names: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let dir: Mutex<Option<PathBuf>> = Mutex::new(None);
    let pid: Mutex<Option<u32>> = Mutex::new(None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new("selftest-panic");
        *names.lock().unwrap() = vec![
            lab.victim.name().to_string(),
            lab.attacker.name().to_string(),
        ];
        *dir.lock().unwrap() = Some(lab.dir().to_path_buf());
        // A long-running process that would keep the namespace alive if not killed;
        // deliberately leaked so only the Lab drop can stop it.
        let p = lab.victim.spawn(&["sleep", "60"]);
        *pid.lock().unwrap() = Some(p.pid());
        std::mem::forget(p);
        assert!(netns_list().contains(&lab.victim.name().to_string()));
        panic!("deliberate panic inside the lab self-test");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    assert_ns_gone(&names.lock().unwrap());
    assert_no_root_veth();
    let dir = dir.lock().unwrap().clone().unwrap();
    assert!(!dir.exists(), "{} still exists", dir.display());
    // The leaked `sleep` was killed by the Lab drop (at most a zombie, never running).
    let pid = pid.lock().unwrap().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "sleep {pid} still alive: {stat}"
    );
    // Reap the zombie so it does not linger for the rest of the test run.
    // SAFETY: waitpid on our own child pid.
    unsafe {
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
    }
}

#[test]
fn lab_proc_guard_captures_output_and_stops() {
    if !require_root("lab_proc_guard_captures_output_and_stops") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("selftest-proc");

    // A short process: output captured to files, exit status reported.
    let p = lab
        .attacker
        .spawn(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]);
    let out = p.finish(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    // It runs inside the namespace: it sees the lab interface.
    let links = lab.victim.run_ok(&["ip", "-o", "link", "show"]);
    assert!(links.contains(VICTIM_IF), "{links}");

    // A long-running process: still running, then stopped by a signal.
    let mut p = lab.victim.spawn(&["sleep", "60"]);
    assert!(p.wait_timeout(Duration::from_millis(200)).is_none());
    assert!(ns_pids(lab.victim.name()).contains(&(p.pid() as libc::pid_t)));
    p.signal(libc::SIGTERM);
    let st = p
        .wait_timeout(Duration::from_secs(5))
        .expect("sleep should exit on SIGTERM");
    assert!(!st.success());

    // Dropping the guard stops a running process.
    let p = lab.victim.spawn(&["sleep", "60"]);
    let pid = p.pid();
    drop(p);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sleep {pid} survived its guard"
    );

    // run() output and failure status.
    let out = lab.victim.run(&["sh", "-c", "echo x; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n");
    let r = catch_unwind(AssertUnwindSafe(|| lab.victim.run_ok(&["false"])));
    assert!(r.is_err());

    // wait_until polls and panics with the description on timeout.
    let mut n = 0;
    wait_until(Duration::from_secs(2), "n reaches 3", || {
        n += 1;
        n >= 3
    });
    let r = catch_unwind(|| wait_until(Duration::from_millis(120), "never", || false));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("never"), "{msg}");
}

#[test]
fn lab_rejects_addresses_outside_the_lab() {
    assert!(catch_unwind(|| assert_lab_addr("10.251.0.1")).is_err());
    assert!(catch_unwind(|| assert_lab_addr("8.8.8.8")).is_err());
    assert!(catch_unwind(|| assert_lab_addr("fd00:251::1")).is_err());
    assert!(catch_unwind(|| assert_lab_addr("fd00:250:0:1::1")).is_err());
    assert!(catch_unwind(|| assert_lab_addr("nonsense")).is_err());
    assert_lab_addr(VICTIM4);
    assert_lab_addr(OTHER6);
}
