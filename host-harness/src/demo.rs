//! `serve --demo`: ready-made requests for a demo clinic, and a walk-through a newcomer can paste.
//! Users belong to the identity provider, not to mfa-step, so the "seed" is what an IdP would send:
//! login contexts for three demo users of the `demo-clinic` organization. The same users sign in
//! through the hosted prompt from the demo identity provider's page ([`crate::demo_idp`]).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;

fn context(user: &str, roles: &[&str]) -> serde_json::Value {
    json!({
        "user_id": user,
        "org_id": "demo-clinic",
        "email": format!("{user}@demo-clinic.example"),
        "roles": roles,
        "locale": "en",
        "device": {
            "ip": "127.0.0.1",
            "traits": { "user_agent": "curl (mfa-step demo)", "browser_family": "curl", "platform": "Linux" }
        }
    })
}

/// Writes `<data_dir>/demo/<user>.json` (a login context) and `<user>-begin.json` (a begin request)
/// for each demo user, and returns the walk-through.
///
/// # Errors
/// The files cannot be written.
pub fn seed(data_dir: &Path, listen: SocketAddr) -> Result<String> {
    let dir = data_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let users = [
        ("dr-demo", &["provider"][..]),
        ("coach-demo", &["coach"][..]),
        ("admin-demo", &["org-admin"][..]),
    ];
    for (user, roles) in users {
        let ctx = context(user, roles);
        std::fs::write(
            dir.join(format!("{user}.json")),
            serde_json::to_vec_pretty(&ctx)?,
        )?;
        std::fs::write(
            dir.join(format!("{user}-begin.json")),
            serde_json::to_vec_pretty(&json!({ "context": ctx }))?,
        )?;
    }
    let d = data_dir.display();
    // A browser cannot go to 0.0.0.0 or [::]: on those, the demo is at 127.0.0.1.
    let browse = if listen.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
    } else {
        listen
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Demo clinic seeded: login contexts for dr-demo, coach-demo, admin-demo in {d}/demo/"
    );
    let _ = writeln!(
        s,
        "Open http://{browse}/demo/ in a browser to try the hosted prompt (the code email lands in {d}/outbox/)."
    );
    let _ = writeln!(s, "Or walk the REST flow in another terminal:\n");
    let _ = writeln!(s, "  KEY=$(cat {d}/api.key); URL=http://{listen}");
    let _ = writeln!(
        s,
        "  curl -s -H \"Authorization: Bearer $KEY\" -d @{d}/demo/dr-demo-begin.json $URL/v1/login/begin"
    );
    let _ = writeln!(s, "  CH=...   # the challenge_id from that answer");
    let _ = writeln!(
        s,
        "  curl -s -H \"Authorization: Bearer $KEY\" -d \"{{\\\"context\\\": $(cat {d}/demo/dr-demo.json), \\\"challenge_id\\\": \\\"$CH\\\"}}\" $URL/v1/login/send-code"
    );
    let _ = writeln!(
        s,
        "  cat \"$(ls -t {d}/outbox/*.txt | head -1)\"   # the email, with the code"
    );
    let _ = writeln!(s, "  CODE=...  # the code from the email");
    let _ = writeln!(
        s,
        "  curl -s -H \"Authorization: Bearer $KEY\" -d \"{{\\\"context\\\": $(cat {d}/demo/dr-demo.json), \\\"challenge_id\\\": \\\"$CH\\\", \\\"code\\\": \\\"$CODE\\\"}}\" $URL/v1/login/verify"
    );
    let _ = writeln!(s, "\nThe same verify again is refused: a code works once.");
    Ok(s)
}
