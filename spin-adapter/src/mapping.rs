//! The adapter's translations, kept free of Spin and WebAssembly so that they are tested on the host.
//!
//! Everything here is a fixed naming or shaping rule; nothing decides anything about MFA.
//!
//! # One key-value store, separate namespaces
//!
//! Spin gives the component one store (`default`) that holds the component's values, its counters
//! and the audit streams. The `store` contract keeps counters apart from values ("a key used with
//! `increment` is never read with `get`", and `list-keys` lists values only), and Spin's SQLite
//! backend reads a counter as an 8-byte integer, failing on anything else. So every stored key
//! carries the prefix of its namespace. No prefix is a prefix of another, so no key of one
//! namespace can equal a key of another:
//!
//! | what | stored under | kind | written through |
//! |---|---|---|---|
//! | a value | `val:<key>` | value | `fermyon:spin/key-value` (`Store::open`) |
//! | a counter | `ctr:<key>` | counter | `wasi:keyvalue/atomics.increment` (never compare-and-swap) |
//! | an audit record (its line) | `audit:<org>:<seq>` | value | `fermyon:spin/key-value` |
//! | who owns an audit position | `audit-claim:<org>:<seq>:<epoch>` | counter | `increment` |
//! | an organization's newest audit record (its `seq`) | `audit-newest:<org>` | value | `set-many`, with the record |
//! | how many records an organization has (adapters before `audit-newest`) | `audit-len:<org>` | counter | `increment` |
//! | an audit position seen claimed but unwritten | `audit-stall:<org>` | value | `fermyon:spin/key-value` |
//! | a reserved audit position its reserver gave up | `audit-void:<org>:<seq>` | value | `fermyon:spin/key-value` |
//! | a user's device index: slot count, slots, marks; its readiness | `list-count:<prefix>`, `list-slot:<prefix><n>`, `list-mark:<key>`, `list-ready` | counter; values | [`crate::listing`] |
//!
//! `<seq>` is zero-padded to 20 digits, so that a lexical scan of one organization's records returns
//! them in sequence order, and so that a key splits back into its parts even when `<org>` holds a
//! colon (`<seq>` and `<epoch>` are the last fields, digits only). How the audit keys make an
//! append-if-linked step without compare-and-swap is in [`crate::audit_stream`].
//!
//! `list-keys` of a user's devices reads that user's index ([`crate::listing`]); any other prefix
//! lists the store's keys, keeps those under `val:<prefix>` and strips `val:`, so counters,
//! audit keys and bookkeeping never show.

use serde::Serialize;

/// Prefix of every value key (`get`, `set`, `delete`, `list-keys`).
pub const VALUE_PREFIX: &str = "val:";
/// Prefix of every counter key (`increment`, `delete`).
pub const COUNTER_PREFIX: &str = "ctr:";
/// Prefix of every audit record key.
pub const AUDIT_PREFIX: &str = "audit:";
/// Prefix of the counters that claim a position in an organization's audit stream.
pub const AUDIT_CLAIM_PREFIX: &str = "audit-claim:";
/// Prefix of the counter of each organization's audit records (written by adapters before
/// `audit-newest`; read where that is absent).
pub const AUDIT_LEN_PREFIX: &str = "audit-len:";
/// Prefix of the value that holds each organization's newest audit record's `seq`.
pub const AUDIT_NEWEST_PREFIX: &str = "audit-newest:";
/// Prefix of the value that records a claimed audit position seen unwritten.
pub const AUDIT_STALL_PREFIX: &str = "audit-stall:";
/// Prefix of the value that marks a reserved audit position its reserver gave up.
pub const AUDIT_VOID_PREFIX: &str = "audit-void:";

/// Prefix of a key's noted expiry (see [`crate::expiring`]).
pub const EXPIRY_PREFIX: &str = "expiry:";
/// Prefix of the counter of keys filed in one bucket of expiries.
pub const EXPIRY_COUNT_PREFIX: &str = "expiry-count:";
/// Prefix of one filed key's slot in a bucket of expiries.
pub const EXPIRY_SLOT_PREFIX: &str = "expiry-slot:";
/// Prefix of the counter that elects one sweeper a minute.
pub const EXPIRY_CLAIM_PREFIX: &str = "expiry-claim:";
/// The first bucket of expiries not yet swept.
pub const EXPIRY_NEXT: &str = "expiry-next";

/// Prefix of the counter of slots in one listed prefix's index (see [`crate::listing`]).
pub const LIST_COUNT_PREFIX: &str = "list-count:";
/// Prefix of one slot of a listed prefix's index: the component key filed in it.
pub const LIST_SLOT_PREFIX: &str = "list-slot:";
/// Prefix of a filed key's mark: its slot, and the expiry its entry is filed with.
pub const LIST_MARK_PREFIX: &str = "list-mark:";
/// Set once the device keys written before the index existed are filed.
pub const LIST_READY: &str = "list-ready";
/// Set once the user keys (`v1:user-seen:…`) written before they were indexed are filed.
pub const LIST_USERS_READY: &str = "list-users-ready";

/// Every namespace's prefix; none is a prefix of another.
pub const PREFIXES: [&str; 18] = [
    VALUE_PREFIX,
    COUNTER_PREFIX,
    AUDIT_PREFIX,
    AUDIT_CLAIM_PREFIX,
    AUDIT_LEN_PREFIX,
    AUDIT_STALL_PREFIX,
    EXPIRY_PREFIX,
    EXPIRY_COUNT_PREFIX,
    EXPIRY_SLOT_PREFIX,
    EXPIRY_CLAIM_PREFIX,
    EXPIRY_NEXT,
    LIST_COUNT_PREFIX,
    LIST_SLOT_PREFIX,
    LIST_MARK_PREFIX,
    LIST_READY,
    LIST_USERS_READY,
    AUDIT_NEWEST_PREFIX,
    AUDIT_VOID_PREFIX,
];

/// The Spin key that holds the component's value `key`.
#[must_use]
pub fn value_key(key: &str) -> String {
    format!("{VALUE_PREFIX}{key}")
}

/// The Spin key that holds the component's counter `key`.
#[must_use]
pub fn counter_key(key: &str) -> String {
    format!("{COUNTER_PREFIX}{key}")
}

/// The Spin key of one audit record: `audit:<org>:<seq>`, `seq` zero-padded to 20 digits (the width
/// of `u64::MAX`), so that keys sort in sequence order.
#[must_use]
pub fn audit_key(org_id: &str, seq: u64) -> String {
    format!("{AUDIT_PREFIX}{org_id}:{seq:020}")
}

/// The organization and position of the audit record stored at `key` ([`audit_key`]'s inverse).
#[must_use]
pub fn audit_key_parts(key: &str) -> Option<(&str, u64)> {
    let (org_id, seq) = key.strip_prefix(AUDIT_PREFIX)?.rsplit_once(':')?;
    Some((org_id, seq.parse().ok()?))
}

/// The counter that claims position `seq` of `org_id`'s audit stream in `epoch`:
/// `audit-claim:<org>:<seq, 20 digits>:<epoch>`. The writer whose increment returns 1 owns it.
#[must_use]
pub fn audit_claim_key(org_id: &str, seq: u64, epoch: u32) -> String {
    format!("{AUDIT_CLAIM_PREFIX}{org_id}:{seq:020}:{epoch}")
}

/// The counter of `org_id`'s appended audit records: `audit-len:<org>`.
#[must_use]
pub fn audit_len_key(org_id: &str) -> String {
    format!("{AUDIT_LEN_PREFIX}{org_id}")
}

/// Where `org_id`'s newest audit record's `seq` is, in decimal: `audit-newest:<org>`.
#[must_use]
pub fn audit_newest_key(org_id: &str) -> String {
    format!("{AUDIT_NEWEST_PREFIX}{org_id}")
}

/// Where a claimed but unwritten position of `org_id`'s audit stream is recorded:
/// `audit-stall:<org>`.
#[must_use]
pub fn audit_stall_key(org_id: &str) -> String {
    format!("{AUDIT_STALL_PREFIX}{org_id}")
}

/// Where a reserved position of `org_id`'s audit stream that its reserver gave up is marked (see
/// [`crate::audit_stream`], "Reserving ahead"): `audit-void:<org>:<seq, 20 digits>`.
#[must_use]
pub fn audit_void_key(org_id: &str, seq: u64) -> String {
    format!("{AUDIT_VOID_PREFIX}{org_id}:{seq:020}")
}

/// A counter's value read with a plain `get` of its key, without writing: Spin's SQLite store keeps
/// `wasi:keyvalue/atomics` counters as 8 little-endian bytes, Redis (`INCRBY`) as decimal text.
/// All-digit bytes are decimal text (8 little-endian bytes all ASCII digits would be a count above
/// 3·10^18). `None` when the bytes are neither: the key was written as something else.
///
/// Reading a counter this way instead of `increment(key, 0)` saves a write: Spin's increment is
/// an upsert, a write transaction (and an fsync) on SQLite even when it adds nothing.
#[must_use]
pub fn decode_counter(bytes: &[u8]) -> Option<i64> {
    if !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_digit() || *b == b'-') {
        return std::str::from_utf8(bytes).ok()?.parse().ok();
    }
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_le_bytes)
}

/// The component's value keys starting with `prefix`, out of all of the store's keys.
pub fn value_keys_with_prefix<I>(all_keys: I, prefix: &str) -> Vec<String>
where
    I: IntoIterator<Item = String>,
{
    all_keys
        .into_iter()
        .filter_map(|stored| {
            stored
                .strip_prefix(VALUE_PREFIX)
                .filter(|key| key.starts_with(prefix))
                .map(str::to_owned)
        })
        .collect()
}

/// The JSON body posted to the mail API: the message exactly as the component rendered it.
///
/// ```json
/// {"to": "d@clinic.example", "sender_name": "Demo Clinic", "subject": "…", "html": "…", "text": "…"}
/// ```
/// `sender_name` is `null` when the component has none. The body carries a one-time code: it is
/// sent to the mail API and nowhere else, never logged, never put in an error.
#[derive(Serialize)]
pub struct MailBody<'a> {
    /// The recipient's address.
    pub to: &'a str,
    /// Display name for the `From` header; the mail API picks the address.
    pub sender_name: Option<&'a str>,
    /// The subject line.
    pub subject: &'a str,
    /// The HTML part.
    pub html: &'a str,
    /// The plain-text part.
    pub text: &'a str,
}

impl MailBody<'_> {
    /// The body as JSON bytes.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings into a Vec cannot fail; an empty body would be refused by
        // the mail API, so this fails closed even if it somehow did.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The `Authorization` header value for a bearer token.
#[must_use]
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The mail API's answer, mapped: any 2xx is accepted, anything else is `Err` with a message that
/// names the status only. The response body is never read into the message (it may echo the
/// request, which holds a one-time code).
///
/// # Errors
/// The status is not 2xx.
pub fn mail_status(status: u16) -> Result<(), String> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the mail API answered HTTP {status}"))
    }
}

/// A Spin variable's value as the component's `config.get` answer. Spin cannot declare a variable
/// without a value (each needs a default or `required = true`), so optional settings are declared
/// with `default = ""`, and the empty string stands for "not set": the component then applies its
/// own default, which therefore lives in one place only.
#[must_use]
pub fn config_value(raw: String) -> Option<String> {
    if raw.is_empty() { None } else { Some(raw) }
}

/// What the Spin host itself says for a setting left unset, where Spin differs from every other
/// host: the client's address is in `spin-client-addr`, which Spin sets on every request (a client
/// cannot forge it), whereas the component's default header is one `serve` overwrites and Spin
/// would pass through from the client.
#[must_use]
pub fn spin_default(name: &str) -> Option<String> {
    (name == "client_ip_header").then(|| "spin-client-addr".to_owned())
}

/// The longest key `store.wit` promises to keep, in bytes (of printable ASCII).
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value `store.wit` promises to keep, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Checks a component key against `store.wit`: at most [`MAX_KEY_BYTES`] bytes of printable ASCII
/// (`0x20..=0x7E`). Spin's stores take longer keys and any byte, so without this a key the
/// contract refuses would be kept (and another host of the same component would refuse it).
///
/// # Errors
/// Names what is wrong (the length, or the offending byte's position), never the key itself.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "invalid key: {} bytes, over the {MAX_KEY_BYTES} the store keeps",
            key.len()
        ));
    }
    match key.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        Some(at) => Err(format!(
            "invalid key: byte {at} is not printable ASCII (0x20 to 0x7E)"
        )),
        None => Ok(()),
    }
}

/// Checks a value against `store.wit`: at most [`MAX_VALUE_BYTES`] bytes.
///
/// # Errors
/// Names the size, never the value.
pub fn check_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "invalid value: {} bytes, over the {MAX_VALUE_BYTES} the store keeps",
            value.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_past_the_contracts_limits_are_refused_without_echoing_them() {
        let longest = "k".repeat(MAX_KEY_BYTES);
        assert_eq!(check_key(&longest), Ok(()));
        assert_eq!(check_key(" !~"), Ok(()));
        let long = check_key(&format!("{longest}k")).err().unwrap_or_default();
        assert!(long.starts_with("invalid key: 513 bytes"), "{long}");
        for bad in ["a\nb", "a\u{7f}", "caf\u{e9}", "tab\there"] {
            let e = check_key(bad).err().unwrap_or_default();
            assert!(e.starts_with("invalid key: byte"), "{e}");
            assert!(!e.contains(bad), "{e}");
        }
        assert_eq!(check_value(&vec![0; MAX_VALUE_BYTES]), Ok(()));
        let big = check_value(&vec![0; MAX_VALUE_BYTES + 1])
            .err()
            .unwrap_or_default();
        assert!(big.starts_with("invalid value: 65537 bytes"), "{big}");
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn values_counters_and_audit_records_never_share_a_key() {
        // The same component key used as a value and as a counter lands on two Spin keys.
        assert_eq!(value_key("v1:failures:acme:u1"), "val:v1:failures:acme:u1");
        assert_eq!(
            counter_key("v1:failures:acme:u1"),
            "ctr:v1:failures:acme:u1"
        );
        // Even a component key that looks like another namespace stays in its own.
        assert_eq!(value_key("ctr:x"), "val:ctr:x");
        assert_eq!(counter_key("audit:acme:1"), "ctr:audit:acme:1");
        assert!(!value_key("audit:acme:1").starts_with(AUDIT_PREFIX));
        assert_eq!(audit_key_parts(&audit_key("acme", 42)), Some(("acme", 42)));
        assert_eq!(audit_key_parts("audit-newest:acme"), None);
        assert_eq!(audit_key_parts("audit:acme:x"), None);
    }

    #[test]
    fn no_namespace_prefix_is_a_prefix_of_another() {
        for (i, a) in PREFIXES.iter().enumerate() {
            for (j, b) in PREFIXES.iter().enumerate() {
                assert!(i == j || !b.starts_with(a), "{a} is a prefix of {b}");
            }
        }
    }

    #[test]
    fn the_audit_keys_of_one_organization_never_share_a_key() {
        let all = [
            audit_key("acme", 1),
            audit_claim_key("acme", 1, 0),
            audit_len_key("acme"),
            audit_stall_key("acme"),
            value_key("acme"),
            counter_key("acme"),
            audit_newest_key("acme"),
            audit_void_key("acme", 1),
        ];
        for (i, key) in all.iter().enumerate() {
            // Each lands in its own namespace, and only there.
            let owners: Vec<&str> = PREFIXES
                .iter()
                .copied()
                .filter(|p| key.starts_with(p))
                .collect();
            assert_eq!(owners, [PREFIXES[[2, 3, 4, 5, 0, 1, 16, 17][i]]], "{key}");
        }
        assert_eq!(audit_len_key("acme"), "audit-len:acme");
        assert_eq!(audit_stall_key("acme"), "audit-stall:acme");
        assert_eq!(audit_newest_key("acme"), "audit-newest:acme");
        // The component cannot reach them: its keys are under `val:` and `ctr:`.
        assert!(!counter_key("audit-len:acme").starts_with(AUDIT_LEN_PREFIX));
    }

    #[test]
    fn claim_keys_name_one_position_and_epoch_even_when_the_organization_holds_a_colon() {
        assert_eq!(
            audit_claim_key("acme", 7, 0),
            "audit-claim:acme:00000000000000000007:0"
        );
        assert_eq!(
            audit_claim_key("acme", u64::MAX, u32::MAX),
            "audit-claim:acme:18446744073709551615:4294967295"
        );
        let mut seen = std::collections::BTreeSet::new();
        for org in [
            "a",
            "a:00000000000000000001",
            "a:1",
            "a:00000000000000000001:0",
        ] {
            for seq in [1, 2, 10] {
                for epoch in [0, 1, 10] {
                    assert!(
                        seen.insert(audit_claim_key(org, seq, epoch)),
                        "{org} {seq} {epoch} collides"
                    );
                }
            }
        }
        for org in ["a", "a:00000000000000000001"] {
            assert!(seen.insert(audit_key(org, 1)));
            assert!(seen.insert(audit_len_key(org)));
            assert!(seen.insert(audit_stall_key(org)));
            assert!(seen.insert(audit_newest_key(org)));
        }
    }

    #[test]
    fn audit_keys_are_zero_padded_to_twenty_digits_and_sort_by_sequence() {
        assert_eq!(audit_key("acme", 1), "audit:acme:00000000000000000001");
        assert_eq!(
            audit_key("acme", u64::MAX),
            "audit:acme:18446744073709551615"
        );
        let mut shuffled = vec![
            audit_key("acme", 10),
            audit_key("acme", 9),
            audit_key("acme", 100),
        ];
        shuffled.sort();
        assert_eq!(
            shuffled,
            vec![
                audit_key("acme", 9),
                audit_key("acme", 10),
                audit_key("acme", 100)
            ]
        );
    }

    #[test]
    fn list_keys_returns_the_component_keys_under_the_prefix_only() {
        let stored = keys(&[
            "val:v1:device:acme:u1:d1",
            "val:v1:device:acme:u1:d2",
            "val:v1:device:acme:u10:d3",
            "val:v1:challenge:acme:u1",
            "ctr:v1:device:acme:u1:counter",
            "audit:acme:00000000000000000001",
            "audit-claim:acme:00000000000000000001:0",
            "audit-len:acme",
            "audit-newest:acme",
            "audit-stall:acme",
            "written-by-someone-else",
        ]);
        let mut found = value_keys_with_prefix(stored, "v1:device:acme:u1:");
        found.sort();
        assert_eq!(
            found,
            keys(&["v1:device:acme:u1:d1", "v1:device:acme:u1:d2"])
        );
    }

    #[test]
    fn list_keys_with_an_empty_prefix_lists_every_value_and_nothing_else() {
        let stored = keys(&[
            "val:a",
            "ctr:a",
            "audit:o:1",
            "audit-claim:o:1:0",
            "audit-len:o",
            "audit-newest:o",
            "audit-stall:o",
            "val:b",
        ]);
        assert_eq!(value_keys_with_prefix(stored, ""), keys(&["a", "b"]));
    }

    #[test]
    fn the_mail_body_is_the_message_as_json_with_a_null_sender_name_when_absent() {
        let body = MailBody {
            to: "d@clinic.example",
            sender_name: None,
            subject: "Your code",
            html: "<p>\"123456\"</p>",
            text: "123456\n",
        };
        let json: serde_json::Value =
            serde_json::from_slice(&body.to_json()).unwrap_or(serde_json::Value::Null);
        assert_eq!(
            json,
            serde_json::json!({
                "to": "d@clinic.example",
                "sender_name": null,
                "subject": "Your code",
                "html": "<p>\"123456\"</p>",
                "text": "123456\n",
            })
        );
        let named = MailBody {
            sender_name: Some("Demo Clinic"),
            ..body
        };
        let json: serde_json::Value =
            serde_json::from_slice(&named.to_json()).unwrap_or(serde_json::Value::Null);
        assert_eq!(json["sender_name"], "Demo Clinic");
    }

    #[test]
    fn counters_read_back_from_either_store_encoding() {
        for n in [0i64, 1, 7, 255, 256, 12_345_678, i64::from(u32::MAX), -3] {
            assert_eq!(decode_counter(&n.to_le_bytes()), Some(n), "sqlite {n}");
            assert_eq!(
                decode_counter(n.to_string().as_bytes()),
                Some(n),
                "redis {n}"
            );
        }
        // Eight digits are decimal text, not little-endian bytes.
        assert_eq!(decode_counter(b"12345678"), Some(12_345_678));
        for not_a_counter in [&b""[..], b"x", b"1.5", b"-", &[0u8; 9]] {
            assert_eq!(decode_counter(not_a_counter), None, "{not_a_counter:?}");
        }
    }

    #[test]
    fn the_token_goes_in_a_bearer_header() {
        assert_eq!(bearer("tok-123"), "Bearer tok-123");
    }

    #[test]
    fn every_2xx_is_accepted_and_anything_else_names_only_the_status() {
        for ok in [200, 201, 202, 204, 299] {
            assert_eq!(mail_status(ok), Ok(()));
        }
        for refused in [100, 199, 300, 301, 400, 401, 403, 422, 429, 500, 503] {
            assert_eq!(
                mail_status(refused),
                Err(format!("the mail API answered HTTP {refused}"))
            );
        }
    }

    #[test]
    fn an_empty_variable_is_an_unset_setting() {
        assert_eq!(config_value(String::new()), None);
        assert_eq!(
            spin_default("client_ip_header").as_deref(),
            Some("spin-client-addr")
        );
        assert_eq!(spin_default("code_ttl_seconds"), None);
        assert_eq!(config_value("600".to_owned()), Some("600".to_owned()));
        // Only the empty string is special: a value of spaces reaches the component, which
        // refuses it as out of bounds rather than silently defaulting.
        assert_eq!(config_value(" ".to_owned()), Some(" ".to_owned()));
    }
}
