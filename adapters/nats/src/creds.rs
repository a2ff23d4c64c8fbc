//! A `.creds` file, read for what the client does not tell: when its user JWT expires. The
//! server answers an expired JWT with a bare "authorization violation"; read here, the file
//! is refused with the reason and the time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;

/// When the first JWT of a `.creds` file (the user's, between `-----BEGIN NATS USER JWT-----`
/// and its end line) expires; `None` when it does not, or when the file holds none that can be
/// read (the client says what is wrong with it).
pub(crate) fn expires(contents: &str) -> Option<SystemTime> {
    let mut lines = contents.lines().map(str::trim);
    lines.find(|l| l.starts_with("---") && l.contains("BEGIN"))?;
    let jwt = lines.find(|l| !l.is_empty())?;
    let claims = jwt.split('.').nth(1)?;
    let claims = BASE64URL_NOPAD
        .decode(claims.trim_end_matches('=').as_bytes())
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    let exp = claims.get("exp")?.as_u64().filter(|&exp| exp > 0)?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(claims: &str) -> String {
        let jwt = format!(
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.{}.c2ln",
            BASE64URL_NOPAD.encode(claims.as_bytes())
        );
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\nSUAFAKE\n------END USER NKEY SEED------\n"
        )
    }

    #[test]
    fn the_user_jwts_expiry_is_read_from_its_claims() {
        assert_eq!(
            expires(&creds(
                r#"{"exp":1700000000,"sub":"U","nats":{"type":"user"}}"#
            )),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(expires(&creds(r#"{"sub":"U"}"#)), None, "no exp");
        assert_eq!(expires(&creds(r#"{"exp":0}"#)), None, "0 is none");
        assert_eq!(expires(&creds("not json")), None);
        assert_eq!(expires("SUAFAKE\n"), None, "no JWT block");
        assert_eq!(expires(""), None);
    }
}
