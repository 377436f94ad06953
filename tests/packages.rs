//! Issue 17: the packages. `packaging/build.sh --debug` builds the .deb and the .rpm; the .deb
//! is installed with `dpkg -i` into a throwaway root (an overlay over / with a tmpfs upper, in
//! a mount and network namespace of its own, so neither the host's files nor its firewall are
//! touched), checked (files, modes, the unit, the man pages, the configuration), removed while
//! an agent runs, purged, and nothing is left; the .rpm is read with `rpm -qp` and its
//! requirements held against what AlmaLinux 9's base repositories provide. And the glibc floor:
//! no symbol version above GLIBC_2.34 (AlmaLinux 9) in the binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::agent::BIN;

/// AlmaLinux 9's glibc.
const GLIBC_FLOOR: (u32, u32) = (2, 34);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no"
        )
    })
}

/// Prints `skipped {test}: {why}` and returns false; panics instead when CI is set.
fn skip(test: &str, why: &str) -> bool {
    assert!(
        !ci(),
        "{test}: {why}; CI is set, so this test must run rather than be skipped"
    );
    eprintln!("skipped {test}: {why}");
    false
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Root and the tools the package test drives (tests/deps.sh --test installs them).
fn can_package(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip(test, "needs root (dpkg -i in a mount namespace)");
    }
    for tool in [
        "dpkg-deb",
        "rpmbuild",
        "rpm",
        "unshare",
        "systemd-analyze",
        "man",
        "strip",
    ] {
        if !has(tool) {
            return skip(test, &format!("needs {tool} (tests/deps.sh --test)"));
        }
    }
    true
}

fn run(command: &mut Command) -> Output {
    let out = command.output().expect("run a command");
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The packages of the debug build, made by the one documented command, in a directory of
/// this run.
fn build_packages() -> (PathBuf, PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join(format!(
        "target/tmp/issue17-packages-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    let started = Instant::now();
    run(Command::new("bash")
        .arg(root.join("packaging/build.sh"))
        .args(["--debug", "--binary", BIN, "--out"])
        .arg(&out));
    eprintln!("packaging/build.sh --debug: {:?}", started.elapsed());
    let deb = out.join(format!("ftagent_{}_amd64.deb", version()));
    let rpm = out.join(format!("ftagent-{}-1.x86_64.rpm", version()));
    for p in [&deb, &rpm] {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "{} was not built", p.display());
        eprintln!("{}: {size} bytes", p.display());
    }
    (out, deb, rpm)
}

/// What the .deb installs, with its mode (directories of the base system left out).
const DEB_FILES: &[(&str, &str)] = &[
    ("/usr/sbin/ftagent", "755"),
    ("/lib/systemd/system/ftagent.service", "644"),
    ("/etc/ftagent", "755"),
    ("/etc/ftagent/ftagent.toml", "600"),
    ("/usr/share/man/man8/ftagent.8.gz", "644"),
    ("/usr/share/man/man5/ftagent.toml.5.gz", "644"),
    ("/usr/share/bash-completion/completions/ftagent", "644"),
    ("/usr/share/zsh/vendor-completions/_ftagent", "644"),
    ("/usr/share/doc/ftagent/copyright", "644"),
    ("/usr/share/doc/ftagent/README.md", "644"),
    ("/usr/share/doc/ftagent/configuration.md", "644"),
];

/// The .deb's life in a throwaway root: install, check, start an agent, remove (which stops it
/// and takes its table away), purge. Runs as `unshare --mount --net`; exits non-zero, saying
/// why, at the first thing wrong; prints the upper layer's leftovers after `LEFT:`.
const DEB_SCRIPT: &str = r##"
set -euo pipefail
fail() { echo "FAIL: $*"; exit 1; }
T=$FTA_DIR DEB=$FTA_DEB
mount --make-rprivate /
mount -t tmpfs -o size=1g tmpfs "$T"
mkdir "$T/upper" "$T/work" "$T/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
R=$T/root
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
mount -t tmpfs tmpfs "$R/run"
in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
# man-db's trigger would index every page of the system: not what is tested here.
rm -f "$R/var/lib/man-db/auto-update"
cp "$DEB" "$R/tmp/ftagent.deb"
[ ! -e "$R/usr/sbin/ftagent" ] || fail "an ftagent is already in /usr/sbin"
# A host that never had ftagent: what an agent run on the host itself left (its state, a
# configuration) is hidden, and the upper layer as it is now is the baseline of what is left.
rm -rf "$R/var/lib/ftagent" "$R/etc/ftagent"
listing() { (cd "$T/upper" && find . -mindepth 1 \( -type f -o -type l -o -type c \) | sort); }
listing >"$T/before"

echo "== dpkg -i"
in_root dpkg -i /tmp/ftagent.deb | tee "$T/install.log"
grep -q "installed, not started" "$T/install.log" || fail "postinst said nothing of starting"
grep -q "ftagent --setup --enable" "$T/install.log" || fail "postinst did not name --setup --enable"
in_root dpkg-query -W -f='${Status}\n' ftagent | grep -qx "install ok installed" || fail "not installed"

echo "== files and modes"
while read -r path mode; do
  [ -e "$R$path" ] || fail "$path missing"
  got=$(stat -c '%a %U %G' "$R$path")
  [ "$got" = "$mode root root" ] || fail "$path: $got, want $mode root root"
done <<EOF
$FTA_FILES
EOF
in_root dpkg-query -W -f='${Conffiles}\n' ftagent | grep -q "/etc/ftagent/ftagent.toml " \
  || fail "/etc/ftagent/ftagent.toml is not a conffile"
grep -qx 'ExecStart=/usr/sbin/ftagent run' "$R/lib/systemd/system/ftagent.service" \
  || fail "the unit does not run /usr/sbin/ftagent"
file_type=$(head -c 4 "$R/usr/sbin/ftagent" | od -An -c | tr -d ' ')
[ "$file_type" = '177ELF' ] || fail "/usr/sbin/ftagent is not an ELF binary"
if readelf -S "$R/usr/sbin/ftagent" | grep -q '\.debug_info'; then fail "the binary is not stripped"; fi
in_root /usr/sbin/ftagent --version | grep -q "^ftagent " || fail "--version"
in_root /usr/sbin/ftagent config check | tee "$T/check.log"
grep -qx "/etc/ftagent/ftagent.toml: ok" "$T/check.log" || fail "the packaged configuration does not load"

echo "== systemd-analyze verify"
in_root systemd-analyze verify /lib/systemd/system/ftagent.service >"$T/verify.log" 2>&1 \
  || { cat "$T/verify.log"; fail "systemd-analyze verify failed"; }
if grep -q ftagent "$T/verify.log"; then cat "$T/verify.log"; fail "systemd-analyze verify warns"; fi

echo "== man pages"
for page in ftagent ftagent.toml; do
  in_root env MANWIDTH=100 MAN_KEEP_FORMATTING= man --warnings -P cat "$page" >"$T/$page.txt" 2>"$T/$page.err" \
    || { cat "$T/$page.err"; fail "man $page"; }
  [ ! -s "$T/$page.err" ] || { cat "$T/$page.err"; fail "man $page warns"; }
  [ "$(wc -l <"$T/$page.txt")" -gt 40 ] || fail "man $page is short"
done
grep -q "ftagent rules flush" "$T/ftagent.txt" || fail "ftagent(8) has no rules flush"
in_root /usr/sbin/ftagent config keys | grep -E '^[a-z_]+\.[a-z0-9_]+$' >"$T/keys"
[ "$(wc -l <"$T/keys")" -gt 50 ] || fail "config keys lists too few keys"
while read -r key; do
  grep -qF -- "$key" "$T/ftagent.toml.txt" || fail "$key is not in man ftagent.toml"
done <"$T/keys"
in_root bash -c 'source /usr/share/bash-completion/completions/ftagent && complete -p ftagent' \
  | grep -q ftagent || fail "the bash completion does not load"

echo "== --setup replaces the packaged file without asking"
in_root /usr/sbin/ftagent --setup --yes --services 22 --safelist none >"$T/setup.log" 2>&1 \
  || { cat "$T/setup.log"; fail "--setup --yes over the packaged file"; }
grep -q '^port = 22' "$R/etc/ftagent/ftagent.toml" || fail "--setup did not write its configuration"
[ ! -e "$R/etc/ftagent/ftagent.toml.bak" ] || fail "--setup kept the packaged file as .bak"
[ "$(stat -c %a "$R/etc/ftagent/ftagent.toml")" = 600 ] || fail "the written configuration is not 0600"
# A replaced configuration and a state directory, as a host in use has them.
echo "# an older one" >"$R/etc/ftagent/ftagent.toml.bak"

echo "== an agent runs; dpkg -r stops it and takes its table away"
in_root /usr/sbin/ftagent run >"$T/agent.log" 2>&1 &
agent=$!
for _ in $(seq 100); do
  in_root /usr/sbin/ftagent status >/dev/null 2>&1 && break
  sleep 0.1
done
in_root /usr/sbin/ftagent status >/dev/null 2>&1 || { cat "$T/agent.log"; fail "the agent does not answer"; }
in_root nft list table inet ftagent >/dev/null 2>&1 || { cat "$T/agent.log"; fail "the agent did not install its table"; }
in_root /usr/sbin/ftagent ban 192.0.2.7 --for 10m >/dev/null || fail "ban through the agent"
in_root dpkg -r ftagent | tee "$T/remove.log"
for _ in $(seq 50); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$agent" 2>/dev/null; then kill "$agent"; fail "the agent still runs after dpkg -r"; fi
wait "$agent" || true
if in_root nft list tables | grep -q ftagent; then fail "table inet ftagent is still there after dpkg -r"; fi
[ ! -e "$R/usr/sbin/ftagent" ] || fail "/usr/sbin/ftagent is still there after dpkg -r"
[ -e "$R/etc/ftagent/ftagent.toml" ] || fail "dpkg -r took the configuration away"
[ -d "$R/var/lib/ftagent" ] || fail "the agent made no state directory"

echo "== dpkg -P"
in_root dpkg -P ftagent
in_root dpkg-query -W ftagent >/dev/null 2>&1 && fail "still known to dpkg after purge"
while read -r path mode; do
  [ ! -e "$R$path" ] || fail "$path is left after purge"
done <<EOF
$FTA_FILES
EOF
for left in /var/lib/ftagent /etc/ftagent /usr/share/doc/ftagent /run/ftagent; do
  [ ! -e "$R$left" ] || fail "$left is left after purge"
done
rm -f "$R/tmp/ftagent.deb"
echo "PURGED"
echo "LEFT:"
listing | comm -13 "$T/before" -
"##;

/// What a dpkg run may leave in the upper layer: its own records and logs, and man's cache.
const DPKG_BOOKKEEPING: &[&str] = &[
    "./var/lib/dpkg/",
    "./var/log/dpkg.log",
    "./var/log/apt/",
    "./var/cache/man/",
    "./var/cache/debconf/",
    "./var/lib/man-db/auto-update",
    "./etc/ld.so.cache",
];

/// Issue 17: the .deb installs, works, is removed with its agent and table, and purges clean.
#[test]
fn issue17_deb_installs_removes_and_purges_cleanly_and_the_rpm_matches() {
    let test = "issue17_deb_installs_removes_and_purges_cleanly_and_the_rpm_matches";
    if !can_package(test) {
        return;
    }
    let started = Instant::now();
    let (out, deb, rpm) = build_packages();

    // The .deb's own file list: everything the test checks, and nothing unexpected.
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout);
    let listed: BTreeSet<String> = listing
        .lines()
        .filter(|l| !l.ends_with('/'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    for (path, _) in DEB_FILES.iter().filter(|(p, _)| *p != "/etc/ftagent") {
        assert!(
            listed.contains(*path),
            "{path} is not in the .deb:\n{listing}"
        );
    }
    let info = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)).stdout);
    assert!(info.contains("Depends: libc6 (>= 2.34)"), "{info}");
    assert!(info.contains("Suggests: iptables, ipset"), "{info}");
    let depends = info
        .lines()
        .find(|l| l.contains("Depends:"))
        .unwrap_or_default();
    assert!(
        !depends.contains("nftables"),
        "nft is not needed at run time: {depends}"
    );

    let dir = std::env::temp_dir().join(format!("ftagent-pkg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<String> = DEB_FILES.iter().map(|(p, m)| format!("{p} {m}")).collect();
    let ran = Command::new("unshare")
        .args(["--mount", "--net", "--fork", "bash", "-c", DEB_SCRIPT])
        .env("FTA_DIR", &dir)
        .env("FTA_DEB", &deb)
        .env("FTA_FILES", files.join("\n"))
        .stdin(Stdio::null())
        .output()
        .expect("unshare");
    let said = format!("{}{}", text(&ran.stdout), text(&ran.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ran.status.success(),
        "the .deb's life in a throwaway root:\n{said}"
    );
    let left: Vec<&str> = text(&ran.stdout)
        .split_once("\nLEFT:\n")
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .lines()
        .filter(|path| !DPKG_BOOKKEEPING.iter().any(|b| path.starts_with(b)))
        .map(|s| s.to_string().leak() as &str)
        .collect();
    assert!(text(&ran.stdout).contains("\nPURGED\n"), "{said}");
    assert!(left.is_empty(), "left after purge: {left:?}\n{said}");
    eprintln!("{said}");

    check_rpm(&rpm);
    let _ = std::fs::remove_dir_all(&out);
    eprintln!("{test}: {:?} in all", started.elapsed());
}

/// The .rpm's files, configuration, scripts and requirements.
fn check_rpm(rpm: &Path) {
    let query =
        |args: &[&str]| text(&run(Command::new("rpm").arg("-qp").args(args).arg(rpm)).stdout);
    let files: BTreeSet<String> = query(&["-l"]).lines().map(str::to_string).collect();
    for want in [
        "/usr/sbin/ftagent",
        "/usr/lib/systemd/system/ftagent.service",
        "/etc/ftagent/ftagent.toml",
        "/usr/share/man/man8/ftagent.8.gz",
        "/usr/share/man/man5/ftagent.toml.5.gz",
        "/usr/share/bash-completion/completions/ftagent",
        "/usr/share/zsh/site-functions/_ftagent",
        "/usr/share/licenses/ftagent/LICENSE",
        "/usr/share/doc/ftagent/README.md",
        "/usr/share/doc/ftagent/configuration.md",
    ] {
        assert!(files.contains(want), "{want} is not in the .rpm: {files:?}");
    }
    // Modes, and the configuration kept on upgrade: %config(noreplace).
    let modes = query(&[
        "--qf",
        "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
    ]);
    for (mode, flags, path) in [
        ("-rwxr-xr-x", "", "/usr/sbin/ftagent"),
        ("-rw-------", "cn", "/etc/ftagent/ftagent.toml"),
        ("-rw-r--r--", "", "/usr/lib/systemd/system/ftagent.service"),
    ] {
        let line = modes
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} not in\n{modes}"));
        let mut fields = line.split_whitespace();
        assert_eq!(fields.next(), Some(mode), "{line}");
        if !flags.is_empty() {
            assert_eq!(fields.next(), Some(flags), "{line}");
        }
    }
    let scripts = query(&["--scripts"]);
    for want in [
        "installed, not started",
        "ftagent --setup --enable",
        "/usr/sbin/ftagent rules flush",
        "systemctl disable --now ftagent.service",
        "rm -rf /var/lib/ftagent /run/ftagent",
    ] {
        assert!(
            scripts.contains(want),
            "{want:?} not in the scripts:\n{scripts}"
        );
    }
    let suggests = query(&["--suggests"]);
    assert_eq!(
        suggests.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from(["ipset", "iptables"]),
        "{suggests}"
    );
    let requires = query(&["--requires"]);
    let refused: Vec<&str> = requires
        .lines()
        .filter(|r| !almalinux9_provides(r))
        .collect();
    assert!(
        refused.is_empty(),
        "requirements AlmaLinux 9's base repositories do not provide: {refused:?}\n{requires}"
    );
    for want in ["glibc >= 2.34", "systemd", "libc.so.6()(64bit)"] {
        assert!(
            requires.lines().any(|r| r == want),
            "{want} not required:\n{requires}"
        );
    }
}

/// What AlmaLinux 9's BaseOS and AppStream provide (glibc 2.34, GCC 11's libgcc, systemd 252,
/// rpm 4.16), as far as a package of ours may need it. Kept here: no EL9 repository can be
/// reached from the test machines.
fn almalinux9_provides(requirement: &str) -> bool {
    const PLAIN: &[&str] = &[
        "/bin/sh",
        "systemd",
        "glibc >= 2.34",
        "rtld(GNU_HASH)",
        "libc.so.6()(64bit)",
        "libm.so.6()(64bit)",
        "libpthread.so.0()(64bit)",
        "libdl.so.2()(64bit)",
        "librt.so.1()(64bit)",
        "ld-linux-x86-64.so.2()(64bit)",
        "libgcc_s.so.1()(64bit)",
    ];
    /// libgcc_s.so.1's symbol versions in GCC 11.
    const LIBGCC: &[&str] = &[
        "GCC_3.0",
        "GCC_3.3",
        "GCC_3.3.1",
        "GCC_3.4",
        "GCC_3.4.2",
        "GCC_3.4.4",
        "GCC_4.0.0",
        "GCC_4.2.0",
        "GCC_4.3.0",
        "GCC_4.4.0",
        "GCC_4.5.0",
        "GCC_4.6.0",
        "GCC_4.7.0",
        "GCC_4.8.0",
        "GCC_7.0.0",
    ];
    /// rpmlib features rpm 4.16 knows.
    const RPMLIB: &[&str] = &[
        "CompressedFileNames",
        "FileDigests",
        "PayloadFilesHavePrefix",
        "PayloadIsZstd",
        "PayloadIsXz",
        "PayloadIsBzip2",
        "PartialHardlinkSets",
        "ScriptletInterpreterArgs",
        "VersionedDependencies",
        "PayloadIsLzma",
        "RichDependencies",
        "TildeInVersions",
        "CaretInVersions",
        "FileCaps",
    ];
    if PLAIN.contains(&requirement) {
        return true;
    }
    if requirement == format!("config(ftagent) = {}-1", version()) {
        return true;
    }
    if let Some(feature) = requirement.strip_prefix("rpmlib(") {
        return feature
            .split_once(')')
            .is_some_and(|(name, _)| RPMLIB.contains(&name));
    }
    let Some((library, rest)) = requirement.split_once('(') else {
        return false;
    };
    let Some(symbol_version) = rest.strip_suffix(")(64bit)") else {
        return false;
    };
    match library {
        "libc.so.6"
        | "libm.so.6"
        | "libpthread.so.0"
        | "libdl.so.2"
        | "librt.so.1"
        | "ld-linux-x86-64.so.2" => glibc_version(symbol_version).is_some_and(|v| v <= GLIBC_FLOOR),
        "libgcc_s.so.1" => LIBGCC.contains(&symbol_version),
        _ => false,
    }
}

/// `GLIBC_2.34` as (2, 34); `GLIBC_2.2.5` as (2, 2).
fn glibc_version(name: &str) -> Option<(u32, u32)> {
    let mut parts = name.strip_prefix("GLIBC_")?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The symbol versions an ELF64 little-endian binary needs (its .gnu.version_r, SHT_GNU_verneed),
/// each with the library that provides it.
fn needed_versions(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let u16_at = |at: usize| -> Result<usize, String> {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| format!("truncated at {at}"))
    };
    let u32_at = |at: usize| -> Result<usize, String> {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("truncated at {at}"))
    };
    let u64_at = |at: usize| -> Result<usize, String> {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
            .ok_or_else(|| format!("truncated at {at}"))
    };
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a little-endian ELF64 file".into());
    }
    let (shoff, shentsize, shnum) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?);
    // (type, offset, link, info) of section `i`.
    let section = |i: usize| -> Result<(usize, usize, usize, usize), String> {
        let at = shoff + i * shentsize;
        Ok((
            u32_at(at + 4)?,
            u64_at(at + 0x18)?,
            u32_at(at + 0x28)?,
            u32_at(at + 0x2c)?,
        ))
    };
    const SHT_GNU_VERNEED: usize = 0x6fff_fffe;
    let string = |table: usize, at: usize| -> Result<String, String> {
        let start = table + at;
        let bytes = elf.get(start..).ok_or("string out of the file")?;
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string")?;
        Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
    };
    let mut needed = Vec::new();
    for i in 0..shnum {
        let (kind, offset, link, count) = section(i)?;
        if kind != SHT_GNU_VERNEED {
            continue;
        }
        let strings = section(link)?.1;
        let mut entry = offset;
        for _ in 0..count {
            // Elf64_Verneed: vn_version, vn_cnt, vn_file, vn_aux, vn_next.
            let (aux_count, file, aux, next) = (
                u16_at(entry + 2)?,
                u32_at(entry + 4)?,
                u32_at(entry + 8)?,
                u32_at(entry + 12)?,
            );
            let library = string(strings, file)?;
            let mut vernaux = entry + aux;
            for _ in 0..aux_count {
                // Elf64_Vernaux: vna_hash, vna_flags, vna_other, vna_name, vna_next.
                needed.push((library.clone(), string(strings, u32_at(vernaux + 8)?)?));
                vernaux += u32_at(vernaux + 12)?;
            }
            entry += next;
        }
    }
    Ok(needed)
}

/// Issue 17: the binary (the release one too, when built) needs no glibc symbol version above
/// 2.34, AlmaLinux 9's; one binary runs on both distributions. No root needed.
#[test]
fn issue17_glibc_floor_is_2_34() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut binaries = vec![PathBuf::from(BIN)];
    let release = root.join("target/release/ftagent");
    if release.exists() {
        binaries.push(release);
    }
    for binary in binaries {
        let elf = std::fs::read(&binary).unwrap();
        let needed = needed_versions(&elf).unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let glibc: Vec<(String, (u32, u32))> = needed
            .iter()
            .filter_map(|(lib, name)| glibc_version(name).map(|v| (format!("{lib} {name}"), v)))
            .collect();
        assert!(
            glibc.iter().any(|(n, _)| n == "libc.so.6 GLIBC_2.2.5"),
            "{}: the reader found no GLIBC_2.2.5: {needed:?}",
            binary.display()
        );
        let (highest, version) = glibc.iter().max_by_key(|(_, v)| *v).unwrap();
        eprintln!("{}: highest {highest}", binary.display());
        let over: Vec<&String> = glibc
            .iter()
            .filter(|(_, v)| *v > GLIBC_FLOOR)
            .map(|(n, _)| n)
            .collect();
        assert!(
            over.is_empty() && *version <= GLIBC_FLOOR,
            "{}: needs glibc symbols above 2.34 (AlmaLinux 9): {over:?}",
            binary.display()
        );
    }
}

/// The ELF reader agrees with binutils where binutils is installed.
#[test]
fn issue17_the_symbol_version_reader_agrees_with_objdump() {
    if !has("objdump") {
        eprintln!("skipped issue17_the_symbol_version_reader_agrees_with_objdump: no objdump");
        return;
    }
    let out = run(Command::new("objdump").args(["-p", BIN]));
    let dump = text(&out.stdout);
    let from_objdump: BTreeSet<String> = dump
        .split_once("Version References:")
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim_start().starts_with("0x"))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_string)
        .collect();
    let ours: BTreeSet<String> = needed_versions(&std::fs::read(BIN).unwrap())
        .unwrap()
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    assert!(!ours.is_empty());
    assert_eq!(ours, from_objdump, "{dump}");
}
