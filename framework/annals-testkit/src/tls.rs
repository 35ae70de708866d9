//! Certificates for HTTPS tests: a certificate authority made for the test, and
//! server certificates it signs, written as PEM files to a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tempfile::TempDir;

/// A certificate authority of the test's own, with its files.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: TempDir,
}

/// A server certificate and its key, PEM files signed by an [`Authority`].
pub struct ServerFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Authority {
    /// A new authority; its certificate is at [`Authority::cert`].
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA");
        let dir = tempfile::tempdir().expect("a directory for the certificates");
        std::fs::write(dir.path().join("ca.crt"), issuer.pem()).expect("write the CA certificate");
        Authority { issuer, dir }
    }

    /// The authority's certificate (PEM), what clients are told to trust.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A server certificate for `names` (host names or IP addresses), signed by this
    /// authority, written as `<file>.crt` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> ServerFiles {
        let key = KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .expect("names")
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        let files = ServerFiles {
            cert: self.dir.path().join(format!("{file}.crt")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }

    /// The directory the files are in (removed when the authority is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
