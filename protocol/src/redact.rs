//! Keeping credentials out of what is printed and reported.
//!
//! A URL may carry credentials in its userinfo (`https://deploy:TOKEN@host/`,
//! the usual way to give a deploy token to git). Wherever a URL, or a
//! message that may quote one, is displayed, logged or sent to the reporter,
//! it goes through [`redact_urls`] first: the userinfo becomes `***`. The
//! URL used for the request itself keeps its credentials.

use std::borrow::Cow;

/// `text` with the userinfo of every URL in it (`scheme://user:pass@host…`)
/// replaced by `***`: `https://***@host/fleet.git`. Text without such a
/// URL is returned as it is, without copying.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut done = 0;
    let mut search = 0;
    while let Some(i) = text[search..].find("://") {
        let auth_start = search + i + 3;
        let auth_len = text[auth_start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`' | '\\')
                    || c.is_whitespace()
                    || c.is_control()
            })
            .unwrap_or(text.len() - auth_start);
        let authority = &text[auth_start..auth_start + auth_len];
        if let Some(at) = authority.rfind('@') {
            out.push_str(&text[done..auth_start]);
            out.push_str("***");
            done = auth_start + at;
        }
        search = auth_start + auth_len;
    }
    if done == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn strips_userinfo_from_every_url_and_leaves_the_rest() {
        assert_eq!(
            redact_urls("git https://deploy:s3cr%40t@git.example.com:8443/ops/fleet.git: HTTP 401"),
            "git https://***@git.example.com:8443/ops/fleet.git: HTTP 401"
        );
        assert_eq!(
            redact_urls("a http://T@h/x and ssh://git@h2 and \"s3://k:v@b\""),
            "a http://***@h/x and ssh://***@h2 and \"s3://***@b\""
        );
        for plain in [
            "https://host/path?u=a@b",
            "mailto:ops@example.com",
            "nothing here",
            "x://",
            "",
        ] {
            assert!(
                matches!(redact_urls(plain), std::borrow::Cow::Borrowed(_)),
                "{plain}"
            );
        }
    }
}
