//! Mutual TLS for peer links (DESIGN.md §8): a cluster CA issues one certificate per node,
//! whose DNS name is the node's name; both ends present theirs. The dialer checks the
//! acceptor's certificate names the node it meant to reach (rustls' server-name check); the
//! acceptor checks, once the dialer said who it is (`Hello.from`), that its certificate names
//! that node ([`check_client_name`]). The cluster secret's challenge still runs inside.
//!
//! Material in `tls_dir`, as `spare certs init` writes it: `ca.pem`, `ca.key` (keep it
//! offline once every node has its certificate), `<node>.pem`, `<node>.key` (mode 0600).
//! Crypto: rustls with the `ring` provider only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

/// Validity of the certificates `spare certs` issues.
pub const CERT_VALIDITY_DAYS: i64 = 3650;

/// A node's TLS material as read from `tls_dir` at one moment.
pub struct TlsMaterial {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    /// The certificate the HTTP API presents (`http_tls`).
    http_key: Arc<CertifiedKey>,
}

/// A node's TLS material, read again from `tls_dir` by a reload (`spare reload`, SIGHUP): a
/// renewed certificate, or a CA added to `ca.pem` for an overlap while certificates move to
/// it. New connections use what was read last; open ones go on with what they started with.
pub struct TlsHandle {
    dir: PathBuf,
    node: String,
    current: Arc<RwLock<Arc<TlsMaterial>>>,
    /// For the HTTP API (`http_tls`): built once, presenting the current certificate (no
    /// client certificate asked).
    pub http: Arc<ServerConfig>,
}

/// Presents the HTTP API's current certificate.
#[derive(Debug)]
struct CurrentCert(Arc<RwLock<Arc<TlsMaterial>>>);

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("tls lock").http_key.clone())
    }
}

impl TlsHandle {
    /// Loads `node`'s material from `dir`.
    pub fn load(dir: &Path, node: &str) -> Result<Self> {
        let current = Arc::new(RwLock::new(Arc::new(load(dir, node)?)));
        let http = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS for the HTTP API: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(CurrentCert(current.clone())));
        Ok(TlsHandle {
            dir: dir.to_path_buf(),
            node: node.to_string(),
            current,
            http: Arc::new(http),
        })
    }

    /// The material new connections use.
    pub fn current(&self) -> Arc<TlsMaterial> {
        self.current.read().expect("tls lock").clone()
    }

    /// Reads `tls_dir` again without using it yet: an error names the file to fix.
    pub fn read_again(&self) -> Result<TlsMaterial> {
        load(&self.dir, &self.node)
    }

    /// Makes `material` (from [`TlsHandle::read_again`]) the one new connections use.
    pub fn install(&self, material: TlsMaterial) {
        *self.current.write().expect("tls lock") = Arc::new(material);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `name` can be a certificate's DNS name (TLS needs node names that are DNS
/// labels: lowercase letters, digits and '-', at most 63).
pub fn valid_tls_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the {what} {}: {e}; create the TLS material with `spare certs init` (or `spare certs add NODE` for a node added later)",
            path.display()
        ))
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, "certificate")?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Config(format!("{}: not a PEM certificate: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{}: holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path, "private key")?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| Error::Config(format!("{}: not a PEM key: {e}", path.display())))?
        .ok_or_else(|| Error::Config(format!("{}: holds no private key", path.display())))
}

fn roots(dir: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in certs(&dir.join("ca.pem"))? {
        roots.add(c).map_err(|e| {
            Error::Config(format!(
                "{}: unusable CA: {e}",
                dir.join("ca.pem").display()
            ))
        })?;
    }
    Ok(Arc::new(roots))
}

/// Loads `node`'s material from `dir`.
fn load(dir: &Path, node: &str) -> Result<TlsMaterial> {
    let roots = roots(dir)?;
    let chain = certs(&dir.join(format!("{node}.pem")))?;
    let key = key(&dir.join(format!("{node}.key")))?;
    let bad = |e: rustls::Error| {
        Error::Config(format!("TLS material of {node} in {}: {e}", dir.display()))
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| Error::Config(format!("TLS client verifier: {e}")))?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(bad)?;
    let http_key =
        Arc::new(CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(bad)?);
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(bad)?;
    Ok(TlsMaterial {
        server: Arc::new(server),
        client: Arc::new(client),
        http_key,
    })
}

/// A client configuration trusting the cluster CA of `dir` (HTTPS to the nodes' API).
pub fn https_client(dir: &Path) -> Result<Arc<ClientConfig>> {
    let roots = roots(dir)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name the dialer expects the acceptor's certificate to carry.
pub fn server_name(node: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(node.to_string())
        .map_err(|_| Error::Config(format!("\"{node}\" cannot be a TLS name")))
}

/// Checks that the dialer's certificate (already verified against the CA) names `claimed`.
pub fn check_client_name(cert: &CertificateDer<'_>, claimed: &str) -> Result<()> {
    let name = server_name(claimed)?;
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| Error::InvalidData(format!("unreadable peer certificate: {e:?}")))?;
    ee.verify_is_valid_for_subject_name(&name).map_err(|_| {
        Error::InvalidData(format!(
            "the peer says it is {claimed} but its certificate names another node"
        ))
    })
}

fn ca_params(cluster: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| Error::InvalidInput(format!("CA parameters: {e}")))?;
    // The same name each time: `certs add` re-signs with the CA key and this name.
    p.distinguished_name
        .push(DnType::CommonName, format!("spare cluster CA {cluster}"));
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p);
    Ok(p)
}

fn validity(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(CERT_VALIDITY_DAYS);
}

fn gen_err(e: rcgen::Error) -> Error {
    Error::InvalidInput(format!("generating a certificate: {e}"))
}

fn write(path: &Path, text: &str, secret: bool) -> Result<()> {
    crate::durable::create_new(path, text.as_bytes(), secret)
}

/// Creates the cluster CA (`ca.pem`, `ca.key`) in `dir`.
pub fn init_ca(dir: &Path, cluster: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = ca_params(cluster)?.self_signed(&key).map_err(gen_err)?;
    let (c, k) = (dir.join("ca.pem"), dir.join("ca.key"));
    write(&c, &cert.pem(), false)?;
    write(&k, &key.serialize_pem(), true)?;
    Ok(vec![c, k])
}

/// Issues `node`'s certificate and key in `dir`, signed by the CA there. Besides the node's
/// name, the certificate names `hosts` (the hosts of its advertised addresses: an IP or a
/// DNS name each), so HTTPS clients can check it.
pub fn issue(dir: &Path, cluster: &str, node: &str, hosts: &[String]) -> Result<Vec<PathBuf>> {
    issue_into(dir, dir, cluster, node, hosts)
}

/// Issues a new certificate and key for `node` in `dir` (signed by the CA there) and puts
/// them in place of the old ones, each file by an atomic rename: a node reading them
/// (`spare reload`) meanwhile sees an old or a new file, never a partial one, and refuses a
/// pair that does not match (nothing changes; reload again).
pub fn renew(dir: &Path, cluster: &str, node: &str, hosts: &[String]) -> Result<Vec<PathBuf>> {
    let staging = dir.join(format!(".renew-{node}"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(Error::io(format!("create {}", staging.display())))?;
    let issued = issue_into(dir, &staging, cluster, node, hosts);
    let moved = issued.and_then(|files| {
        files
            .iter()
            .map(|f| {
                let to = dir.join(f.file_name().expect("a file"));
                std::fs::rename(f, &to).map_err(Error::io(format!("replace {}", to.display())))?;
                Ok(to)
            })
            .collect::<Result<Vec<_>>>()
    });
    let _ = std::fs::remove_dir_all(&staging);
    crate::durable::sync_dir(dir)?;
    moved
}

/// Issues `node`'s certificate and key in `out`, signed by the CA of `ca_dir`.
fn issue_into(
    ca_dir: &Path,
    out: &Path,
    cluster: &str,
    node: &str,
    hosts: &[String],
) -> Result<Vec<PathBuf>> {
    if !valid_tls_name(node) {
        return Err(Error::InvalidInput(format!(
            "\"{node}\" cannot be a certificate name: with TLS, node names must be lowercase letters, digits and '-'"
        )));
    }
    let ca_pem = String::from_utf8_lossy(&read(&ca_dir.join("ca.key"), "CA key")?).into_owned();
    let ca_key = KeyPair::from_pem(&ca_pem).map_err(gen_err)?;
    let ca = ca_params(cluster)?.self_signed(&ca_key).map_err(gen_err)?;
    let mut names = vec![node.to_string()];
    names.extend(hosts.iter().filter(|h| *h != node).cloned());
    names.dedup();
    let mut p = CertificateParams::new(names).map_err(gen_err)?;
    p.distinguished_name.push(DnType::CommonName, node);
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut p);
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = p.signed_by(&key, &ca, &ca_key).map_err(gen_err)?;
    let (c, k) = (
        out.join(format!("{node}.pem")),
        out.join(format!("{node}.key")),
    );
    write(&c, &cert.pem(), false)?;
    write(&k, &key.serialize_pem(), true)?;
    Ok(vec![c, k])
}
