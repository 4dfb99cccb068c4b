//! TLS material and settings: the gRPC listener's certificate and key (and the CA its clients must be
//! signed by, for mTLS), the CA the router trusts for `https://` coordinators, and the one crypto
//! provider the process uses (ring: aws-lc would add a C build of about 1.5 minutes to every clean build).
//!
//! PEM files are read and checked when the config is loaded (`trino-router check` does the same): a file
//! that cannot be read, holds no certificate or key, or a key that does not belong to its certificate is
//! a config error naming the file. What was checked is what is served: the bytes are kept, not the paths.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Makes ring the process's default TLS crypto provider (what tonic's server and reqwest's clients
/// build their TLS configs with). Idempotent; call before building any TLS client or server.
pub fn install_crypto_provider() {
    // An error only says a default is installed already (by an earlier call).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A PEM file as read when the config was loaded: where it came from and its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Arc<[u8]>,
}

/// Names the file only: the bytes may be a private key.
impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PemFile({}, {} bytes)", self.path.display(), self.pem.len())
    }
}

/// TLS on the gRPC listener (`listen_tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTls {
    /// The router's certificate chain (leaf first).
    pub cert: PemFile,
    pub key: PemFile,
    /// With it, every client must present a certificate signed by one of these CAs (mTLS).
    pub client_ca: Option<PemFile>,
}

/// How the router's own calls to `https://` coordinators verify them (`coordinator_tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinatorTls {
    /// CAs that sign coordinator certificates.
    pub ca: Option<PemFile>,
    /// Also trust the system's roots (always, when no `ca` is given).
    pub system_roots: bool,
}

/// Reads `path` and checks that it holds at least one PEM certificate.
pub fn read_certificates(path: &Path) -> Result<PemFile, String> {
    let pem = read(path)?;
    certificates(path, &pem)?;
    Ok(PemFile { path: path.to_owned(), pem: pem.into() })
}

/// Reads `path` and checks that it holds certificates that can be trust anchors.
pub fn read_ca(path: &Path) -> Result<PemFile, String> {
    let file = read_certificates(path)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(path, &file.pem)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!("certificate {} in `{}` cannot be a trusted CA: {e}", i + 1, path.display())
        })?;
    }
    Ok(file)
}

/// Reads `path` and checks that it holds a private key.
pub fn read_private_key(path: &Path) -> Result<PemFile, String> {
    let pem = read(path)?;
    private_key(path, &pem)?;
    Ok(PemFile { path: path.to_owned(), pem: pem.into() })
}

/// Checks that `key` belongs to the first (leaf) certificate of `cert`.
pub fn check_key_matches(cert: &PemFile, key: &PemFile) -> Result<(), String> {
    let chain = certificates(&cert.path, &cert.pem)?;
    let private = private_key(&key.path, &key.pem)?;
    match CertifiedKey::from_der(chain, private, &provider()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(format!(
            "the key in `{}` does not belong to the certificate in `{}`",
            key.path.display(),
            cert.path.display()
        )),
        Err(e) => Err(format!("`{}` cannot sign for `{}`: {e}", key.path.display(), cert.path.display())),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("`{}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())
        }
        e => format!("`{}` is not PEM: {e}", path.display()),
    })
}

/// The certificates of a CA file read at load.
pub fn ca_certificates(ca: &PemFile) -> Result<Vec<CertificateDer<'static>>, String> {
    certificates(&ca.path, &ca.pem)
}

/// Certificates made at test time (rcgen): a CA and the certificates it signs, as PEM files in a
/// directory of their own.
#[cfg(test)]
pub mod testing {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    /// A test CA and the directory its files go to (removed on drop).
    pub struct TestPki {
        pub dir: PathBuf,
        /// The CA certificate (PEM file).
        pub ca: PathBuf,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate and its key, as PEM files.
    pub struct Issued {
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    impl TestPki {
        /// A new CA named `name`, its certificate written to `DIR/ca.pem`.
        pub fn new(name: &str) -> TestPki {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "trino-router-test-{}-{name}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let ca = dir.join("ca.pem");
            std::fs::write(&ca, cert.pem()).unwrap();
            TestPki { dir, ca, issuer: Issuer::new(params, key) }
        }

        /// A certificate for `names` (DNS names or IP addresses) signed by this CA, written to
        /// `DIR/{file}.pem` and `DIR/{file}-key.pem`.
        pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, file);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let issued = Issued {
                cert: self.dir.join(format!("{file}.pem")),
                key: self.dir.join(format!("{file}-key.pem")),
            };
            std::fs::write(&issued.cert, cert.pem()).unwrap();
            std::fs::write(&issued.key, key.serialize_pem()).unwrap();
            issued
        }

        /// A file in this CA's directory with `text` in it.
        pub fn write(&self, file: &str, text: &str) -> PathBuf {
            let path = self.dir.join(file);
            std::fs::write(&path, text).unwrap();
            path
        }

        pub fn path(&self, file: &str) -> PathBuf {
            Path::new(&self.dir).join(file)
        }
    }

    impl Drop for TestPki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
