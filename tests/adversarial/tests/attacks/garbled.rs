//! Case 9: garbled values from the store never allow. For each value a decision reads, the store
//! returns bytes that parse as nothing (`adversary-serve`'s garbling hook) while the real value
//! stays stored; `begin` and `verify` must answer a refusal (`unavailable`), never `allow` or a
//! verified code, and where the README says so the audit trail names what was unreadable: `begin`
//! and the admin reads record `access_denied` / `store:unreadable:<kind>`; an unreadable trusted
//! device is no device (`device_challenged` / `store:unreadable:device`). The slots' stamps and the challenge make the step unavailable; for
//! those, a control user who takes the same steps without garbling shows the call would have
//! succeeded.

use serde_json::{Value, json};

use crate::support::*;

/// `begin`'s outcome (or error kind) and rule.
fn begin(s: &Adversary, c: &Value) -> (String, String) {
    let r = s.post("/v1/login/begin", &json!({ "context": c }));
    (
        r.json["outcome"]
            .as_str()
            .map_or_else(|| r.outcome(), str::to_owned),
        r.json["why"]["rule"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The rows of the table the case prints, and what broke.
struct Table {
    broken: Vec<String>,
    rows: Vec<String>,
}

impl Table {
    /// Garbles `prefix`, runs `attack` (its answer's outcome) and checks it is `expected`; when
    /// `record` names one (`"<action> <reason>"`), checks that the call appended it to `org`'s
    /// stream.
    #[allow(
        clippy::too_many_arguments,
        reason = "one row of the table, spelled out"
    )]
    fn row(
        &mut self,
        s: &Adversary,
        kind: &str,
        prefix: &str,
        org: &str,
        call: &str,
        expected: &str,
        record: Option<&str>,
        attack: impl FnOnce() -> String,
    ) {
        let stream = |s: &Adversary| -> Vec<Rec> {
            s.audit().into_iter().filter(|r| r.org == org).collect()
        };
        let before = stream(s).len();
        s.garble(prefix);
        let got = attack();
        s.clear_garbling();
        let new_records: Vec<String> = stream(s)[before..]
            .iter()
            .map(|r| format!("{} {}", r.action, r.reason))
            .collect();
        self.rows.push(format!(
            "{kind:<14} {call:<12} -> {got:<12} records appended: {new_records:?}"
        ));
        if got != expected {
            self.broken.push(format!(
                "{kind}: {call} answered {got}, expected {expected}"
            ));
        }
        if let Some(record) = record
            && !new_records.iter().any(|r| r == record)
        {
            self.broken
                .push(format!("{kind}: no `{record}` record: {new_records:?}"));
        }
    }
}

fn policy(mandate: &str, grace_days: u8) -> Value {
    json!({
        "mandate": mandate,
        "required_roles": [],
        "trust_days": 30,
        "allow_remember_device": true,
        "ipv4_change_prefix": 16,
        "ipv6_change_prefix": 48,
        "enrollment_grace_days": grace_days,
        "enrollment_grace_logins": 0
    })
}

#[test]
fn garbled_values_never_allow_and_are_recorded_where_the_readme_says() {
    let _serial = one_at_a_time();
    let s = Adversary::start("garbled");
    let mut table = Table {
        broken: Vec::new(),
        rows: Vec::new(),
    };
    let outcome = |r: Reply| r.outcome();

    // The org's policy: a mandate makes a scheduler use MFA.
    let org = "garble-mandate";
    let set = s.post(
        "/v1/admin/policy/set",
        &json!({ "actor": admin(org), "org_id": org, "policy": policy("everyone", 0) }),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    let c = ctx(org, "sched-1", &["scheduler"]);
    assert_eq!(begin(&s, &c).1, format!("org:{org}:mandate"));
    table.row(
        &s,
        "policy",
        &format!("v1:policy:{org}"),
        org,
        "begin",
        "unavailable",
        Some("access_denied store:unreadable:policy"),
        || begin(&s, &c).0,
    );
    // An admin's read of it: unavailable, not the platform's default (which could be saved back).
    table.row(
        &s,
        "policy",
        &format!("v1:policy:{org}"),
        org,
        "policy/get",
        "unavailable",
        Some("access_denied store:unreadable:policy"),
        || {
            outcome(s.post(
                "/v1/admin/policy/get",
                &json!({ "actor": admin(org), "org_id": org }),
            ))
        },
    );

    // The platform's roles name the scheduler (and keep the provider, whom later rows use).
    let org = "garble-roles";
    let root = actor("platform", "root", &["platform-admin"]);
    let set = s.post(
        "/v1/admin/platform-roles/set",
        &json!({ "actor": root, "roles": ["platform-admin", "provider", "scheduler"] }),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    let c = ctx(org, "sched-2", &["scheduler"]);
    assert_eq!(begin(&s, &c).1, "role:scheduler");
    table.row(
        &s,
        "platform-roles",
        "v1:platform-roles",
        org,
        "begin",
        "unavailable",
        Some("access_denied store:unreadable:platform-roles"),
        || begin(&s, &c).0,
    );

    // The grace period is over; a garbled start must not start it again.
    let org = "garble-grace";
    let set = s.post(
        "/v1/admin/policy/set",
        &json!({ "actor": admin(org), "org_id": org, "policy": policy("everyone", 3) }),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    let c = ctx(org, "dr-grace", &["provider"]);
    assert_eq!(
        begin(&s, &c),
        ("allow".to_owned(), "enrollment:grace".to_owned())
    );
    s.advance(4 * 86_400);
    assert_eq!(begin(&s, &c).0, "challenge");
    table.row(
        &s,
        "grace-start",
        &format!("v1:grace-start:{org}:dr-grace"),
        org,
        "begin",
        "unavailable",
        Some("access_denied store:unreadable:grace-start"),
        || begin(&s, &c).0,
    );

    // A receptionist who opted in: the confirmed address is what makes MFA apply.
    let org = "garble-optin";
    let c = ctx(org, "desk-1", &["receptionist"]);
    let enrolled = s.post("/v1/login/enroll", &json!({ "context": c }));
    assert_eq!(enrolled.status, 200, "{}", enrolled.text);
    let id = enrolled.json["challenge_id"].as_str().unwrap().to_owned();
    assert_eq!(s.send(&c, &id).status, 200);
    assert_eq!(
        s.verify(&c, &id, &s.code(&email("desk-1")), false).status,
        200
    );
    assert_eq!(begin(&s, &c).1, "user:opted-in");
    table.row(
        &s,
        "enrollment",
        &format!("v1:enrollment:{org}:desk-1"),
        org,
        "begin",
        "unavailable",
        Some("access_denied store:unreadable:enrollment"),
        || begin(&s, &c).0,
    );

    // A trusted browser: an unreadable record is no device, so a code is asked.
    let org = ORG;
    let c = ctx(org, "dr-device", &["provider"]);
    let (_, cookie) = s.trust(&c);
    s.advance(60);
    let trusted = with_cookie(&c, &cookie);
    table.row(
        &s,
        "device",
        &format!("v1:device:{org}:dr-device:"),
        org,
        "begin",
        "challenge",
        Some("device_challenged store:unreadable:device"),
        || begin(&s, &trusted).0,
    );

    // The challenge: the right code is not accepted against a value that does not parse.
    let c = ctx(org, "dr-challenge", &["provider"]);
    let (id, code) = s.live_code(&c);
    table.row(
        &s,
        "challenge",
        &format!("v1:challenge:{org}:dr-challenge"),
        org,
        "verify",
        "unavailable",
        None,
        || outcome(s.verify(&c, &id, &code, false)),
    );
    table.row(
        &s,
        "challenge",
        &format!("v1:challenge:{org}:dr-challenge"),
        org,
        "send-code",
        "unavailable",
        None,
        || outcome(s.send(&c, &id)),
    );
    let after = s.verify(&c, &id, &code, false);
    table.rows.push(format!(
        "{:<14} {:<12} -> {} (not garbled: the code was right)",
        "challenge",
        "verify",
        after.outcome()
    ));
    if after.status != 200 {
        table.broken.push(format!(
            "challenge: the right code after the garbling: {}",
            after.text
        ));
    }

    // The send slots' stamps: the 4th send in a window is judged on the 1st one's stamp.
    // `dr-sends-control` takes the same steps ungarbled: its 4th send goes out.
    let mut ids = Vec::new();
    for user in ["dr-sends", "dr-sends-control"] {
        let c = ctx(org, user, &["provider"]);
        let (id, _) = s.challenge(&c);
        for _ in 0..3 {
            assert_eq!(s.send(&c, &id).status, 200);
        }
        ids.push(id);
    }
    s.advance(301);
    for ((user, garbled), id) in [("dr-sends", true), ("dr-sends-control", false)]
        .into_iter()
        .zip(&ids)
    {
        let c = ctx(org, user, &["provider"]);
        let mailed = s.mail(&email(user)).len();
        let expected = if garbled { "unavailable" } else { "ok" };
        let prefix = if garbled {
            format!("v1:send-at:{org}:{user}:")
        } else {
            "v1:no-such-key".to_owned()
        };
        table.row(
            &s,
            "send-at",
            &prefix,
            org,
            "send-code",
            expected,
            None,
            || outcome(s.send(&c, id)),
        );
        let sent = s.mail(&email(user)).len() - mailed;
        if garbled && sent != 0 {
            table
                .broken
                .push(format!("send-at: {sent} emails sent on a garbled stamp"));
        }
    }

    // The guess slots' stamps: after 5 wrong codes, the 6th try is judged on the 5th's stamp.
    // `dr-guess-control` takes the same steps ungarbled: its right code is accepted.
    let mut live = Vec::new();
    for user in ["dr-guess", "dr-guess-control"] {
        let c = ctx(org, user, &["provider"]);
        let (id, code) = s.live_code(&c);
        for _ in 0..5 {
            assert_eq!(
                s.verify(&c, &id, &wrong(&code), false).kind(),
                Some("rejected")
            );
        }
        live.push((c, id));
    }
    s.advance(31);
    for ((c, id), garbled) in live.iter().zip([true, false]) {
        let user = c["user_id"].as_str().unwrap();
        assert_eq!(
            s.send(c, id).status,
            200,
            "a new code once the last one is spent"
        );
        let code = s.code(&email(user));
        let expected = if garbled { "unavailable" } else { "ok" };
        let prefix = if garbled {
            format!("v1:guess-at:{org}:{user}:")
        } else {
            "v1:no-such-key".to_owned()
        };
        table.row(
            &s,
            "guess-at",
            &prefix,
            org,
            "verify",
            expected,
            None,
            || outcome(s.verify(c, id, &code, false)),
        );
    }

    // The fault switches: a store that cannot be read, an audit sink that refuses.
    let c = ctx(org, "dr-faults", &["provider"]);
    let (id, code) = s.live_code(&c);
    s.faults("store_reads=1");
    let read_fault = (begin(&s, &c).0, s.verify(&c, &id, &code, false).outcome());
    s.clear_faults();
    s.faults("audit=1");
    let audit_fault = s.verify(&c, &id, &code, false).outcome();
    s.clear_faults();
    let cleared = s.verify(&c, &id, &code, false).outcome();
    table.rows.push(format!(
        "{:<14} store reads failing: begin -> {}, verify -> {}; audit failing: verify -> {audit_fault}; cleared: verify -> {cleared}",
        "faults", read_fault.0, read_fault.1
    ));
    if read_fault != ("unavailable".to_owned(), "unavailable".to_owned())
        || audit_fault != "unavailable"
        || cleared != "ok"
    {
        table.broken.push(format!(
            "faults: reads {read_fault:?}, audit {audit_fault}, then {cleared}"
        ));
    }

    eprintln!(
        "[garbled] what each call answered with the value garbled:\n  {}",
        table.rows.join("\n  ")
    );
    let allowed = s
        .audit()
        .iter()
        .filter(|r| r.reason.starts_with("store:unreadable:"))
        .count();
    eprintln!("[garbled] store:unreadable records in all: {allowed}");
    s.verify_log();
    assert!(table.broken.is_empty(), "{:#?}", table.broken);
}
