//! The hooks are not in the shipped binary. `adversary-serve` (this test crate's) carries a test
//! clock, a garbling and pausing store, fault switches and a mail log, driven from a control API;
//! the release `mfa-step` that ships must carry none of that control surface:
//!
//! - `mfa-step serve --help` lists none of `adversary-serve`'s hook flags, nor any flag about a
//!   clock, a control port, garbling, pausing, faults or hooks;
//! - the binary's bytes hold neither the control API's marker nor any of its route strings, nor
//!   the hook types' names; each of them *is* in `adversary-serve`'s bytes, so the search can see
//!   them when they are there;
//! - every control route asked of a running release `mfa-step serve` answers 404, and so does
//!   every control route asked of `adversary-serve`'s own served port (the control API is only on
//!   its second port).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The flags a `--help` text lists.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| {
            l.split([' ', '<', '='])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn help(bin: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{} {args:?}", bin.display());
    String::from_utf8(out.stdout).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn the_shipped_binary_has_no_hook_flag_route_or_marker_and_answers_404() {
    let _serial = one_at_a_time();
    let shipped = release_bin("mfa-step");
    let adversary = release_bin("adversary-serve");

    // The flags.
    let shipped_flags = flags(&help(&shipped, &["serve", "--help"]));
    let adversary_flags = flags(&help(&adversary, &["--help"]));
    let hook_flags: Vec<&String> = adversary_flags
        .iter()
        .filter(|f| !["data-dir", "listen", "help"].contains(&f.as_str()))
        .collect();
    assert!(
        hook_flags.iter().any(|f| *f == "control"),
        "{adversary_flags:?}"
    );
    let suspicious = [
        "clock", "control", "garble", "pause", "fault", "hook", "adversar",
    ];
    let found: Vec<&String> = shipped_flags
        .iter()
        .filter(|f| hook_flags.contains(f) || suspicious.iter().any(|w| f.contains(w)))
        .collect();
    eprintln!(
        "[shipped] mfa-step serve --help: {} flags, none a hook ({found:?}); adversary-serve's \
         hook flags: {hook_flags:?}",
        shipped_flags.len()
    );
    assert!(shipped_flags.len() >= 10, "{shipped_flags:?}");
    assert!(
        found.is_empty(),
        "hook flags in the shipped binary: {found:?}"
    );
    let subcommands = help(&shipped, &["--help"]);
    assert!(
        suspicious
            .iter()
            .all(|w| !subcommands.to_lowercase().contains(w)),
        "{subcommands}"
    );

    // The bytes, with the route list as the running adversary-serve states it.
    let s = Adversary::start("shipped");
    let index = s.control("GET", "/__adversary/");
    let marker = index["marker"].as_str().unwrap().to_owned();
    let routes: Vec<String> = index["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let mut needles = vec![
        marker.clone(),
        "HookedStore".to_owned(),
        "MailLog".to_owned(),
    ];
    needles.extend(routes.iter().cloned());
    let shipped_bytes = std::fs::read(&shipped).unwrap();
    let adversary_bytes = std::fs::read(&adversary).unwrap();
    let unseen: Vec<&String> = needles
        .iter()
        .filter(|n| !contains(&adversary_bytes, n))
        .collect();
    let leaked: Vec<&String> = needles
        .iter()
        .filter(|n| contains(&shipped_bytes, n))
        .collect();
    eprintln!(
        "[shipped] {} strings (marker {marker:?}, {} routes, the hook types): in adversary-serve \
         ({} MB) {} of them, in mfa-step ({} MB) {}",
        needles.len(),
        routes.len(),
        adversary_bytes.len() >> 20,
        needles.len() - unseen.len(),
        shipped_bytes.len() >> 20,
        leaked.len()
    );
    assert!(
        unseen.is_empty(),
        "the search cannot see these in adversary-serve: {unseen:?}"
    );
    assert!(
        leaked.is_empty(),
        "hook strings in the shipped binary: {leaked:?}"
    );

    // Asked over the wire: the shipped serve, and adversary-serve's served port.
    let dir = TempDir::new("shipped-serve");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(&shipped)
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .env_remove("MFA_STEP_API_KEY")
        .env_remove("MFA_STEP_HMAC_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + HANG;
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "mfa-step serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    let mut wrong = Vec::new();
    for (server, at) in [
        ("mfa-step serve", addr.as_str()),
        ("adversary-serve's served port", s.addr.as_str()),
    ] {
        for route in &routes {
            for (method, query) in [("GET", ""), ("POST", "?seconds=3600&prefix=v1:&op=set")] {
                let r = http(None, at, method, &format!("{route}{query}"), &[], "").unwrap();
                *answers
                    .entry(format!("{server}: {}", r.status))
                    .or_default() += 1;
                if r.status != 404 {
                    wrong.push(format!(
                        "{server}: {method} {route} answered {}: {}",
                        r.status, r.text
                    ));
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("[shipped] control routes asked of the served ports: {answers:?}");
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The served port's clock did not move.
    assert_eq!(s.now(), T0);
}
