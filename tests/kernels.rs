//! Issue 17, the distributions' own kernels: `tests/kernels/run.sh` boots Debian 12's 6.1 and
//! Debian 11's 5.10 (a floor below AlmaLinux 9's 5.14) under QEMU with this machine's root file
//! system and runs one functional scenario with this build's binary on each (docs/kernels.md).
//! Needs root, qemu-system-x86, busybox-static and kmod, and the Debian archive the first time
//! (the kernels are kept under target/kernels/); skipped with the reason otherwise, outside CI.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::agent::BIN;
use crate::lab;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kernels/run.sh");

#[test]
fn issue17_the_scenario_passes_on_debian_12_and_11_kernels() {
    const TEST: &str = "issue17_the_scenario_passes_on_debian_12_and_11_kernels";
    if !lab::require_root(TEST)
        || !lab::require_program(
            TEST,
            "/usr/bin/qemu-system-x86_64",
            "Debian package qemu-system-x86",
        )
        || !lab::require_program(TEST, "/bin/busybox", "Debian package busybox-static")
        || !lab::require_program(TEST, "/sbin/modprobe", "Debian package kmod")
    {
        return;
    }
    // The guest keeps a core busy for minutes: no namespace test's flood runs beside it.
    let _serial = lab::serial();
    let began = Instant::now();
    let out = Command::new("bash")
        .args([SCRIPT, "--binary", BIN])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{TEST}: cannot run {SCRIPT}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Which checks passed on which kernel, for the record (shown with --nocapture).
    for line in stdout.lines() {
        if line.starts_with("===")
            || line.starts_with("PASS")
            || line.starts_with("FAIL")
            || line.starts_with("  ")
        {
            eprintln!("{line}");
        }
    }
    eprintln!("{TEST}: {:.0} s", began.elapsed().as_secs_f64());
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            lab::skip_or_panic(
                TEST,
                &format!("a kernel package could not be fetched:\n{stdout}{stderr}"),
            );
        }
        _ => panic!(
            "{TEST}: {SCRIPT} failed ({}):\n{stdout}\n{stderr}",
            out.status
        ),
    }
}
