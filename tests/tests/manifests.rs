//! The Kubernetes manifests in envoy/istio and envoy/gateway against the CRD schemas of Istio and
//! Envoy Gateway (`../shared/crds`): JSON Schema validation of `openAPIV3Schema`, and no field
//! that Kubernetes would prune without a word.

// Test code: a failed check stops the test loudly, with what was found.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use certbound_e2e::repo_root;
use certbound_e2e::shipped::{check_manifest, crd_schemas, manifest_files, yaml_documents};
use serde_json::{json, Value};

/// Files in the manifest folders that are not Kubernetes resources: Helm values, named so.
fn is_helm_values(path: &std::path::Path) -> bool {
    path.to_string_lossy().ends_with("-values.yaml")
}

fn manifest(path: &str, kind: &str) -> Value {
    yaml_documents(&repo_root().join(path))
        .into_iter()
        .find(|document| document["kind"] == kind)
        .unwrap_or_else(|| panic!("{path} has no {kind}"))
}

#[test]
fn every_manifest_matches_its_crd_schema() {
    let schemas = crd_schemas();
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for path in manifest_files() {
        if is_helm_values(&path) {
            continue;
        }
        for document in yaml_documents(&repo_root().join(&path)) {
            let what = format!(
                "{} {} {}",
                path.display(),
                document["kind"].as_str().unwrap_or("?"),
                document["metadata"]["name"].as_str().unwrap_or("?")
            );
            match check_manifest(&document, &schemas) {
                Ok(()) => checked.push(what),
                Err(problems) => failures.push(format!("{what}:\n  {}", problems.join("\n  "))),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let kinds = [
        "WasmPlugin",
        "Gateway",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "EnvoyExtensionPolicy",
        "GatewayClass",
        "HTTPRoute",
    ];
    for kind in kinds {
        assert!(
            checked
                .iter()
                .any(|what| what.contains(&format!(" {kind} "))),
            "no {kind} was checked: {checked:#?}"
        );
    }
    println!(
        "{} manifests valid:\n  {}",
        checked.len(),
        checked.join("\n  ")
    );
}

#[test]
fn helm_values_set_the_client_certificate_forwarding() {
    let path = repo_root().join("envoy/istio/ingressgateway-values.yaml");
    let values = &yaml_documents(&path)[0];
    assert!(values.get("kind").is_none(), "values are not a resource");
    let proxy_config = values["podAnnotations"]["proxy.istio.io/config"]
        .as_str()
        .expect("proxy.istio.io/config annotation");
    let proxy_config: Value = serde_yaml_ng::from_str(proxy_config).unwrap();
    assert_eq!(
        proxy_config["gatewayTopology"]["forwardClientCertDetails"], "SANITIZE_SET",
        "the sidecar variant reads the first XFCC element, which only SANITIZE_SET makes the \
         gateway's own"
    );
}

#[test]
fn the_istio_setup_is_the_one_certbound_needs() {
    let gateway = manifest("envoy/istio/gateway.yaml", "Gateway");
    assert_eq!(gateway["spec"]["servers"][0]["tls"]["mode"], "MUTUAL");

    for path in [
        "envoy/istio/wasmplugin-gateway.yaml",
        "envoy/istio/wasmplugin-sidecar.yaml",
    ] {
        let plugin = manifest(path, "WasmPlugin");
        let spec = &plugin["spec"];
        assert_eq!(
            spec["phase"], "AUTHZ",
            "{path}: after RequestAuthentication"
        );
        assert_eq!(spec["failStrategy"], "FAIL_CLOSE", "{path}");
        assert!(
            spec["url"].as_str().unwrap().starts_with("oci://"),
            "{path}"
        );
        assert_eq!(spec["sha256"].as_str().unwrap().len(), 64, "{path}");
    }

    let gateway_plugin = manifest("envoy/istio/wasmplugin-gateway.yaml", "WasmPlugin");
    assert_eq!(
        gateway_plugin["spec"]["selector"]["matchLabels"]["istio"],
        "ingressgateway"
    );
    assert!(gateway_plugin["spec"]["pluginConfig"]
        .get("certificate_header")
        .is_none());

    let sidecar = manifest("envoy/istio/wasmplugin-sidecar.yaml", "WasmPlugin");
    let config = &sidecar["spec"]["pluginConfig"];
    assert_eq!(config["certificate_header"], "x-forwarded-client-cert");
    assert_eq!(config["certificate_header_format"], "xfcc");
    assert_eq!(config["xfcc_element"], "first");
    let identities = config["trusted_proxies"]["peer_identities"]
        .as_array()
        .unwrap();
    assert!(
        identities.iter().all(|id| id
            .as_str()
            .unwrap()
            .starts_with("spiffe://cluster.local/ns/istio-system/sa/")),
        "{identities:?}"
    );
    assert!(config["trusted_proxies"].get("any").is_none());

    for document in yaml_documents(&repo_root().join("envoy/istio/request-authentication.yaml")) {
        if document["kind"] == "RequestAuthentication" {
            for rule in document["spec"]["jwtRules"].as_array().unwrap() {
                assert_eq!(
                    rule["forwardOriginalToken"], true,
                    "certbound reads the token after jwt_authn: it must not be removed"
                );
                assert!(rule.get("jwks").is_some() || rule.get("jwksUri").is_some());
            }
        }
    }
}

#[test]
fn the_envoy_gateway_setup_is_the_one_certbound_needs() {
    let policy = manifest(
        "envoy/gateway/envoy-extension-policy.yaml",
        "EnvoyExtensionPolicy",
    );
    let wasm = &policy["spec"]["wasm"][0];
    assert_eq!(wasm["name"], "certbound");
    assert_eq!(wasm["failOpen"], false);
    assert_eq!(wasm["code"]["type"], "Image");
    assert_eq!(wasm["code"]["image"]["sha256"].as_str().unwrap().len(), 64);

    let gateway = manifest("envoy/gateway/gateway.yaml", "Gateway");
    assert_eq!(
        policy["spec"]["targetRefs"][0]["name"],
        gateway["metadata"]["name"]
    );
    let validation = &gateway["spec"]["tls"]["frontend"]["default"]["validation"];
    assert_eq!(validation["mode"], "AllowValidOnly");
    assert!(!validation["caCertificateRefs"]
        .as_array()
        .unwrap()
        .is_empty());

    let class = manifest("envoy/gateway/gatewayclass.yaml", "GatewayClass");
    assert_eq!(
        gateway["spec"]["gatewayClassName"],
        class["metadata"]["name"]
    );
    let route = manifest("envoy/gateway/httproute.yaml", "HTTPRoute");
    assert_eq!(
        route["spec"]["parentRefs"][0]["name"],
        gateway["metadata"]["name"]
    );
}

/// The validator is only worth something if it refuses: each broken copy must be refused, with
/// a message that names the broken field.
#[test]
fn broken_manifests_are_refused() {
    let schemas = crd_schemas();
    let plugin = manifest("envoy/istio/wasmplugin-gateway.yaml", "WasmPlugin");
    let policy = manifest(
        "envoy/gateway/envoy-extension-policy.yaml",
        "EnvoyExtensionPolicy",
    );
    let gateway = manifest("envoy/istio/gateway.yaml", "Gateway");
    assert!(check_manifest(&plugin, &schemas).is_ok());
    assert!(check_manifest(&policy, &schemas).is_ok());

    type Break = fn(&mut Value);
    let table: Vec<(&str, Value, Break, &str)> = vec![
        (
            "wrong enum",
            plugin.clone(),
            |m| m["spec"]["failStrategy"] = json!("FAIL_CLOSED"),
            "failStrategy",
        ),
        (
            "wrong phase",
            plugin.clone(),
            |m| m["spec"]["phase"] = json!("AUTHORIZATION"),
            "phase",
        ),
        (
            "sha256 not hex",
            plugin.clone(),
            |m| m["spec"]["sha256"] = json!("sha256:abc"),
            "sha256",
        ),
        (
            "unknown field (typo)",
            plugin.clone(),
            |m| {
                let config = m["spec"]["pluginConfig"].take();
                m["spec"]["pluginconfig"] = config;
            },
            "spec.pluginconfig",
        ),
        (
            "wrong type",
            plugin.clone(),
            |m| m["spec"]["priority"] = json!("high"),
            "priority",
        ),
        (
            "unknown version",
            plugin.clone(),
            |m| m["apiVersion"] = json!("extensions.istio.io/v1"),
            "no CRD schema",
        ),
        (
            "TLS mode not in the enum",
            gateway.clone(),
            |m| m["spec"]["servers"][0]["tls"]["mode"] = json!("MTLS"),
            "mode",
        ),
        (
            "nested unknown field",
            policy.clone(),
            |m| m["spec"]["wasm"][0]["code"]["image"]["digest"] = json!("x"),
            "spec.wasm[0].code.image.digest",
        ),
        (
            "unknown pull policy",
            policy.clone(),
            |m| m["spec"]["wasm"][0]["code"]["pullPolicy"] = json!("Never"),
            "pullPolicy",
        ),
        (
            "unknown metadata field",
            policy.clone(),
            |m| m["metadata"]["labelz"] = json!({}),
            "metadata.labelz",
        ),
    ];
    for (what, mut broken, damage, needle) in table {
        damage(&mut broken);
        let problems = check_manifest(&broken, &schemas)
            .err()
            .unwrap_or_else(|| panic!("{what}: the broken manifest was accepted"));
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{what}: no problem names {needle}: {problems:#?}"
        );
    }
}
