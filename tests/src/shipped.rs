//! What the repository ships for deployments, read the way the tests check it: Envoy bootstrap
//! configs, Kubernetes manifests (Istio, Envoy Gateway), the CRD schemas they must satisfy, and
//! every certbound configuration found in any of them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

use crate::repo_root;

/// Every YAML document in a file, as JSON values (empty documents skipped).
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// `*.yaml` files under a folder of the repository, recursively, sorted, relative to the root.
pub fn yaml_files(folder: &str) -> Vec<PathBuf> {
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let root = repo_root();
    let mut files = Vec::new();
    collect(&root.join(folder), &mut files);
    let mut files: Vec<PathBuf> = files
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    files.sort();
    files
}

/// Envoy bootstrap configs: YAML under `envoy/` with top-level `static_resources` (the same rule
/// the Makefile's `validate` target uses to pick them).
pub fn envoy_bootstraps() -> Vec<PathBuf> {
    yaml_files("envoy")
        .into_iter()
        .filter(|path| {
            let docs = yaml_documents(&repo_root().join(path));
            docs.len() == 1 && docs[0].get("static_resources").is_some()
        })
        .collect()
}

/// Kubernetes manifest files: every YAML under `envoy/istio` and `envoy/gateway`.
pub fn manifest_files() -> Vec<PathBuf> {
    let mut files = yaml_files("envoy/istio");
    files.extend(yaml_files("envoy/gateway"));
    files
}

/// One certbound configuration found in the repository.
#[derive(Debug)]
pub struct PluginConfig {
    /// File and place inside it, for messages.
    pub origin: String,
    pub json: Value,
}

/// certbound's configuration of every certbound plugin in an Envoy config: the JSON string in the
/// `configuration` StringValue of each wasm filter named `certbound`.
pub fn plugin_configs_in_bootstrap(path: &Path) -> Vec<PluginConfig> {
    let mut found = Vec::new();
    for document in yaml_documents(&repo_root().join(path)) {
        visit(&document, &mut |object| {
            let is_certbound = object.contains_key("vm_config")
                && object.get("name").and_then(Value::as_str) == Some("certbound");
            if is_certbound {
                let text = object["configuration"]["value"]
                    .as_str()
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: certbound's configuration is not a StringValue",
                            path.display()
                        )
                    });
                let json = serde_json::from_str(text).unwrap_or_else(|e| {
                    panic!(
                        "{}: certbound's configuration is not JSON: {e}",
                        path.display()
                    )
                });
                found.push(PluginConfig {
                    origin: format!("{} (wasm configuration)", path.display()),
                    json,
                });
            }
        });
    }
    found
}

/// certbound's configuration in a Kubernetes manifest: Istio WasmPlugin `spec.pluginConfig`,
/// Envoy Gateway EnvoyExtensionPolicy `spec.wasm[].config` of the extension named certbound.
pub fn plugin_configs_in_manifest(path: &Path) -> Vec<PluginConfig> {
    let mut found = Vec::new();
    for document in yaml_documents(&repo_root().join(path)) {
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        match document["kind"].as_str() {
            Some("WasmPlugin") => found.push(PluginConfig {
                origin: format!("{} (WasmPlugin {name} pluginConfig)", path.display()),
                json: document["spec"]["pluginConfig"].clone(),
            }),
            Some("EnvoyExtensionPolicy") => {
                for wasm in document["spec"]["wasm"].as_array().into_iter().flatten() {
                    if wasm["name"] == "certbound" {
                        found.push(PluginConfig {
                            origin: format!(
                                "{} (EnvoyExtensionPolicy {name} wasm config)",
                                path.display()
                            ),
                            json: wasm["config"].clone(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// Every certbound configuration the repository ships: Envoy configs and manifests.
pub fn all_plugin_configs() -> Vec<PluginConfig> {
    let mut configs: Vec<PluginConfig> = envoy_bootstraps()
        .iter()
        .flat_map(|path| plugin_configs_in_bootstrap(path))
        .collect();
    configs.extend(
        manifest_files()
            .iter()
            .flat_map(|path| plugin_configs_in_manifest(path)),
    );
    configs
}

fn visit(value: &Value, f: &mut impl FnMut(&serde_json::Map<String, Value>)) {
    match value {
        Value::Object(object) => {
            f(object);
            object.values().for_each(|child| visit(child, f));
        }
        Value::Array(items) => items.iter().for_each(|item| visit(item, f)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// CRD schemas

/// Where the CRD schemas are: `shared/crds` beside the repository (CI puts a copy there).
pub fn crds_dir() -> PathBuf {
    let dir = repo_root().join("../shared/crds");
    assert!(
        dir.is_dir(),
        "CRD schemas not found at {} (shared/ must sit beside the repository)",
        dir.display()
    );
    dir
}

/// `openAPIV3Schema` of every CRD version in `shared/crds`, by (`group/version`, kind).
pub fn crd_schemas() -> BTreeMap<(String, String), Value> {
    let mut schemas = BTreeMap::new();
    for entry in fs::read_dir(crds_dir()).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for crd in yaml_documents(&path) {
            if crd["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let group = crd["spec"]["group"].as_str().unwrap();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
            for version in crd["spec"]["versions"].as_array().unwrap() {
                let name = version["name"].as_str().unwrap();
                let schema = version["schema"]["openAPIV3Schema"].clone();
                assert!(schema.is_object(), "{kind} {name} has no openAPIV3Schema");
                schemas.insert((format!("{group}/{name}"), kind.to_string()), schema);
            }
        }
    }
    schemas
}

/// Fields Kubernetes would prune because the schema does not declare them: walks the object
/// against `properties`/`additionalProperties`/`items`, honouring
/// `x-kubernetes-preserve-unknown-fields`. `metadata` is ObjectMeta, checked by the API server
/// itself, so only its top level is looked at here.
pub fn undeclared_fields(object: &Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(fields) = object {
        for (key, value) in fields {
            if key == "metadata" {
                let allowed = ["name", "namespace", "labels", "annotations"];
                for meta in value.as_object().into_iter().flat_map(|m| m.keys()) {
                    if !allowed.contains(&meta.as_str()) {
                        unknown.push(format!("metadata.{meta}"));
                    }
                }
            } else if key != "apiVersion" && key != "kind" {
                walk_declared(value, &schema["properties"][key], key, &mut unknown);
            }
        }
    }
    unknown
}

fn walk_declared(value: &Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    if schema.is_null() {
        unknown.push(path.to_string());
        return;
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    match value {
        Value::Object(fields) => {
            for (key, child) in fields {
                let child_path = format!("{path}.{key}");
                if let Some(declared) = schema["properties"].get(key) {
                    walk_declared(child, declared, &child_path, unknown);
                } else if schema["additionalProperties"].is_object() {
                    walk_declared(child, &schema["additionalProperties"], &child_path, unknown);
                } else if !preserve && schema["additionalProperties"] != true {
                    unknown.push(child_path);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk_declared(item, &schema["items"], &format!("{path}[{index}]"), unknown);
            }
        }
        _ => {}
    }
}

/// Checks one manifest against the CRD schemas: the schema of its apiVersion and kind must
/// exist, the object must validate against it (JSON Schema draft 4, the dialect OpenAPI v3
/// schemas are based on; CEL `x-kubernetes-validations` are not evaluated), and it must declare
/// no field that Kubernetes would prune. Returns every problem found.
pub fn check_manifest(
    manifest: &Value,
    schemas: &BTreeMap<(String, String), Value>,
) -> Result<(), Vec<String>> {
    let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
    let kind = manifest["kind"].as_str().unwrap_or_default();
    let Some(schema) = schemas.get(&(api_version.to_string(), kind.to_string())) else {
        return Err(vec![format!(
            "no CRD schema for apiVersion {api_version:?} kind {kind:?}"
        )]);
    };
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(schema)
        .unwrap_or_else(|e| panic!("the {kind} schema does not compile: {e}"));
    let mut problems: Vec<String> = validator
        .iter_errors(manifest)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    problems.extend(
        undeclared_fields(manifest, schema)
            .into_iter()
            .map(|path| format!("{path}: not declared by the schema (Kubernetes prunes it)")),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

// ---------------------------------------------------------------------------------------------
// certbound configuration schema

/// `schema/certbound-config.schema.json`.
pub fn config_schema() -> Value {
    let path = repo_root().join("schema/certbound-config.schema.json");
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// A validator for certbound configurations (draft 2020-12, as the schema declares).
pub fn config_validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&config_schema()).unwrap()
}

/// What certbound's parser says about a configuration.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Accepted,
    Refused(String),
}

pub fn parse_with_certbound(json: &Value) -> Parsed {
    match certbound::config::Config::parse(json.to_string().as_bytes()) {
        Ok(_) => Parsed::Accepted,
        Err(error) => Parsed::Refused(error.0),
    }
}
