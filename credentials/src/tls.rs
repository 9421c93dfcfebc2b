//! The TLS files a service reads at start: a certificate chain and its key (to serve, or to prove who it is
//! as a client), and a CA to verify the other end against. Each is read and checked once, so that a file
//! that is missing, unreadable, not PEM, without a certificate, expired or not yet valid stops the service
//! with a sentence naming the variable, never a panic at the first connection, and never shows a key.

use std::{fmt, path::Path};

use anyhow::bail;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// A certificate chain and its private key, as PEM, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The leaf's private key.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("cert_pem", &format_args!("{} bytes", self.cert_pem.len())).finish()
    }
}

/// One or more CA certificates, as PEM, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    /// The certificates.
    pub pem: Vec<u8>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ca({} bytes)", self.pem.len())
    }
}

/// What a client of a TLS server needs: a CA to verify it against (else the public web's roots), and its
/// own certificate where the server asks for one (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA the server's certificate must chain to.
    pub ca: Option<Ca>,
    /// This client's certificate and key.
    pub identity: Option<Identity>,
}

/// What a TLS server needs: its certificate and key, and (for mutual TLS) the CA its clients' certificates
/// must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The server's certificate chain and key.
    pub identity: Identity,
    /// With it, every client must present a certificate from this CA.
    pub client_ca: Option<Ca>,
}

impl ServerTls {
    /// Reads `<PREFIX>_CERT_FILE`, `<PREFIX>_KEY_FILE` and (if `client_ca_var` is given and set) the client CA
    /// through `lookup`: nothing when the certificate and key are not set.
    pub fn from(
        prefix: &str,
        client_ca_var: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        let client_ca = client_ca_var.map(|var| ca_from(var, &lookup)).transpose()?.flatten();
        match identity_from(prefix, &lookup)? {
            Some(identity) => Ok(Some(Self { identity, client_ca })),
            None if client_ca.is_some() => {
                bail!(
                    "{} is set, but {prefix}_CERT_FILE and {prefix}_KEY_FILE are not",
                    client_ca_var.unwrap_or_default()
                )
            }
            None => Ok(None),
        }
    }
}

impl Identity {
    /// Reads `cert_var`'s file (a PEM chain, leaf first) and `key_var`'s (its PEM key), checking that both
    /// parse and that the leaf is valid now.
    pub fn load(cert_var: &str, cert_path: &Path, key_var: &str, key_path: &Path) -> anyhow::Result<Self> {
        let cert_pem = read(cert_var, cert_path)?;
        let chain = certificates(cert_var, cert_path, &cert_pem)?;
        valid_now(cert_var, cert_path, &chain[0])?;
        let key_pem = read(key_var, key_path)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            anyhow::anyhow!("{key_var}={}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it", key_path.display())
        })?;
        Ok(Self { cert_pem, key_pem })
    }
}

impl Ca {
    /// Reads `var`'s file: one or more PEM certificates, each valid now.
    pub fn load(var: &str, path: &Path) -> anyhow::Result<Self> {
        let pem = read(var, path)?;
        for cert in certificates(var, path, &pem)? {
            valid_now(var, path, &cert)?;
        }
        Ok(Self { pem })
    }
}

/// Reads `<PREFIX>_CERT_FILE` and `<PREFIX>_KEY_FILE` through `lookup`: an [`Identity`] when both are set,
/// nothing when neither is, an error when only one is.
pub fn identity_from(prefix: &str, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Identity>> {
    let (cert_var, key_var) = (format!("{prefix}_CERT_FILE"), format!("{prefix}_KEY_FILE"));
    match (lookup(&cert_var), lookup(&key_var)) {
        (Some(cert), Some(key)) => Ok(Some(Identity::load(&cert_var, Path::new(&cert), &key_var, Path::new(&key))?)),
        (None, None) => Ok(None),
        (Some(_), None) => bail!("{cert_var} is set without {key_var}"),
        (None, Some(_)) => bail!("{key_var} is set without {cert_var}"),
    }
}

/// Reads the CA file `var` names through `lookup`, if it is set.
pub fn ca_from(var: &str, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Ca>> {
    lookup(var).map(|path| Ca::load(var, Path::new(&path))).transpose()
}

fn read(var: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{var}={} cannot be read: {e}", path.display()))
}

fn certificates(var: &str, path: &Path, pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{var}={}: not PEM certificates: {e:?}", path.display()))?;
    if certs.is_empty() {
        bail!("{var}={}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

/// Whether a certificate is valid at this moment (its notBefore has passed, its notAfter not yet).
fn valid_now(var: &str, path: &Path, der: &CertificateDer<'_>) -> anyhow::Result<()> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| anyhow::anyhow!("{var}={}: not an X.509 certificate: {e}", path.display()))?;
    let validity = cert.validity();
    if !validity.is_valid() {
        bail!(
            "{var}={}: the certificate for {} is not valid now (valid from {} to {})",
            path.display(),
            cert.subject(),
            validity.not_before,
            validity.not_after
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn good_files_load_and_bad_ones_name_their_variable() {
        let dir = std::env::temp_dir().join(format!("om-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["inventory".into()]).unwrap().self_signed(&key).unwrap();
        let cert_path = write(&dir, "cert.pem", &cert.pem());
        let key_path = write(&dir, "key.pem", &key.serialize_pem());
        let identity = Identity::load("X_CERT_FILE", &cert_path, "X_KEY_FILE", &key_path).unwrap();
        assert!(!format!("{identity:?}").contains("PRIVATE"), "a key never prints");
        assert!(Ca::load("X_CA_FILE", &cert_path).is_ok());

        let missing = Ca::load("X_CA_FILE", &dir.join("none.pem")).unwrap_err().to_string();
        assert!(missing.contains("X_CA_FILE") && missing.contains("cannot be read"), "{missing}");
        let not_pem = write(&dir, "junk.pem", "hello");
        let junk = Ca::load("X_CA_FILE", &not_pem).unwrap_err().to_string();
        assert!(junk.contains("X_CA_FILE") && junk.contains("no PEM certificate"), "{junk}");
        let no_key = Identity::load("X_CERT_FILE", &cert_path, "X_KEY_FILE", &cert_path).unwrap_err().to_string();
        assert!(no_key.contains("X_KEY_FILE") && no_key.contains("no PEM private key"), "{no_key}");

        let mut old = rcgen::CertificateParams::new(vec!["inventory".into()]).unwrap();
        old.not_before = rcgen::date_time_ymd(2020, 1, 1);
        old.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let expired = write(&dir, "old.pem", &old.self_signed(&key).unwrap().pem());
        let err = Identity::load("X_CERT_FILE", &expired, "X_KEY_FILE", &key_path).unwrap_err().to_string();
        assert!(err.contains("X_CERT_FILE") && err.contains("not valid now"), "{err}");

        let lookup = |k: &str| (k == "X_CERT_FILE").then(|| cert_path.display().to_string());
        let half = identity_from("X", lookup).unwrap_err().to_string();
        assert!(half.contains("without X_KEY_FILE"), "{half}");
        assert!(identity_from("X", |_| None).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
