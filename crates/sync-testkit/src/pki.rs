//! The certificates and keys a test control plane needs, made fresh for each one: a CA, the
//! apiserver's serving certificate for `127.0.0.1`, `localhost` and the addresses a cluster adds
//! (its bridge address, the `kubernetes` Service's IP), client certificates (the admin's, one
//! per user a test names, all in `system:masters`, and the node components' identities), and
//! the key that signs service-account tokens.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Where the files are, all PEM.
pub struct Pki {
    /// The CA certificate: it signs the serving and client certificates.
    pub ca: PathBuf,
    /// The apiserver's serving certificate and key.
    pub serving: (PathBuf, PathBuf),
    /// The admin's client certificate and key (CN `sync-test-admin`, O `system:masters`).
    pub admin: (PathBuf, PathBuf),
    /// The service-account token signing key (private, PKCS#8) and its public key.
    pub service_account: (PathBuf, PathBuf),
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// Makes every file in `dir`; the serving certificate also names `extra_names` (IP
    /// addresses or DNS names).
    pub fn create(dir: &Path, extra_names: &[String]) -> Result<Self> {
        let write = |name: &str, pem: String| write(dir, name, pem);

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sync-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = write("ca.crt", ca_cert.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut names: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from)
        .into();
        names.extend_from_slice(extra_names);
        let serving = leaf(
            &issuer,
            dir,
            names,
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
            "serving",
        )?;
        let admin = leaf(
            &issuer,
            dir,
            Vec::new(),
            "sync-test-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
            "admin",
        )?;

        let sa_key = KeyPair::generate()?;
        let service_account = (
            write("service-account.key", sa_key.serialize_pem())?,
            write("service-account.pub", sa_key.public_key_pem())?,
        );
        Ok(Self {
            ca,
            serving,
            admin,
            service_account,
            dir: dir.to_owned(),
            issuer,
        })
    }

    /// A client certificate and key for user `name` in `system:masters` (so the API's audit log
    /// tells this user's requests from everyone else's).
    pub fn user(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        self.client(&format!("user-{name}"), name, Some("system:masters"))
    }

    /// A client certificate and key for common name `cn` in group `org`, written to
    /// `file.{crt,key}`: the identities Kubernetes' components use (`system:node:NAME` in
    /// `system:nodes`, `system:kube-scheduler`, ...).
    pub fn client(&self, file: &str, cn: &str, org: Option<&str>) -> Result<(PathBuf, PathBuf)> {
        leaf(
            &self.issuer,
            &self.dir,
            Vec::new(),
            cn,
            org,
            ExtendedKeyUsagePurpose::ClientAuth,
            file,
        )
    }
}

/// A certificate signed by `issuer` for `names` (subject alternative names), `cn` and `org`,
/// with `usage`, written to `dir/file.{crt,key}`.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    dir: &Path,
    names: Vec<String>,
    cn: &str,
    org: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
    file: &str,
) -> Result<(PathBuf, PathBuf)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    Ok((
        write(dir, &format!("{file}.crt"), cert.pem())?,
        write(dir, &format!("{file}.key"), key.serialize_pem())?,
    ))
}

fn write(dir: &Path, name: &str, pem: String) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
