//! docker-compose.yml without a container engine: it parses, what it mounts exists after
//! `make build certs`, the Envoy configs it runs pass `envoy --mode validate` and run natively,
//! and the trust between nginx and certbound lines up.

// Test code: a failed check stops the test loudly, with what was found.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use certbound_e2e::shipped::{plugin_configs_in_bootstrap, yaml_documents};
use certbound_e2e::{envoy_bin, get, jwt, repo_root, Envoy, Pki, Setup, Upstream};
use serde_json::{json, Value};

/// docker-compose.yml with YAML merge keys (`<<: *envoy`) applied, as Compose applies them.
fn compose() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    yaml.apply_merge().unwrap();
    serde_json::to_value(yaml).unwrap()
}

/// The Envoy configs the compose services run (`-c FILE`).
fn compose_envoy_configs(compose: &Value) -> Vec<String> {
    let mut configs = Vec::new();
    for service in compose["services"].as_object().unwrap().values() {
        if let Some(command) = service["command"].as_array() {
            let args: Vec<&str> = command.iter().filter_map(Value::as_str).collect();
            if args.first() == Some(&"envoy") {
                let at = args.iter().position(|a| *a == "-c").unwrap();
                configs.push(args[at + 1].to_string());
            }
        }
    }
    configs.sort();
    configs
}

#[test]
fn compose_file_parses_and_pins_envoy_1_40() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    for name in [
        "envoy",
        "envoy-behind-proxy",
        "nginx",
        "upstream",
        "direct-upstream",
    ] {
        assert!(services.contains_key(name), "no service {name}");
    }
    for name in ["envoy", "envoy-behind-proxy"] {
        let service = &services[name];
        let image = service["image"].as_str().unwrap();
        assert!(
            image.starts_with("envoyproxy/envoy:v1.40."),
            "{name}: {image}"
        );
        assert_eq!(service["working_dir"], "/certbound", "{name}");
    }
    assert_eq!(
        compose_envoy_configs(&compose),
        ["envoy/envoy-behind-proxy.yaml", "envoy/envoy.yaml"]
    );
}

/// Container path to host path, for every bind mount of a service.
fn mounts(service: &Value) -> Vec<(String, PathBuf)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|volume| {
            let parts: Vec<&str> = volume.as_str().unwrap().split(':').collect();
            assert!(parts[0].starts_with("./"), "not a bind mount: {volume}");
            (parts[1].to_string(), repo_root().join(parts[0]))
        })
        .collect()
}

fn host_path(mounts: &[(String, PathBuf)], container_path: &str) -> Option<PathBuf> {
    mounts.iter().find_map(|(inside, host)| {
        let rest = container_path.strip_prefix(inside.as_str())?;
        Some(host.join(rest.trim_start_matches('/')))
    })
}

#[test]
fn everything_compose_mounts_and_names_exists() {
    let compose = compose();
    let hint = "(run `make build certs` first)";
    for (name, service) in compose["services"].as_object().unwrap() {
        let mounts = mounts(service);
        for (_, host) in &mounts {
            assert!(host.exists(), "{name} mounts {} {hint}", host.display());
        }

        // Files the service's program reads, resolved through its mounts.
        let mut reads: Vec<String> = Vec::new();
        let working_dir = service["working_dir"].as_str().unwrap_or("/");
        if let Some(command) = service["command"].as_array() {
            for arg in command.iter().filter_map(Value::as_str) {
                if arg.ends_with(".yaml") || arg.ends_with(".py") {
                    reads.push(if arg.starts_with('/') {
                        arg.to_string()
                    } else {
                        format!("{working_dir}/{arg}")
                    });
                }
            }
        }
        for config in compose_envoy_configs(&json!({"services": {name: service}})) {
            let text = std::fs::read_to_string(repo_root().join(&config)).unwrap();
            for line in text.lines() {
                if let Some(rest) = line.split("filename: ").nth(1) {
                    let file = rest.trim_end_matches([' ', '}']);
                    reads.push(format!("{working_dir}/{file}"));
                }
            }
        }
        if name == "nginx" {
            let conf = std::fs::read_to_string(repo_root().join("envoy/nginx/nginx.conf")).unwrap();
            for word in conf.split_whitespace() {
                if word.starts_with("/certbound/") {
                    reads.push(word.trim_end_matches(';').to_string());
                }
            }
        }
        for file in reads {
            let host = host_path(&mounts, &file)
                .unwrap_or_else(|| panic!("{name} reads {file}, which it does not mount"));
            assert!(
                host.is_file(),
                "{name} reads {file}: {} is missing {hint}",
                host.display()
            );
        }
    }
}

#[test]
fn compose_envoy_configs_pass_envoy_validate() {
    for config in compose_envoy_configs(&compose()) {
        let text = std::fs::read_to_string(repo_root().join(&config)).unwrap();
        assert!(
            text.contains("\nstatic_resources:"),
            "{config}: the Makefile's validate target picks configs by top-level static_resources"
        );
        let output = Command::new(envoy_bin())
            .args(["--mode", "validate", "--log-level", "warn", "-c", &config])
            .current_dir(repo_root())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr).to_string()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{config} is not valid:\n{log}");
    }
}

fn ipv4_in(cidr: &str, address: Ipv4Addr) -> bool {
    let (network, bits) = cidr.split_once('/').unwrap();
    let network: Ipv4Addr = network.parse().unwrap();
    let bits: u32 = bits.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(network) & mask == u32::from(address) & mask
}

#[test]
fn nginx_and_certbound_agree_on_header_and_trust() {
    let compose = compose();
    let nginx_address: Ipv4Addr = compose["services"]["nginx"]["networks"]["certbound"]
        ["ipv4_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let subnet = compose["networks"]["certbound"]["ipam"]["config"][0]["subnet"]
        .as_str()
        .unwrap();
    assert!(ipv4_in(subnet, nginx_address));

    let configs =
        plugin_configs_in_bootstrap(std::path::Path::new("envoy/envoy-behind-proxy.yaml"));
    let config = &configs[0].json;
    assert_eq!(config["certificate_header"], "x-client-cert");
    assert_eq!(config["certificate_header_format"], "url-encoded-pem");
    let cidrs: Vec<&str> = config["trusted_proxies"]["cidrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(cidrs.iter().any(|c| ipv4_in(c, nginx_address)), "{cidrs:?}");
    let other: Ipv4Addr = compose["services"]["envoy-behind-proxy"]["networks"]["certbound"]
        ["ipv4_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !cidrs.iter().any(|c| ipv4_in(c, other)),
        "trusts more than nginx"
    );

    let conf = std::fs::read_to_string(repo_root().join("envoy/nginx/nginx.conf")).unwrap();
    assert!(conf.contains("proxy_set_header x-client-cert $ssl_client_escaped_cert;"));
    assert!(conf.contains("server envoy-behind-proxy:8080;"));
    let envoy = yaml_documents(&repo_root().join("envoy/envoy-behind-proxy.yaml")).remove(0);
    assert_eq!(
        envoy["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
        8080
    );
}

/// The behind-proxy config itself (not a copy) on real Envoy, with its own plugin configuration
/// (tests/tests/forwarded.rs runs it behind real proxies).
#[test]
fn behind_proxy_config_runs_natively() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    let setup = |plugin_config| Setup {
        config: "envoy/envoy-behind-proxy.yaml",
        plugin_config,
        clusters: vec![("upstream", upstream.port)],
        pki_dir: pki.dir.path(),
        listener_plugin_configs: vec![],
    };
    let envoy = Envoy::start(&setup(None));
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{}/orders/42", envoy.port("http"));

    let unbound = format!("Bearer {}", jwt(&json!({"sub": "plain"})));
    let reply = get(&client, &url, &[("authorization", unbound.as_bytes())]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(upstream.count(), 1);

    // A bound token with its certificate in x-client-cert, but from 127.0.0.1, which is not the
    // trusted proxy: the header must not count.
    let bound = format!("Bearer {}", pki.client_a.bound_token());
    let escaped = certbound_e2e::url_encoded(&pki.client_a.cert_pem);
    let reply = get(
        &client,
        &url,
        &[
            ("authorization", bound.as_bytes()),
            ("x-client-cert", escaped.as_bytes()),
        ],
    );
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(upstream.count(), 1, "reached the upstream");
    let line = envoy.certbound_log().pop().unwrap_or_default();
    assert!(line.contains("no_client_certificate"), "{line}");
}
