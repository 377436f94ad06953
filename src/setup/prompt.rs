//! The questions `--setup` asks on a terminal: each shows the proposal as its default (Enter
//! accepts it), re-asks on an answer it cannot use, and gives up at the end of the input.
//! Reads and writes through the given streams, so the dialogue is tested with scripted input.

use std::io::{BufRead, Write};

use crate::cli::{parse_safelist_entry, parse_service, SafelistArg, ServiceArg};
use crate::config::Mode;

use super::proposal::{check_services, SafeEntry};
use super::SetupError;

/// How often an unusable answer is asked again before giving up.
const ATTEMPTS: usize = 5;

pub(crate) struct Prompt<'a> {
    input: &'a mut dyn BufRead,
    out: &'a mut dyn Write,
}

impl<'a> Prompt<'a> {
    pub(crate) fn new(input: &'a mut dyn BufRead, out: &'a mut dyn Write) -> Prompt<'a> {
        Prompt { input, out }
    }

    /// Shows `question` and reads one line, trimmed. The end of the input is an error.
    fn line(&mut self, question: &str) -> Result<String, SetupError> {
        let _ = write!(self.out, "{question} ");
        let _ = self.out.flush();
        let mut answer = String::new();
        match self.input.read_line(&mut answer) {
            Ok(0) => Err(SetupError::Input(format!(
                "no answer to {question:?} (end of input): nothing was written"
            ))),
            Ok(_) => Ok(answer.trim().to_string()),
            Err(e) => Err(SetupError::Io {
                what: "reading the answer".into(),
                source: e,
            }),
        }
    }

    /// Asks until `parse` accepts the answer (an empty answer is `default`).
    fn ask<T>(
        &mut self,
        question: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, SetupError> {
        let mut default = Some(default);
        for _ in 0..ATTEMPTS {
            let answer = self.line(question)?;
            if answer.is_empty() {
                if let Some(d) = default.take() {
                    return Ok(d);
                }
            }
            match parse(&answer) {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let _ = writeln!(self.out, "  {e}");
                }
            }
        }
        Err(SetupError::Input(format!(
            "no usable answer to {question:?} after {ATTEMPTS} tries: nothing was written"
        )))
    }

    /// A yes/no question.
    pub(crate) fn confirm(&mut self, question: &str, default: bool) -> Result<bool, SetupError> {
        let hint = if default { "[Y/n]" } else { "[y/N]" };
        self.ask(&format!("{question} {hint}"), default, |a| {
            match a.to_ascii_lowercase().as_str() {
                "y" | "yes" => Ok(true),
                "n" | "no" => Ok(false),
                _ => Err("answer y or n".into()),
            }
        })
    }

    /// The services to protect; `proposed` is the default.
    pub(crate) fn services(
        &mut self,
        proposed: &[ServiceArg],
    ) -> Result<Vec<ServiceArg>, SetupError> {
        let shown = list(proposed.iter().map(|s| format!("{}/{}", s.ports, s.proto)));
        let _ = writeln!(
            self.out,
            "\nServices to protect (Enter accepts; or type a list such as 22,80,443,53/udp,8000-8100):"
        );
        let question = format!("  [{shown}]");
        let default = check_services(proposed).ok();
        for _ in 0..ATTEMPTS {
            let answer = self.line(&question)?;
            let chosen = if answer.is_empty() {
                match &default {
                    Some(d) => return Ok(d.clone()),
                    None => Err("nothing was detected: type the ports".to_string()),
                }
            } else {
                answer
                    .split(',')
                    .map(parse_service)
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|list| check_services(&list))
            };
            match chosen {
                Ok(list) => return Ok(list),
                Err(e) => {
                    let _ = writeln!(self.out, "  {e}");
                }
            }
        }
        Err(SetupError::Input(format!(
            "no usable list of services after {ATTEMPTS} tries: nothing was written"
        )))
    }

    /// The safelist; `proposed` is the default, `none` empties it.
    pub(crate) fn safelist(
        &mut self,
        proposed: &[SafeEntry],
    ) -> Result<Vec<SafeEntry>, SetupError> {
        let _ = writeln!(
            self.out,
            "\nSafelist: addresses never dropped (Enter accepts; or type a list such as\n\
             203.0.113.7,2001:db8::/48, or `none`):"
        );
        for e in proposed {
            let _ = writeln!(self.out, "  {:<40} {}", e.cidr.to_string(), e.why);
        }
        let shown = if proposed.is_empty() {
            "none"
        } else {
            "as listed"
        };
        self.ask(&format!("  [{shown}]"), proposed.to_vec(), |a| {
            safelist_answer(a.split(',').map(parse_safelist_entry))
        })
    }

    /// Mitigate or only monitor.
    pub(crate) fn mode(&mut self) -> Result<Mode, SetupError> {
        let _ = writeln!(
            self.out,
            "\nMode: `mitigate` drops floods; `monitor` only reports what it would do (a cautious start)."
        );
        self.ask("  [mitigate]", Mode::Mitigate, |a| {
            match a.to_ascii_lowercase().as_str() {
                "mitigate" => Ok(Mode::Mitigate),
                "monitor" => Ok(Mode::Monitor),
                _ => Err("answer mitigate or monitor".into()),
            }
        })
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}

/// A safelist given as parsed entries (`--safelist`, or typed): `none` alone empties it.
pub(crate) fn safelist_answer(
    entries: impl Iterator<Item = Result<SafelistArg, String>>,
) -> Result<Vec<SafeEntry>, String> {
    let entries: Vec<SafelistArg> = entries.collect::<Result<_, _>>()?;
    if entries == [SafelistArg::None] {
        return Ok(Vec::new());
    }
    let mut out: Vec<SafeEntry> = Vec::new();
    for e in entries {
        match e {
            SafelistArg::None => return Err("`none` stands alone".into()),
            SafelistArg::Cidr(cidr) if out.iter().any(|o| o.cidr == cidr) => {}
            SafelistArg::Cidr(cidr) => out.push(SafeEntry {
                cidr,
                why: String::new(),
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PortRange, Proto};

    fn run<T>(input: &str, f: impl FnOnce(&mut Prompt) -> T) -> (T, String) {
        let mut input = input.as_bytes();
        let mut out = Vec::new();
        let value = f(&mut Prompt::new(&mut input, &mut out));
        (value, String::from_utf8(out).unwrap())
    }

    fn svc(port: u16, proto: Proto) -> ServiceArg {
        ServiceArg {
            ports: PortRange {
                first: port,
                last: port,
            },
            proto,
        }
    }

    #[test]
    fn enter_accepts_the_proposal() {
        let proposed = [svc(22, Proto::Tcp), svc(53, Proto::Udp)];
        let (got, shown) = run("\n", |p| p.services(&proposed));
        assert_eq!(got.unwrap(), proposed);
        assert!(shown.contains("[22/tcp,53/udp]"), "{shown}");
        let entry = SafeEntry {
            cidr: "192.0.2.1".parse().unwrap(),
            why: "default gateway".into(),
        };
        let (got, shown) = run("\n", |p| p.safelist(std::slice::from_ref(&entry)));
        assert_eq!(got.unwrap(), vec![entry]);
        assert!(shown.contains("default gateway"));
        assert_eq!(run("\n", |p| p.mode()).0.unwrap(), Mode::Mitigate);
        assert!(!run("\n", |p| p.confirm("Go?", false)).0.unwrap());
        assert!(run("\n", |p| p.confirm("Go?", true)).0.unwrap());
    }

    #[test]
    fn a_bad_answer_is_asked_again() {
        let (got, shown) = run("80,70000\n80,80-81\n 443 , 53/udp \n", |p| {
            p.services(&[svc(22, Proto::Tcp)])
        });
        assert_eq!(
            got.unwrap(),
            vec![svc(443, Proto::Tcp), svc(53, Proto::Udp)]
        );
        assert!(shown.contains("\"70000\" is not a port"), "{shown}");
        assert!(shown.contains("overlaps"), "{shown}");
        let (got, _) = run("maybe\nmonitor\n", |p| p.mode());
        assert_eq!(got.unwrap(), Mode::Monitor);
        let (got, _) = run("10.0.0.1/33\nnone\n", |p| p.safelist(&[]));
        assert_eq!(got.unwrap(), vec![]);
        let (got, _) = run("none,10.0.0.1\n10.0.0.0/8, 10.0.0.0/8,2001:db8::1\n", |p| {
            p.safelist(&[])
        });
        assert_eq!(got.unwrap().len(), 2);
        let (got, _) = run("sure\nyes\n", |p| p.confirm("Go?", false));
        assert!(got.unwrap());
    }

    #[test]
    fn nothing_detected_needs_a_typed_answer() {
        let (got, shown) = run("\n22\n", |p| p.services(&[]));
        assert_eq!(got.unwrap(), vec![svc(22, Proto::Tcp)]);
        assert!(shown.contains("type the ports"));
    }

    #[test]
    fn end_of_input_or_endless_nonsense_gives_up() {
        let (got, _) = run("", |p| p.mode());
        assert!(matches!(got, Err(SetupError::Input(m)) if m.contains("end of input")));
        let (got, _) = run("x\nx\nx\nx\nx\nx\n", |p| p.confirm("Go?", true));
        assert!(matches!(got, Err(SetupError::Input(m)) if m.contains("after 5 tries")));
        let (got, _) = run("0\n0\n0\n0\n0\n", |p| p.services(&[]));
        assert!(matches!(got, Err(SetupError::Input(_))));
    }
}
