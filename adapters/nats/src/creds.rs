//! A `.creds` file: the user JWT and the NKey seed that signs the server's nonce, read again
//! at every connect, as nats.go does, so a file renewed in place (a rotated secret, `nsc
//! generate creds` on a schedule) is used once the old JWT expires and the server closes the
//! connection. Its JWT's expiry is read too: the server answers an expired JWT with a bare
//! "authorization violation", the sidecar with the reason and the time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{Auth, AuthError, ConnectOptions};
use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;
use outrigger_core::Episode;

/// What a `.creds` file holds.
pub(crate) struct Creds {
    jwt: String,
    key: KeyPair,
}

impl Creds {
    /// Reads and parses `file`; the error says what is wrong, without secrets.
    pub(crate) async fn read(file: &Path) -> Result<Self, String> {
        let contents = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| e.to_string())?;
        Self::parse(&contents)
    }

    /// The first two blocks between marker lines (`-----BEGIN NATS USER JWT-----`, ...): the
    /// JWT, then the seed.
    fn parse(contents: &str) -> Result<Self, String> {
        let mut blocks = blocks(contents);
        let jwt = blocks
            .next()
            .ok_or("no user JWT between -----BEGIN NATS USER JWT----- lines")?;
        let seed = blocks
            .next()
            .ok_or("no NKey seed between -----BEGIN USER NKEY SEED----- lines")?;
        let key = KeyPair::from_seed(seed).map_err(|e| format!("the NKey seed: {e}"))?;
        Ok(Self {
            jwt: jwt.to_owned(),
            key,
        })
    }

    /// When the JWT expires, if it says.
    pub(crate) fn expires(&self) -> Option<SystemTime> {
        let claims = self.jwt.split('.').nth(1)?;
        let claims = BASE64URL_NOPAD
            .decode(claims.trim_end_matches('=').as_bytes())
            .ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
        let exp = claims.get("exp")?.as_u64().filter(|&exp| exp > 0)?;
        Some(UNIX_EPOCH + Duration::from_secs(exp))
    }

    /// When the JWT expired, if it has.
    pub(crate) fn expired(&self) -> Option<SystemTime> {
        self.expires().filter(|at| *at <= SystemTime::now())
    }

    /// The JWT and the nonce signed with the seed, for the server's CONNECT.
    fn auth(&self, nonce: &[u8]) -> Result<Auth, AuthError> {
        let signature = self.key.sign(nonce).map_err(AuthError::new)?;
        let mut auth = Auth::new();
        auth.jwt = Some(self.jwt.clone());
        auth.signature = Some(signature);
        Ok(auth)
    }
}

/// The values of the blocks of a decorated file: a line between two marker lines of three
/// dashes or more, as async-nats and nats.go find them.
fn blocks(contents: &str) -> impl Iterator<Item = &str> {
    let marker = |l: &str| l.starts_with("---") && l.ends_with("---");
    let lines: Vec<&str> = contents.lines().map(str::trim).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 2 < lines.len() {
        if marker(lines[i]) && !marker(lines[i + 1]) && marker(lines[i + 2]) {
            found.push(lines[i + 1]);
            i += 3;
        } else {
            i += 1;
        }
    }
    found.into_iter().filter(|v| !v.is_empty())
}

/// Connect options that authenticate with `file`, read again at each connect. A file that
/// cannot be read or holds an expired JWT fails the attempt (the server would refuse it),
/// logged once while it lasts; the client tries again with backoff, reading it again.
pub(crate) fn options(file: PathBuf) -> ConnectOptions {
    let stale = Arc::new(Episode::new(
        "source.nats.credentials_file cannot be used; reading it again at every reconnect \
         until it holds a valid user JWT.",
        "source.nats.credentials_file holds a valid user JWT again.",
    ));
    ConnectOptions::with_auth_callback(move |nonce| {
        authenticate(file.clone(), stale.clone(), nonce)
    })
}

async fn authenticate(
    file: PathBuf,
    stale: Arc<Episode>,
    nonce: Vec<u8>,
) -> Result<Auth, AuthError> {
    let problem = match Creds::read(&file).await {
        Ok(creds) => match creds.expired() {
            None => {
                stale.recovered();
                return creds.auth(&nonce);
            }
            Some(at) => format!(
                "the user JWT expired at {}",
                humantime::format_rfc3339_seconds(at)
            ),
        },
        Err(why) => why,
    };
    stale.failed(&format!("{}: {problem}", file.display()));
    Err(AuthError::new(problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(claims: &str, seed: &str) -> String {
        let jwt = format!(
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.{}.c2ln",
            BASE64URL_NOPAD.encode(claims.as_bytes())
        );
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    #[test]
    fn the_jwt_and_seed_are_read_and_the_expiry_from_the_claims() {
        let seed = KeyPair::new_user().seed().unwrap();
        let c = Creds::parse(&creds(r#"{"exp":1700000000,"sub":"U"}"#, &seed)).unwrap();
        assert!(c.jwt.starts_with("eyJ") && c.jwt.ends_with(".c2ln"));
        assert_eq!(
            c.expires(),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert!(c.expired().is_some(), "2023 is past");
        let never = Creds::parse(&creds(r#"{"sub":"U"}"#, &seed)).unwrap();
        assert_eq!((never.expires(), never.expired()), (None, None));
        let zero = Creds::parse(&creds(r#"{"exp":0}"#, &seed)).unwrap();
        assert_eq!(zero.expires(), None, "0 is none");
        let garbled = Creds::parse(&creds("not json", &seed)).unwrap();
        assert_eq!(garbled.expires(), None, "the server judges it");
    }

    #[test]
    fn a_file_without_both_blocks_is_refused_without_its_secrets() {
        let seed = KeyPair::new_user().seed().unwrap();
        let only_seed = Creds::parse(&format!("{seed}\n")).err().unwrap();
        assert!(only_seed.contains("no user JWT"), "{only_seed}");
        let jwt_only =
            "-----BEGIN NATS USER JWT-----\neyJ.e30.c2ln\n------END NATS USER JWT------\n";
        assert!(Creds::parse(jwt_only)
            .err()
            .unwrap()
            .contains("no NKey seed"));
        let bad_seed = Creds::parse(&creds("{}", "SUAGARBAGE")).err().unwrap();
        assert!(
            bad_seed.contains("seed") && !bad_seed.contains("SUAGARBAGE"),
            "{bad_seed}"
        );
        assert!(Creds::parse("").is_err());
    }
}
