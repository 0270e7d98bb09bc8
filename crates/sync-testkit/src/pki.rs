//! The certificates and keys a test control plane needs, made fresh for each one: a CA, the
//! apiserver's serving certificate for `127.0.0.1` and `localhost`, an admin client certificate
//! in `system:masters`, and the key that signs service-account tokens.

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
}

impl Pki {
    /// Makes every file in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let write = |name: &str, pem: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };

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

        let leaf = |names: Vec<String>,
                    cn: &str,
                    org: Option<&str>,
                    usage: ExtendedKeyUsagePurpose,
                    file: &str|
         -> Result<(PathBuf, PathBuf)> {
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
            let cert = params.signed_by(&key, &issuer)?;
            Ok((
                write(&format!("{file}.crt"), cert.pem())?,
                write(&format!("{file}.key"), key.serialize_pem())?,
            ))
        };
        let serving = leaf(
            vec!["127.0.0.1".into(), "localhost".into(), "kubernetes".into()],
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
            "serving",
        )?;
        let admin = leaf(
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
        })
    }
}
