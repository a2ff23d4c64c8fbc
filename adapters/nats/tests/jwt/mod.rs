//! NATS JWTs (v2) minted in the test, as `nsc` would: an operator, accounts it signs, users an
//! account signs, and `.creds` files. Only what nats-server reads to trust a user is written;
//! the format is nats-io/jwt's `v2/claims.go`: `base64url(header).base64url(claims).
//! base64url(ed25519 signature of the first two)`, no padding, and `jti` the unpadded base32
//! of the SHA-512/256 of the standard claims (`aud` to `sub`) without `jti`.

use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512_256};

/// Seconds since the epoch, as JWTs count time.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signed JWT: `subject`, issued by `issuer`, named `name`, carrying `nats` (to which the
/// `type` and `version` are added), expiring at `expires` when given.
fn sign(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    kind: &str,
    mut nats: Map<String, Value>,
    expires: Option<i64>,
) -> String {
    // The standard claims in nats-io/jwt's field order (`aud, exp, jti, iat, iss, name, nbf,
    // sub`), which serde_json's sorted maps happen to match once `jti` is left out.
    let mut claims = Map::new();
    if let Some(exp) = expires {
        claims.insert("exp".into(), json!(exp));
    }
    claims.insert("iat".into(), json!(now()));
    claims.insert("iss".into(), json!(issuer.public_key()));
    claims.insert("name".into(), json!(name));
    claims.insert("sub".into(), json!(subject));
    let hash = Sha512_256::digest(serde_json::to_vec(&claims).unwrap());
    claims.insert("jti".into(), json!(BASE32_NOPAD.encode(&hash)));
    nats.insert("type".into(), json!(kind));
    nats.insert("version".into(), json!(2));
    claims.insert("nats".into(), Value::Object(nats));
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(Value::Object(claims).to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("claims are objects"),
    }
}

/// An operator: trusted by the server, signs accounts.
pub struct Operator {
    /// Its identity key.
    pub key: KeyPair,
}

impl Operator {
    /// A new operator key.
    pub fn new() -> Self {
        Self {
            key: KeyPair::new_operator(),
        }
    }

    /// The operator's self-signed JWT, naming `system` its system account.
    pub fn jwt(&self, system: &Account) -> String {
        sign(
            &self.key,
            &self.key.public_key(),
            "outrigger-test",
            "operator",
            object(json!({"system_account": system.key.public_key()})),
            None,
        )
    }

    /// An account signed by this operator; with JetStream when `jetstream` (the system
    /// account may not have it).
    pub fn account(&self, name: &str, jetstream: bool) -> Account {
        Account::new(&self.key, name, jetstream)
    }
}

/// An account: signs users; its JWT is what the server's resolver holds.
pub struct Account {
    /// Its identity key.
    pub key: KeyPair,
    /// Its JWT, signed by the operator.
    pub jwt: String,
}

impl Account {
    /// An account signed by `operator`, without limits (as `nsc add account` makes one), with
    /// JetStream unlimited when `jetstream`.
    pub fn new(operator: &KeyPair, name: &str, jetstream: bool) -> Self {
        Self::with_revocations(operator, KeyPair::new_account(), name, jetstream, &[])
    }

    /// The same account, signed again with its `revoked` users (their JWTs issued up to the
    /// given time are refused).
    pub fn revoking(self, operator: &KeyPair, name: &str, revoked: &[(&User, i64)]) -> Self {
        Self::with_revocations(operator, self.key, name, true, revoked)
    }

    fn with_revocations(
        operator: &KeyPair,
        key: KeyPair,
        name: &str,
        jetstream: bool,
        revoked: &[(&User, i64)],
    ) -> Self {
        // -1 is no limit; a limit left out is 0, which for `conn` would admit nobody.
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[k] = json!(-1);
            }
        }
        let mut nats = object(json!({
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
        }));
        if !revoked.is_empty() {
            let map: Map<String, Value> = revoked
                .iter()
                .map(|(user, at)| (user.key.public_key(), json!(at)))
                .collect();
            nats.insert("revocations".into(), Value::Object(map));
        }
        let jwt = sign(operator, &key.public_key(), name, "account", nats, None);
        Self { key, jwt }
    }

    /// A user of this account, with every permission; its JWT expires at `expires` if given.
    pub fn user(&self, name: &str, expires: Option<i64>) -> User {
        self.issue(KeyPair::new_user(), name, expires)
    }

    /// A new JWT for `user`, same key, as a renewal issues it.
    pub fn renew(&self, user: &User, name: &str, expires: Option<i64>) -> User {
        let key = KeyPair::from_seed(&user.key.seed().unwrap()).unwrap();
        self.issue(key, name, expires)
    }

    fn issue(&self, key: KeyPair, name: &str, expires: Option<i64>) -> User {
        let nats = object(json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        }));
        let jwt = sign(&self.key, &key.public_key(), name, "user", nats, expires);
        User { key, jwt }
    }
}

/// A user: its JWT (signed by its account) and its key, which signs the server's nonce.
pub struct User {
    /// Its identity key.
    pub key: KeyPair,
    /// Its JWT.
    pub jwt: String,
}

impl User {
    /// The `.creds` file `nsc generate creds` writes for it.
    pub fn creds(&self) -> String {
        creds(&self.jwt, &self.key.seed().unwrap())
    }
}

/// A `.creds` file: the JWT, then the seed, each between its marker lines.
pub fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}
