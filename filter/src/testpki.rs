//! Certificates made at test time: CAs and leaves with every key type certbound must verify.
//! ECDSA and Ed25519 keys come from rcgen; RSA keys and RSA-PSS certificates from `openssl`,
//! which rcgen cannot make on its own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
    SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    PKCS_RSA_SHA256,
};

/// Unix time inside the default validity of the certificates made here (2020 to 2040).
pub const NOW: u64 = 1_767_225_600; // 2026-01-01

pub struct Leaf {
    pub pem: String,
    pub der: Vec<u8>,
}

/// A CA that issues leaves.
pub struct Pki {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// An ECDSA P-256 CA.
    pub fn new() -> Self {
        Self::with(&PKCS_ECDSA_P256_SHA256, "certbound test CA")
    }

    /// A CA whose key and signature algorithm are `alg`.
    pub fn with(alg: &'static SignatureAlgorithm, name: &str) -> Self {
        let key = key_pair(alg);
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2040, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        Self { params, key, cert }
    }

    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// A leaf with a key of `alg`, valid from `from` to `until` (years, January 1st).
    pub fn leaf_of(&self, alg: &'static SignatureAlgorithm, from: i32, until: i32) -> Leaf {
        let key = key_pair(alg);
        let mut params = CertificateParams::new(vec!["client.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "client, \"quoted\"; semi=colon");
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            pem: cert.pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn ec_leaf(&self) -> Leaf {
        self.leaf_of(&PKCS_ECDSA_P384_SHA384, 2020, 2040)
    }

    pub fn rsa_leaf(&self) -> Leaf {
        self.leaf_of(&PKCS_RSA_SHA256, 2020, 2040)
    }

    pub fn ed25519_leaf(&self) -> Leaf {
        self.leaf_of(&PKCS_ED25519, 2020, 2040)
    }

    /// A leaf whose PEM body holds a `+`: nearly every one does, but the test must be sure.
    pub fn leaf_with_plus_in_base64(&self) -> Leaf {
        for _ in 0..64 {
            let leaf = self.ec_leaf();
            if leaf
                .pem
                .lines()
                .any(|l| !l.starts_with("-----") && l.contains('+'))
            {
                return leaf;
            }
        }
        panic!("no leaf with a + in its base64 after 64 tries");
    }
}

fn key_pair(alg: &'static SignatureAlgorithm) -> KeyPair {
    if alg == &PKCS_RSA_SHA256 || alg == &rcgen::PKCS_RSA_SHA384 || alg == &rcgen::PKCS_RSA_SHA512 {
        let pem = openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ]);
        KeyPair::from_pkcs8_pem_and_sign_algo(&String::from_utf8(pem).unwrap(), alg).unwrap()
    } else {
        KeyPair::generate_for(alg).unwrap()
    }
}

pub fn hex(der: &[u8]) -> String {
    crate::thumbprint::Thumbprint::of_der(der).to_hex()
}

/// Runs `openssl` and returns its standard output; panics with its standard error on failure.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh directory for openssl's files, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("certbound-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An RSA CA and a leaf it signed with RSASSA-PSS and SHA-256, made by openssl: `(ca, leaf)`.
pub fn rsa_pss_pair() -> (Leaf, Leaf) {
    let dir = Scratch::new();
    let (ca_key, ca, leaf_key, csr, leaf) = (
        dir.path("ca.key"),
        dir.path("ca.pem"),
        dir.path("leaf.key"),
        dir.path("leaf.csr"),
        dir.path("leaf.pem"),
    );
    let pss = [
        "-sha256",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
    ];
    for key in [&ca_key, &leaf_key] {
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            key,
        ]);
    }
    let mut args = vec![
        "req",
        "-x509",
        "-new",
        "-key",
        &ca_key,
        "-subj",
        "/CN=PSS CA",
        "-days",
        "30",
        "-out",
        &ca,
    ];
    args.extend(pss);
    openssl(&args);
    openssl(&[
        "req",
        "-new",
        "-key",
        &leaf_key,
        "-subj",
        "/CN=pss leaf",
        "-out",
        &csr,
    ]);
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-set_serial",
        "7",
        "-days",
        "30",
        "-out",
        &leaf,
    ];
    args.extend(pss);
    openssl(&args);
    (read_pem(&ca), read_pem(&leaf))
}

fn read_pem(path: &str) -> Leaf {
    let pem = std::fs::read_to_string(path).unwrap();
    let der = openssl(&["x509", "-in", path, "-outform", "DER"]);
    Leaf { pem, der }
}
