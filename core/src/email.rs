//! The code email: subject, HTML part and plain-text part. Every value that did not come from this
//! file is escaped for where it lands. The code never appears in the subject (subjects show on lock
//! screens and in shared-inbox lists); the email carries no link at all, so nothing a link scanner
//! follows can consume or reveal anything. Per-organization branding and languages come with the
//! branding issue; this is the plain, safe default.

use crate::ports::OutgoingMail;
use crate::secret::OtpCode;
use crate::time::Timestamp;

/// Escapes text for HTML element content and double-quoted attributes.
#[must_use]
pub fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Renders the code email for `to`.
#[must_use]
pub fn code_email(
    to: &str,
    org_name: &str,
    code: &OtpCode,
    expires_at: Timestamp,
    ttl_seconds: i64,
) -> OutgoingMail {
    let minutes = (ttl_seconds + 59) / 60;
    let until = expires_at.clock_utc();
    // Header fields must be single lines: the org name is an identifier today, but strip anyway.
    let org_line: String = org_name.chars().filter(|c| !c.is_control()).collect();
    let subject = format!("Your {org_line} verification code");
    let text = format!(
        "Your verification code is:\n\n    {code}\n\n\
         It works once, for {minutes} minutes (until {until}).\n\n\
         If you did not try to sign in to {org_line}, you can ignore this email: nobody can sign in \
         with the code alone. Consider changing your password, and tell your administrator.\n",
        code = code.expose(),
    );
    let org_html = escape_html(&org_line);
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"color-scheme\" content=\"light dark\"><title>{subject_html}</title></head>\
         <body style=\"margin:0;padding:24px;font-family:Arial,Helvetica,sans-serif;\">\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\"><tr><td>\
         <p style=\"font-size:16px;\">Your {org_html} verification code is:</p>\
         <p style=\"font-size:32px;font-weight:bold;letter-spacing:4px;font-family:Consolas,monospace;\">{code}</p>\
         <p style=\"font-size:14px;\">It works once, for {minutes} minutes (until {until}).</p>\
         <p style=\"font-size:13px;\">If you did not try to sign in to {org_html}, you can ignore this email: \
         nobody can sign in with the code alone. Consider changing your password, and tell your administrator.</p>\
         </td></tr></table></body></html>\n",
        subject_html = escape_html(&subject),
        code = code.expose(),
    );
    OutgoingMail {
        to: to.to_owned(),
        sender_name: Some(org_line),
        subject,
        html,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_escaped_and_code_stays_out_of_subject() {
        let code = OtpCode::new("042042".into());
        let mail = code_email("a@b.co", "<script>x</script>\"", &code, Timestamp(600), 600);
        assert!(!mail.html.contains("<script>"));
        assert!(mail.html.contains("&lt;script&gt;x&lt;/script&gt;&quot;"));
        assert!(!mail.subject.contains("042042"));
        assert!(mail.text.contains("042042") && mail.html.contains("042042"));
        assert!(mail.text.contains("10 minutes (until 00:10 UTC)"));
        assert!(!mail.html.contains("href"));
    }
}
