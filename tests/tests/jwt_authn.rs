//! jwt_authn in front of certbound (envoy/jwt-authn.yaml), with tokens signed at test time:
//! jwt_authn stops forged tokens, certbound stops genuine tokens used with another certificate,
//! in both claim sources.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use certbound_e2e::{client, get, Envoy, Pki, Setup, Upstream};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// An ES256 issuer: signs tokens, and publishes its key as the JWKS jwt_authn reads.
struct Issuer {
    key: EcdsaKeyPair,
}

impl Issuer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Issuer { key }
    }

    fn jwks(&self) -> String {
        // An uncompressed P-256 point: 0x04, then x and y.
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "test", "alg": "ES256",
                         "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]})
        .to_string()
    }

    fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "test"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

fn claims(cnf: Option<String>, exp_from_now: i64) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = json!({
        "iss": "https://issuer.certbound.demo",
        "aud": "certbound-demo",
        "sub": "client",
        "exp": now + exp_from_now,
    });
    if let Some(thumbprint) = cnf {
        claims["cnf"] = json!({"x5t#S256": thumbprint});
    }
    claims
}

const CERTBOUND_HEADER_MODE: &str =
    r#"{"mode": "enforce", "forward_thumbprint_header": "x-client-cert-thumbprint"}"#;

#[test]
fn jwt_authn_and_certbound_stop_different_attacks_in_both_claim_sources() {
    let pki = Pki::new();
    let issuer = Issuer::new();
    pki.write("jwks.json", &issuer.jwks());
    let forger = Issuer::new();
    let upstream = Upstream::start();

    // None: the shipped configuration (claims_source jwt_authn).
    for plugin_config in [None, Some(CERTBOUND_HEADER_MODE)] {
        let envoy = Envoy::start(&Setup {
            config: "envoy/jwt-authn.yaml",
            plugin_config,
            clusters: vec![("upstream", upstream.port)],
            pki_dir: pki.dir.path(),
            listener_plugin_configs: vec![],
        });
        let source = if plugin_config.is_none() {
            "jwt_authn"
        } else {
            "header"
        };
        let url = format!("{}/orders/1", envoy.https("https"));
        let a = client(&pki, Some(&pki.client_a), false);
        let b = client(&pki, Some(&pki.client_b), false);
        let call = |client: &reqwest::blocking::Client, token: &str| {
            let value = format!("Bearer {token}");
            get(client, &url, &[("authorization", value.as_bytes())])
        };
        let bound_to_a = claims(Some(pki.client_a.x5t_s256()), 300);

        let reply = call(&a, &issuer.sign(&bound_to_a));
        assert_eq!(
            reply.status, 200,
            "{source}: genuine bound token: {}",
            reply.body
        );
        let seen = upstream.requests().pop().unwrap();
        assert_eq!(
            seen.header("x-client-cert-thumbprint"),
            Some(pki.client_a.x5t_s256().as_str())
        );

        // Forged: the right cnf, signed by someone else. jwt_authn answers; certbound never runs.
        let denials_before = envoy.certbound_log().len();
        let reply = call(&a, &forger.sign(&bound_to_a));
        assert_eq!(reply.status, 401, "{source}: forged token");
        assert!(
            reply.body.contains("Jwt verification fails"),
            "{source}: {}",
            reply.body
        );
        assert_eq!(
            envoy.certbound_log().len(),
            denials_before,
            "{source}: certbound judged it"
        );

        // Expired: jwt_authn again.
        let reply = call(
            &a,
            &issuer.sign(&claims(Some(pki.client_a.x5t_s256()), -300)),
        );
        assert_eq!(reply.status, 401, "{source}: expired token");
        assert!(
            reply.body.contains("Jwt is expired"),
            "{source}: {}",
            reply.body
        );

        // Genuine, but presented with another certificate: certbound.
        let reply = call(&b, &issuer.sign(&bound_to_a));
        assert_eq!(reply.status, 401, "{source}: stolen token");
        assert_eq!(reply.json()["error"], "invalid_token");
        let line = envoy.certbound_log().pop().unwrap();
        assert!(
            line.contains(": thumbprint_mismatch (401)"),
            "{source}: {line}"
        );

        // Genuine and unbound: passes (require_bound_token is off).
        assert_eq!(
            call(&b, &issuer.sign(&claims(None, 300))).status,
            200,
            "{source}: unbound"
        );
        // Genuine with a malformed confirmation: certbound.
        let malformed = claims(Some("not-a-thumbprint".into()), 300);
        let reply = call(&a, &issuer.sign(&malformed));
        assert_eq!(reply.status, 401, "{source}: malformed cnf");
        let line = envoy.certbound_log().pop().unwrap();
        assert!(
            line.contains(": malformed_confirmation (401)"),
            "{source}: {line}"
        );
        // A cnf that is not an object is malformed in both sources; one with another method
        // (DPoP's jkt) leaves the token unbound.
        for cnf in [json!("x5t"), json!(["x5t#S256"])] {
            let mut not_an_object = claims(None, 300);
            not_an_object["cnf"] = cnf.clone();
            let reply = call(&a, &issuer.sign(&not_an_object));
            assert_eq!(reply.status, 401, "{source}: cnf {cnf}");
            let line = envoy.certbound_log().pop().unwrap();
            assert!(
                line.contains(": malformed_confirmation (401)"),
                "{source}: {cnf}: {line}"
            );
        }
        let mut dpop = claims(None, 300);
        dpop["cnf"] = json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"});
        assert_eq!(
            call(&b, &issuer.sign(&dpop)).status,
            200,
            "{source}: cnf with jkt only"
        );
        assert_eq!(
            upstream.count(),
            3 * (if source == "header" { 2 } else { 1 })
        );
    }
}

#[test]
fn jwt_authn_source_without_verified_claims_is_denied() {
    let pki = Pki::new();
    let issuer = Issuer::new();
    pki.write("jwks.json", &issuer.jwks());
    let upstream = Upstream::start();
    // A payload key jwt_authn does not write: certbound finds no verified claims and denies.
    let envoy = Envoy::start(&Setup {
        config: "envoy/jwt-authn.yaml",
        plugin_config: Some(r#"{"claims_source": "jwt_authn", "jwt_authn_payload_key": "other"}"#),
        clusters: vec![("upstream", upstream.port)],
        pki_dir: pki.dir.path(),
        listener_plugin_configs: vec![],
    });
    let a = client(&pki, Some(&pki.client_a), false);
    let token = format!(
        "Bearer {}",
        issuer.sign(&claims(Some(pki.client_a.x5t_s256()), 300))
    );
    let reply = get(
        &a,
        &format!("{}/orders/1", envoy.https("https")),
        &[("authorization", token.as_bytes())],
    );
    assert_eq!(reply.status, 401, "{}", reply.body);
    let line = envoy.certbound_log().pop().unwrap();
    assert!(line.contains(": no_verified_claims (401)"), "{line}");
    assert_eq!(upstream.count(), 0);
}
