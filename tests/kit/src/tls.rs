//! A throwaway certificate authority for TLS tests, made with the `openssl` command: a server
//! certificate for 127.0.0.1 and localhost, a client certificate, and a second CA that signed
//! neither (the wrong CA a client must refuse).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The PEM files, in a scratch directory removed when this is dropped.
pub struct Certificates {
    /// The CA that signed `server_cert` and `client_cert`.
    pub ca: PathBuf,
    /// For `127.0.0.1` and `localhost`, server authentication.
    pub server_cert: PathBuf,
    /// The private key of `server_cert`.
    pub server_key: PathBuf,
    /// Client authentication.
    pub client_cert: PathBuf,
    /// The private key of `client_cert`.
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    dir: tempfile::TempDir,
}

impl Certificates {
    /// Makes the CAs and certificates (P-256 keys: quick to make, and every TLS stack takes
    /// them). Fails the test, saying what is missing, when `openssl` is not installed.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("a scratch directory for certificates");
        let at = |name: &str| dir.path().join(name);
        for ca in ["ca", "other-ca"] {
            let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
            let subject = format!("/CN=outrigger test {ca}");
            new_key(dir.path(), &key);
            openssl(
                dir.path(),
                &[
                    "req", "-x509", "-new", "-key", &key, "-out", &pem, "-days", "2", "-subj",
                    &subject,
                ],
            );
        }
        std::fs::write(
            at("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writes the extension file");
        std::fs::write(at("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("writes the extension file");
        for who in ["server", "client"] {
            let (key, csr, pem, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            new_key(dir.path(), &key);
            let subject = format!("/CN={who}");
            openssl(
                dir.path(),
                &["req", "-new", "-key", &key, "-out", &csr, "-subj", &subject],
            );
            openssl(
                dir.path(),
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            );
        }
        Self {
            ca: at("ca.pem"),
            server_cert: at("server.pem"),
            server_key: at("server.key"),
            client_cert: at("client.pem"),
            client_key: at("client.key"),
            other_ca: at("other-ca.pem"),
            dir,
        }
    }

    /// A path in the certificates' directory, for a file a test writes beside them.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A P-256 private key, PKCS#8 (the format every client reads).
fn new_key(dir: &Path, file: &str) {
    let args = [
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        file,
    ];
    openssl(dir, &[&["genpkey"][..], &args].concat());
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): TLS tests need it, e.g. apt-get install openssl")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
