//! The manual: ftagent(8) from the command line's definition (the one `--help` prints),
//! ftagent.toml(5) from the configuration's key descriptors (the ones `config keys` prints),
//! and the bash and zsh completions. `ftagent package-files DIR` (hidden) writes them, with
//! the commented configuration file, for the packages (packaging/build.sh).

use std::path::{Path, PathBuf};

use clap::{Arg, Command, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::config::{self, Initial, KeyDoc, Reload, DEFAULT_PATH};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes into `dir` (created if needed) `ftagent.8`, `ftagent.toml.5`, the completions
/// `ftagent.bash` and `_ftagent` (zsh), and `ftagent.toml`, the commented configuration.
/// Returns the paths written.
pub fn write_package_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let files = [
        ("ftagent.8", ftagent_8()),
        ("ftagent.toml.5", ftagent_toml_5()),
        ("ftagent.bash", completion(Shell::Bash)),
        ("_ftagent", completion(Shell::Zsh)),
        ("ftagent.toml", config::commented_file()),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// The completion script of `shell`, for the visible commands only.
fn completion(shell: Shell) -> String {
    let full = Cli::command();
    // clap_complete offers hidden subcommands too: a copy of the command leaves them out.
    let mut visible = Command::new("ftagent")
        .version(VERSION)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible, "ftagent", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Prose for roff: backslashes escaped, `code` in bold, and no line that starts with a
/// control character.
fn text(words: &str) -> String {
    let mut out = String::with_capacity(words.len() + 16);
    let mut bold = false;
    for c in words.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            // roff's minus: options and paths copy and paste as typed.
            '-' => out.push_str("\\-"),
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            _ => out.push(c),
        }
    }
    if bold {
        out.push_str("\\fR");
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// A literal (an option, a command, a key) in bold, its hyphens as roff's minus.
fn lit(words: &str) -> String {
    format!("\\fB{}\\fR", words.replace('\\', "\\e").replace('-', "\\-"))
}

/// A placeholder (`PATH`) in italics.
fn var(words: &str) -> String {
    format!("\\fI{}\\fR", words.replace('-', "\\-"))
}

fn help_of(arg: &Arg) -> String {
    arg.get_long_help()
        .or_else(|| arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set() && !matches!(arg.get_id().as_str(), "help" | "version")
}

fn value_name(arg: &Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string)
}

/// `-c, --config PATH`, `ADDRESS`.
fn arg_tag(arg: &Arg) -> String {
    if arg.is_positional() {
        return var(&value_name(arg));
    }
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(lit(&format!("-{short}")));
    }
    if let Some(long) = arg.get_long() {
        names.push(lit(&format!("--{long}")));
    }
    let mut tag = names.join(", ");
    if arg.get_action().takes_values() {
        tag.push(' ');
        tag.push_str(&var(&value_name(arg)));
    }
    tag
}

/// `[ADDRESS] [--for DURATION]`: a command's arguments in a synopsis.
fn usage(command: &Command) -> String {
    let mut parts = Vec::new();
    for arg in command
        .get_arguments()
        .filter(|a| shown(a) && !a.is_global_set())
    {
        let part = if arg.is_positional() {
            var(&value_name(arg))
        } else {
            let long = arg.get_long().map_or_else(
                || format!("-{}", arg.get_short().unwrap_or('?')),
                |l| format!("--{l}"),
            );
            if arg.get_action().takes_values() {
                format!("{} {}", lit(&long), var(&value_name(arg)))
            } else {
                lit(&long)
            }
        };
        parts.push(if arg.is_required_set() {
            part
        } else {
            format!("[{part}]")
        });
    }
    parts.join(" ")
}

/// `.TP` entries for a command's own arguments.
fn options(command: &Command, out: &mut String) {
    for arg in command.get_arguments().filter(|a| shown(a)) {
        out.push_str(&format!(".TP\n{}\n{}\n", arg_tag(arg), text(&help_of(arg))));
    }
}

/// The visible subcommands (clap's own `help` left out).
fn commands(command: &Command) -> impl Iterator<Item = &Command> {
    command
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
}

fn about(command: &Command) -> String {
    command
        .get_long_about()
        .or_else(|| command.get_about())
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// ftagent(8): every option and command as `--help` and each command's `--help` give them.
pub(crate) fn ftagent_8() -> String {
    let mut cli = Cli::command();
    cli.build();
    let mut out = format!(
        ".TH FTAGENT 8 \"\" \"ftagent {VERSION}\" \"System Administration\"\n\
         .SH NAME\n\
         ftagent \\- nftables\\-native DDoS detection and mitigation sidecar\n\
         .SH SYNOPSIS\n\
         {} [{}] {} [{}]\n.br\n\
         {} [{}] {} [{}]\n.br\n\
         {} [{}] {} [{}]\n",
        lit("ftagent"),
        var("OPTIONS"),
        var("COMMAND"),
        var("ARGS"),
        lit("ftagent"),
        lit("-c PATH"),
        lit("--setup"),
        var("SETUP-OPTIONS"),
        lit("ftagent"),
        lit("-c PATH"),
        lit("--install-service"),
        var("SETUP-OPTIONS"),
    );
    out.push_str(".SH DESCRIPTION\n");
    out.push_str(&text(DESCRIPTION));
    out.push_str("\n.SH OPTIONS\n");
    options(&cli, &mut out);
    out.push_str(".TP\n");
    out.push_str(&format!("{}, {}\nPrint help.\n", lit("-h"), lit("--help")));
    out.push_str(".TP\n");
    out.push_str(&format!(
        "{}, {}\nPrint the version.\n",
        lit("-V"),
        lit("--version")
    ));
    out.push_str(".SH COMMANDS\n");
    for command in commands(&cli) {
        let nested: Vec<&Command> = commands(command).collect();
        let mut entries = vec![(command, format!("ftagent {}", command.get_name()))];
        if !nested.is_empty() {
            entries = nested
                .into_iter()
                .map(|n| {
                    (
                        n,
                        format!("ftagent {} {}", command.get_name(), n.get_name()),
                    )
                })
                .collect();
        }
        for (command, name) in entries {
            out.push_str(&format!(".TP\n{} {}\n", lit(&name), usage(command)));
            out.push_str(&text(&about(command)));
            out.push('\n');
            if command
                .get_arguments()
                .any(|a| shown(a) && !a.is_global_set())
            {
                out.push_str(".RS\n");
                let mut own = String::new();
                for arg in command
                    .get_arguments()
                    .filter(|a| shown(a) && !a.is_global_set())
                {
                    own.push_str(&format!(".TP\n{}\n{}\n", arg_tag(arg), text(&help_of(arg))));
                }
                out.push_str(&own);
                out.push_str(".RE\n");
            }
        }
    }
    out.push_str(&format!(
        ".SH EXIT STATUS\n\
         0 success; 1 the system refused or failed (the message says what); 2 bad input: an \
         unknown flag, an invalid configuration (\\fIfile\\fR:\\fIline\\fR:\\fIcolumn\\fR: \
         \\fIkey\\fR: \\fIproblem\\fR), or missing privileges.\n\
         .SH FILES\n\
         .TP\n{}\n\
         The configuration, see \\fBftagent.toml\\fR(5); without it the embedded defaults apply.\n\
         .TP\n{}\n\
         State kept across restarts (baselines, open incidents, bans).\n\
         .TP\n{}\n\
         The control socket of the running daemon (root only).\n\
         .TP\n{}\n\
         The systemd unit; \\fBftagent \\-\\-setup \\-\\-enable\\fR enables and starts it.\n\
         .SH SEE ALSO\n\
         \\fBftagent.toml\\fR(5), \\fBnft\\fR(8), \\fBsystemctl\\fR(1), \\fBfail2ban\\-client\\fR(1)\n",
        lit(DEFAULT_PATH),
        lit("/var/lib/ftagent/"),
        lit(&config::Config::default().agent.control_socket.to_string_lossy()),
        lit("ftagent.service"),
    ));
    out
}

const DESCRIPTION: &str = "ftagent runs beside Fail2Ban and covers what never reaches a log: UDP \
and SYN floods, DNS/NTP/memcached amplification, HTTP floods of valid requests, Slowloris and \
distributed floods. It learns each service port's normal traffic (EWMA baselines), opens an \
incident when a counter leaves it, classifies the vector and mitigates in its own nft table, \
`table inet ftagent`: bans of the sources with timeouts, aggregate limits, reflector-port \
blocks, the SYN proxy or SYN cookies, all lifted when the incident ends. It never touches \
another tool's table or chain (Fail2Ban's `f2b-*` included) and never flushes the ruleset. \
Installed from a package, the service is not started until `ftagent --setup --enable` has \
written a configuration for this host and enabled the unit.";

/// ftagent.toml(5): every key of every table, as `ftagent config keys` lists them.
pub(crate) fn ftagent_toml_5() -> String {
    let mut out = format!(
        ".TH FTAGENT.TOML 5 \"\" \"ftagent {VERSION}\" \"File Formats\"\n\
         .SH NAME\n\
         ftagent.toml \\- configuration of ftagent(8)\n\
         .SH SYNOPSIS\n\
         {}\n\
         .SH DESCRIPTION\n",
        lit(DEFAULT_PATH)
    );
    out.push_str(&text(FORMAT));
    out.push_str("\n.SH KEYS\n");
    let mut section = "";
    for key in config::all_keys() {
        let table = key.name.split_once('.').map_or(key.name, |(s, _)| s);
        if table != section {
            section = table;
            let header = match table {
                "service" | "webhook" => format!("[[{table}]]"),
                _ => format!("[{table}]"),
            };
            out.push_str(&format!(".SS {header}\n"));
        }
        out.push_str(&key_entry(&key));
    }
    out.push_str(&format!(
        ".SH EXAMPLE\n\
         .nf\n\
         [[service]]\n\
         port = 22\n\
         \n\
         [[service]]\n\
         port = 443\n\
         \n\
         [safelist]\n\
         cidrs = [\"203.0.113.7\", \"2001:db8::/48\"]\n\
         \n\
         [mitigation]\n\
         mode = \"monitor\"\n\
         .fi\n\
         .SH FILES\n\
         .TP\n{}\n\
         The default path; \\fB\\-c\\fR \\fIPATH\\fR names another.\n\
         .SH SEE ALSO\n\
         \\fBftagent\\fR(8)\n",
        lit(DEFAULT_PATH)
    ));
    out
}

const FORMAT: &str = "TOML. Every key has an embedded default, so no file is needed; a package \
installs one in which every key is commented out at its default, and `ftagent --setup` writes \
one made for this host. Durations are humane (`\"30s\"`, `\"10m\"`). An invalid file is \
refused whole with `file:line:column: key: problem` (`ftagent config check` shows it without \
touching the system); an unknown key is an error that names the closest known one. SIGHUP \
(`systemctl reload ftagent`) reloads the file as a diff: keys marked \"applied at the next \
start\" keep their running value until a restart, and the reload names them.";

fn key_entry(key: &KeyDoc) -> String {
    let default = match key.default {
        Initial::Toml(value) => format!("default {}", lit(value)),
        Initial::Unset(words) => format!("not set by default: {}", text(words)),
        Initial::Required => "required".to_string(),
    };
    let reload = match key.reload {
        Reload::Live => "SIGHUP applies it",
        Reload::Restart | Reload::RestartSection => "applied at the next start",
    };
    format!(
        ".TP\n{}\n\\fI{}\\fR, {}; {default}; {reload}.\n.br\n{}\n",
        lit(key.name),
        text(key.kind),
        text(&key.allowed),
        text(key.doc)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: every key of docs/configuration.md's tables is in ftagent.toml(5).
    #[test]
    fn every_documented_key_is_in_the_toml_man_page() {
        let docs = include_str!("../docs/configuration.md");
        let page = ftagent_toml_5();
        // The key tables are the generated parts of the file, one a table.
        let mut section = "";
        let mut found = 0;
        for line in docs.lines() {
            if let Some(rest) = line.strip_prefix("<!-- generated: [") {
                section = rest.split(']').next().unwrap_or_default();
                continue;
            }
            if line.starts_with("<!-- end generated") {
                section = "";
            }
            if section.is_empty() {
                continue;
            }
            let Some(leaf) = line
                .strip_prefix("| `")
                .and_then(|rest| rest.split('`').next())
            else {
                continue;
            };
            let name = format!("{section}.{leaf}");
            assert!(
                page.contains(&lit(&name)),
                "{name} is not in ftagent.toml(5)"
            );
            found += 1;
        }
        assert_eq!(
            found,
            config::all_keys().len(),
            "keys found in the docs' tables"
        );
    }

    /// Every command and option of `--help` is in ftagent(8).
    #[test]
    fn every_command_and_option_is_in_ftagent_8() {
        let page = ftagent_8();
        let mut cli = Cli::command();
        cli.build();
        for command in commands(&cli) {
            assert!(
                page.contains(&lit(&format!("ftagent {}", command.get_name())))
                    || commands(command).count() > 0,
                "{}",
                command.get_name()
            );
            for arg in command.get_arguments().filter(|a| shown(a)) {
                assert!(page.contains(&arg_tag(arg)), "{}", arg.get_id());
            }
        }
        for arg in cli.get_arguments().filter(|a| shown(a)) {
            assert!(page.contains(&arg_tag(arg)), "{}", arg.get_id());
        }
        assert!(!page.contains("package-files"));
        // No line starts with a character roff would read as a request by mistake.
        for line in page.lines().chain(ftagent_toml_5().lines()) {
            assert!(
                !line.starts_with('\'')
                    && (!line.starts_with('.')
                        || line.len() <= 3
                        || line.as_bytes()[1].is_ascii_uppercase()),
                "{line:?}"
            );
        }
    }

    /// The completions offer every visible command, and not the hidden one.
    #[test]
    fn completions_offer_the_visible_commands() {
        for shell in [Shell::Bash, Shell::Zsh] {
            let script = completion(shell);
            for word in [
                "rules",
                "flush",
                "ban",
                "--for",
                "--install-service",
                "status",
            ] {
                assert!(script.contains(word), "{shell}: {word}");
            }
            assert!(!script.contains("package-files"), "{shell}");
        }
    }

    #[test]
    fn roff_text_is_escaped() {
        assert_eq!(text("a `b` \\c-d"), "a \\fBb\\fR \\ec\\-d");
        assert_eq!(text(".x"), "\\&.x");
        assert_eq!(lit("--for"), "\\fB\\-\\-for\\fR");
    }
}
