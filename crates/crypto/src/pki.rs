//! Cluster PKI: certificates made for the occasion, for mutual TLS between a
//! hub and its nodes.
//!
//! One self-signed CA per cluster ([`Ca::generate`], CN
//! `Airlock cluster CA <cluster>`, ECDSA P-256, path length 0, valid one
//! year) issues leaf certificates ([`Ca::issue`]) usable for both server and
//! client authentication, whose CN names the member (or `hub`). Each side
//! trusts only the cluster CA and learns who its peer is from the CN
//! ([`cert_common_name`]). Keys are PKCS#8 PEM; write them with
//! [`write_private`].
//!
//! This crate only makes and reads certificates; it holds no TLS stack.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;

use crate::files::replace_private;
use crate::CryptoError;

/// How long the CA and its leaves are valid, from the moment they are made.
pub const VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How far back `notBefore` is set, to tolerate small clock differences.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The CN prefix of a cluster CA.
const CA_CN_PREFIX: &str = "Airlock cluster CA ";

fn cert_error(what: &str, e: impl fmt::Display) -> CryptoError {
    CryptoError::Certificate(format!("{what}: {e}"))
}

fn now_unix() -> Result<u64, CryptoError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| CryptoError::Certificate("the system clock is before 1970".into()))
}

/// Sets `notBefore` and `notAfter`, given in seconds since the Unix epoch.
fn set_validity(params: &mut CertificateParams, not_before: u64, not_after: u64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(not_before);
    params.not_after = epoch + Duration::from_secs(not_after);
}

fn new_key() -> Result<KeyPair, CryptoError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| cert_error("cannot generate an ECDSA P-256 key", e))
}

/// The first `CERTIFICATE` block of a PEM text, as DER.
fn first_cert_der(cert_pem: &str) -> Result<Vec<u8>, CryptoError> {
    for block in Pem::iter_from_buffer(cert_pem.as_bytes()) {
        let block = block.map_err(|e| cert_error("cannot parse the certificate PEM", e))?;
        if block.label == "CERTIFICATE" {
            return Ok(block.contents);
        }
    }
    Err(CryptoError::Certificate(
        "no CERTIFICATE block in the PEM text".into(),
    ))
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, CryptoError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CryptoError::Certificate(
            "trailing bytes after the certificate DER".into(),
        )),
        Err(e) => Err(cert_error("cannot parse the certificate DER", e)),
    }
}

/// A certificate and its private key, both PEM (the key as PKCS#8).
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM. Write it with [`write_private`].
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"..")
            .finish()
    }
}

/// A cluster's certificate authority: its certificate and signing key.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
    /// `notAfter` of the CA certificate, in seconds since the Unix epoch;
    /// no leaf outlives it.
    not_after: u64,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"..")
            .finish()
    }
}

impl Ca {
    /// A fresh self-signed CA for `cluster`: CN `Airlock cluster CA <cluster>`,
    /// ECDSA P-256, basic constraints CA with path length 0, key usages
    /// keyCertSign, cRLSign and digitalSignature, valid for [`VALIDITY`].
    pub fn generate(cluster: &str) -> Result<Ca, CryptoError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{CA_CN_PREFIX}{cluster}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = now_unix()?;
        let not_after = now + VALIDITY.as_secs();
        set_validity(&mut params, now - BACKDATE.as_secs(), not_after);
        let cert = params
            .self_signed(&key)
            .map_err(|e| cert_error("cannot make the CA certificate", e))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// The CA certificate, PEM: what hub and nodes trust.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA private key, PKCS#8 PEM. Write it with [`write_private`].
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// Loads a CA saved as [`Ca::cert_pem`] and [`Ca::key_pem`]. Checks that
    /// the certificate is a CA and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CryptoError> {
        let der = first_cert_der(cert_pem)?;
        let cert = parse_der(&der)?;
        if !cert.is_ca() {
            return Err(CryptoError::Certificate(
                "the CA certificate is not a CA (basic constraints)".into(),
            ));
        }
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| cert_error("cannot parse the CA private key PEM", e))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(CryptoError::Certificate(
                "the CA private key does not match the CA certificate".into(),
            ));
        }
        let not_after = u64::try_from(cert.validity().not_after.timestamp()).map_err(|_| {
            CryptoError::Certificate("the CA certificate expires before 1970".into())
        })?;
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
            .map_err(|e| cert_error("cannot use the CA certificate as issuer", e))?;
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            not_after,
        })
    }

    /// Issues a leaf certificate with a fresh ECDSA P-256 key: CN
    /// `common_name` (the member, or `hub`), extended key usages serverAuth
    /// and clientAuth, key usage digitalSignature, not a CA. Each entry of
    /// `sans` that parses as an IP address (`127.0.0.1`, `::1`) becomes an IP
    /// SAN, any other a DNS SAN. Valid for [`VALIDITY`], but never past the
    /// CA's own expiry.
    pub fn issue(&self, common_name: &str, sans: &[&str]) -> Result<Issued, CryptoError> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params =
            CertificateParams::new(sans).map_err(|e| cert_error("invalid subject alt name", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = now_unix()?;
        let not_after = (now + VALIDITY.as_secs()).min(self.not_after);
        if not_after <= now {
            return Err(CryptoError::Certificate(
                "the CA certificate has expired".into(),
            ));
        }
        set_validity(&mut params, now - BACKDATE.as_secs(), not_after);
        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| cert_error("cannot issue the certificate", e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The fingerprint of the first certificate in `cert_pem`: `"SHA256:"`
/// followed by the lowercase hex of SHA-256 over its DER (64 characters).
pub fn cert_fingerprint(cert_pem: &str) -> Result<String, CryptoError> {
    let der = first_cert_der(cert_pem)?;
    parse_der(&der)?;
    Ok(format!("SHA256:{}", hex::encode(Sha256::digest(&der))))
}

/// The subject common name of a DER certificate (the first one, if the
/// subject has several).
pub fn cert_common_name(cert_der: &[u8]) -> Result<String, CryptoError> {
    let cert = parse_der(cert_der)?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| CryptoError::Certificate("the certificate has no common name".into()))?;
    cn.as_str()
        .map(str::to_string)
        .map_err(|e| cert_error("the certificate's common name is not a string", e))
}

/// Writes `contents` (a private key, say) to `path` with mode 0600,
/// creating missing parent folders (mode 0700). An existing file is replaced
/// atomically (new file beside it, then rename), so it ends up 0600 too.
pub fn write_private(path: &Path, contents: &str) -> Result<(), CryptoError> {
    replace_private(path, contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::extensions::GeneralName;

    fn der_of(pem: &str) -> Vec<u8> {
        first_cert_der(pem).expect("pem")
    }

    /// Checks a leaf: CN, SANs, EKU, not a CA, issued and signed by `ca`.
    fn check_leaf(ca: &Ca, leaf: &Issued, cn: &str, dns: &[&str], ips: &[&str]) {
        let ca_der = der_of(&ca.cert_pem());
        let ca_cert = parse_der(&ca_der).expect("ca");
        let der = der_of(&leaf.cert_pem);
        let cert = parse_der(&der).expect("leaf");

        assert_eq!(cert_common_name(&der).expect("cn"), cn);
        assert_eq!(cert.issuer(), ca_cert.subject());
        assert!(!cert.is_ca());
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert!(cert.validity().is_valid());

        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!eku.any && !eku.code_signing);

        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        let mut got_dns = Vec::new();
        let mut got_ips = Vec::new();
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => got_dns.push(d.to_string()),
                GeneralName::IPAddress(raw) => {
                    let ip = match raw.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*raw).expect("v4")),
                        16 => IpAddr::from(<[u8; 16]>::try_from(*raw).expect("v6")),
                        n => panic!("bad IP length {n}"),
                    };
                    got_ips.push(ip);
                }
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(got_dns, dns);
        let want_ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().expect("ip")).collect();
        assert_eq!(got_ips, want_ips);

        // The key is the certificate's key.
        let key = KeyPair::from_pem(&leaf.key_pem).expect("key");
        assert_eq!(
            key.public_key_raw(),
            cert.public_key().subject_public_key.data.as_ref()
        );
    }

    #[test]
    fn ca_is_a_constrained_self_signed_ca() {
        let ca = Ca::generate("demo").expect("ca");
        let der = der_of(&ca.cert_pem());
        let cert = parse_der(&der).expect("parse");
        assert_eq!(
            cert_common_name(&der).expect("cn"),
            "Airlock cluster CA demo"
        );
        assert_eq!(cert.issuer(), cert.subject());
        cert.verify_signature(None).expect("self-signed");
        let bc = cert
            .basic_constraints()
            .expect("bc")
            .expect("present")
            .value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().expect("ku").expect("present").value;
        assert!(ku.key_cert_sign());
        let validity = cert.validity();
        assert!(validity.is_valid());
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
        assert!((364..=366).contains(&days), "{days} days");
        assert!(format!("{ca:?}").find("PRIVATE").is_none());
    }

    #[test]
    fn issues_server_and_client_leaves() {
        let ca = Ca::generate("demo").expect("ca");
        let hub = ca
            .issue("hub", &["localhost", "127.0.0.1", "::1"])
            .expect("hub");
        let node = ca
            .issue("acme", &["acme.local", "127.0.0.2"])
            .expect("node");
        check_leaf(&ca, &hub, "hub", &["localhost"], &["127.0.0.1", "::1"]);
        check_leaf(&ca, &node, "acme", &["acme.local"], &["127.0.0.2"]);
        assert_ne!(hub.key_pem, node.key_pem);

        // A leaf from another CA is not signed by this one.
        let other = Ca::generate("other").expect("ca");
        let ca_der = der_of(&ca.cert_pem());
        let ca_cert = parse_der(&ca_der).expect("ca");
        let stranger_der = der_of(&other.issue("acme", &["localhost"]).expect("leaf").cert_pem);
        let stranger = parse_der(&stranger_der).expect("leaf");
        assert!(stranger
            .verify_signature(Some(ca_cert.public_key()))
            .is_err());
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        let ca = Ca::generate("demo").expect("ca");
        let a = ca.issue("a", &["localhost"]).expect("a");
        let b = ca.issue("b", &["localhost"]).expect("b");
        let fa = cert_fingerprint(&a.cert_pem).expect("fp");
        assert_eq!(fa, cert_fingerprint(&a.cert_pem).expect("fp"));
        assert_ne!(fa, cert_fingerprint(&b.cert_pem).expect("fp"));
        assert_ne!(fa, cert_fingerprint(&ca.cert_pem()).expect("fp"));
        let want = format!(
            "SHA256:{}",
            hex::encode(Sha256::digest(der_of(&a.cert_pem)))
        );
        assert_eq!(fa, want);
        assert_eq!(fa.len(), "SHA256:".len() + 64);
        // The first certificate of a chain counts.
        let chain = format!("{}{}", a.cert_pem, ca.cert_pem());
        assert_eq!(cert_fingerprint(&chain).expect("fp"), fa);
    }

    #[test]
    fn from_pem_round_trip_can_issue_again() {
        let ca = Ca::generate("demo").expect("ca");
        let loaded = Ca::from_pem(&ca.cert_pem(), &ca.key_pem()).expect("load");
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        assert_eq!(loaded.key_pem(), ca.key_pem());
        let leaf = loaded
            .issue("acme", &["localhost", "127.0.0.1"])
            .expect("issue");
        check_leaf(&ca, &leaf, "acme", &["localhost"], &["127.0.0.1"]);
        // Leaves never outlive the CA.
        let ca_der = der_of(&ca.cert_pem());
        let ca_not_after = parse_der(&ca_der).expect("ca").validity().not_after;
        let leaf_der = der_of(&leaf.cert_pem);
        assert!(parse_der(&leaf_der).expect("leaf").validity().not_after <= ca_not_after);
    }

    #[test]
    fn bad_pem_gives_clear_errors() {
        let ca = Ca::generate("demo").expect("ca");
        let other = Ca::generate("other").expect("ca");
        let leaf = ca.issue("acme", &["localhost"]).expect("leaf");
        let err = |r: Result<Ca, CryptoError>| r.expect_err("must fail").to_string();

        let e = err(Ca::from_pem("garbage", &ca.key_pem()));
        assert!(e.contains("no CERTIFICATE block"), "{e}");
        let e = err(Ca::from_pem(&ca.cert_pem(), "garbage"));
        assert!(e.contains("CA private key PEM"), "{e}");
        let e = err(Ca::from_pem(&ca.cert_pem(), &other.key_pem()));
        assert!(e.contains("does not match"), "{e}");
        let e = err(Ca::from_pem(&leaf.cert_pem, &leaf.key_pem));
        assert!(e.contains("not a CA"), "{e}");
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = err(Ca::from_pem(broken, &ca.key_pem()));
        assert!(e.contains("cannot parse the certificate"), "{e}");
        // No key material in any message.
        for e in [
            err(Ca::from_pem(&ca.cert_pem(), &other.key_pem())),
            err(Ca::from_pem(&ca.cert_pem(), "garbage")),
        ] {
            assert!(!e.contains("PRIVATE KEY"), "{e}");
        }

        assert!(cert_fingerprint("garbage").is_err());
        assert!(cert_fingerprint(broken).is_err());
        assert!(cert_common_name(b"garbage").is_err());
    }

    #[test]
    fn write_private_is_owner_only_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pki/deep/hub.key");
        write_private(&path, "first").expect("write");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("pki")), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, "second").expect("replace");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "second");
        assert_eq!(mode(&path), 0o600);
        let leftovers = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }
}

/// Signs `message` with a PEM PKCS#8 ECDSA P-256 key (a hub's or node's TLS
/// key): an ASN.1 DER signature over SHA-256.
pub fn sign(key_pem: &str, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let key = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|e| cert_error("cannot read the signing key", e))?;
    let rng = ring::rand::SystemRandom::new();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der(), &rng)
            .map_err(|e| cert_error("the signing key is not an ECDSA P-256 key", e))?;
    pair.sign(&rng, message)
        .map(|s| s.as_ref().to_vec())
        .map_err(|e| cert_error("signing failed", e))
}

/// Checks an ECDSA P-256 signature over `message` by the key of the first
/// certificate in `cert_pem`. Every failure is the same error.
pub fn verify(cert_pem: &str, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
    let der = first_cert_der(cert_pem)?;
    let cert = parse_der(&der)?;
    let key = cert.public_key().subject_public_key.data.to_vec();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key)
        .verify(message, signature)
        .map_err(|_| CryptoError::Certificate("the signature does not verify".into()))
}

#[cfg(test)]
mod signing_tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_does_not() {
        let ca = Ca::generate("t").expect("ca");
        let hub = ca.issue("hub", &["localhost"]).expect("hub");
        let other = ca.issue("other", &["localhost"]).expect("other");
        let sig = sign(&hub.key_pem, b"metadata").expect("sign");
        verify(&hub.cert_pem, b"metadata", &sig).expect("verifies");
        assert!(verify(&hub.cert_pem, b"metadatA", &sig).is_err());
        assert!(verify(&other.cert_pem, b"metadata", &sig).is_err());
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(verify(&hub.cert_pem, b"metadata", &bad).is_err());
        assert!(sign("not a key", b"x").is_err());
    }
}
