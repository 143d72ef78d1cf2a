//! The cluster's certificate authority and what it signs: the API server's
//! serving certificate, client certificates (CN = user, O = groups, as
//! Kubernetes reads them) and the node agents' serving certificates.
//!
//! Everything lives under `DATA/tls/` (a 0700 directory, keys 0600). The CA
//! is made on the first start and never replaced, so kubeconfigs and joined
//! nodes stay valid across restarts; the serving certificate is reissued
//! only when it no longer covers the names the server is reached by.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};

/// Why a certificate or key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Cert { what: String, source: rcgen::Error },
    #[error("{0}")]
    Invalid(String),
}

/// A `Result` with a [`PkiError`].
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// How long the CA lives (Kubernetes' kubeadm gives its CA ten years).
const CA_DAYS: i64 = 3650;
/// How long leaf certificates live. Long, because nothing rotates them yet.
const LEAF_DAYS: i64 = 3650;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA, loaded from (or created in) a directory.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert {
        what: what.to_owned(),
        source,
    }
}

/// Writes a file only its owner may read, also when it existed before
/// with wider permissions.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    // Written beside and renamed, so a crash never leaves half a key.
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Writes a public file (a certificate).
fn write_public(path: &Path, contents: &[u8]) -> Result<()> {
    fs::write(path, contents).map_err(io(path))
}

/// The SHA-256 of the CA bundle as served on `/cacerts`, hex: what a join
/// token carries so a new node can tell the real server from an impostor.
pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

/// Validity starting a day ago (clocks of joining nodes may lag).
fn validity(params: &mut CertificateParams, days: i64) {
    let now = rcgen_now();
    params.not_before = now - time_days(1);
    params.not_after = now + time_days(days);
}

fn rcgen_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn time_days(days: i64) -> time::Duration {
    time::Duration::days(days)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive as DER requires.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl Pki {
    /// Loads the CA from `dir`, creating the directory and a new CA when
    /// there is none.
    pub fn load_or_create(dir: &Path) -> Result<Pki> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if !cert_path.exists() || !key_path.exists() {
            let key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "knit-ca");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.serial_number = Some(random_serial());
            validity(&mut params, CA_DAYS);
            let cert = params
                .self_signed(&key)
                .map_err(cert_err("signing the CA"))?;
            // The key first: a certificate without its key is useless.
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            write_public(&cert_path, cert.pem().as_bytes())?;
        }
        // Owner-only, also for keys an older version or a person left wider.
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).map_err(io(&key_path))?;
        let ca_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err("reading the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(cert_err("reading the CA certificate"))?;
        Ok(Pki {
            dir: dir.to_owned(),
            ca_pem,
            issuer,
        })
    }

    /// The directory the files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// [`ca_hash`] of this CA.
    pub fn ca_hash(&self) -> String {
        ca_hash(&self.ca_pem)
    }

    fn sign(
        &self,
        common_name: &str,
        organizations: &[&str],
        sans: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued> {
        let key = KeyPair::generate().map_err(cert_err("generating a key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for org in organizations {
            dn.push(DnType::OrganizationName, *org);
        }
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(cert_err(name)),
            })
            .collect::<Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, LEAF_DAYS);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_err(common_name))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for `user` in `groups`, not stored.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<Issued> {
        self.sign(user, groups, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A serving certificate for `names` (addresses or DNS names), not stored.
    pub fn issue_serving(&self, common_name: &str, names: &[String]) -> Result<Issued> {
        self.sign(common_name, &[], names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// The stored client pair `name.crt`/`name.key`, made on first use.
    pub fn client_pair(&self, name: &str, user: &str, groups: &[&str]) -> Result<Issued> {
        let (cert_path, key_path) = self.paths(name);
        if let Some(pair) = read_pair(&cert_path, &key_path)? {
            return Ok(pair);
        }
        let pair = self.issue_client(user, groups)?;
        store_pair(&pair, &cert_path, &key_path)?;
        Ok(pair)
    }

    /// The stored serving pair `name.crt`/`name.key`, reissued when it
    /// does not cover every one of `names`.
    pub fn serving_pair(&self, name: &str, common_name: &str, names: &[String]) -> Result<Issued> {
        let (cert_path, key_path) = self.paths(name);
        if let Some(pair) = read_pair(&cert_path, &key_path)?
            && covers(&pair.cert_pem, names)
        {
            return Ok(pair);
        }
        let pair = self.issue_serving(common_name, names)?;
        store_pair(&pair, &cert_path, &key_path)?;
        Ok(pair)
    }

    fn paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<Option<Issued>> {
    if !cert_path.exists() || !key_path.exists() {
        return Ok(None);
    }
    fs::set_permissions(key_path, fs::Permissions::from_mode(0o600)).map_err(io(key_path))?;
    Ok(Some(Issued {
        cert_pem: fs::read_to_string(cert_path).map_err(io(cert_path))?,
        key_pem: fs::read_to_string(key_path).map_err(io(key_path))?,
    }))
}

fn store_pair(pair: &Issued, cert_path: &Path, key_path: &Path) -> Result<()> {
    write_private(key_path, pair.key_pem.as_bytes())?;
    write_public(cert_path, pair.cert_pem.as_bytes())
}

/// Whether the PEM certificate's SANs include every one of `names`.
pub(super) fn covers(cert_pem: &str, names: &[String]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let present: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_string()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names.iter().all(|name| present.contains(name))
}

/// The user (CN) and groups (O) of a DER client certificate, as
/// Kubernetes' x509 authenticator reads them.
pub fn subject_of(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_made_once_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = Pki::load_or_create(&tls).unwrap();
        let again = Pki::load_or_create(&tls).unwrap();
        assert_eq!(first.ca_pem(), again.ca_pem());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tls), 0o700);
        assert_eq!(mode(&tls.join("ca.key")), 0o600);

        let names = vec!["127.0.0.1".to_string(), "kubernetes".to_string()];
        let served = again
            .serving_pair("server", "kube-apiserver", &names)
            .unwrap();
        assert_eq!(mode(&tls.join("server.key")), 0o600);
        let same = again
            .serving_pair("server", "kube-apiserver", &names)
            .unwrap();
        assert_eq!(
            served.cert_pem, same.cert_pem,
            "kept while it covers the names"
        );
        let more = vec!["10.0.0.1".to_string()];
        let reissued = again
            .serving_pair("server", "kube-apiserver", &more)
            .unwrap();
        assert_ne!(served.cert_pem, reissued.cert_pem);
        assert!(covers(&reissued.cert_pem, &more));
    }

    #[test]
    fn client_certificates_carry_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let pair = pki
            .issue_client("system:node:n1", &["system:nodes"])
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pair.cert_pem.as_bytes()).unwrap();
        let (user, groups) = subject_of(&pem.contents).unwrap();
        assert_eq!(user, "system:node:n1");
        assert_eq!(groups, vec!["system:nodes".to_string()]);
        assert_eq!(ca_hash(pki.ca_pem()).len(), 64);
    }
}
