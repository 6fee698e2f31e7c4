//! `make oci` (scripts/oci_image.py): the OCI image layout of certbound.wasm that Istio and Envoy
//! Gateway pull, checked blob by blob.

// Test code: a failed check stops the test loudly, with what was found.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use certbound_e2e::{repo_root, wasm_path};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pack(out: &Path) -> String {
    let output = Command::new("python3")
        .arg(repo_root().join("scripts/oci_image.py"))
        .arg(wasm_path())
        .arg(out)
        .arg("0.1.0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Reads a blob that a descriptor names, checking its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> Result<Vec<u8>, String> {
    let digest = descriptor["digest"]
        .as_str()
        .ok_or("descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or(format!("not sha256: {digest}"))?;
    let bytes = fs::read(layout.join("blobs/sha256").join(hex))
        .map_err(|e| format!("blob {digest}: {e}"))?;
    if hex_sha256(&bytes) != hex {
        return Err(format!(
            "blob {digest} has digest sha256:{}",
            hex_sha256(&bytes)
        ));
    }
    if descriptor["size"].as_u64() != Some(bytes.len() as u64) {
        return Err(format!(
            "blob {digest} has size {}, not {}",
            bytes.len(),
            descriptor["size"]
        ));
    }
    Ok(bytes)
}

/// Checks the layout and returns (image manifest digest, plugin.wasm bytes).
fn check_layout(layout: &Path) -> Result<(String, Vec<u8>), String> {
    let read_json = |bytes: &[u8]| -> Result<Value, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    };
    let oci_layout = read_json(&fs::read(layout.join("oci-layout")).map_err(|e| e.to_string())?)?;
    if oci_layout["imageLayoutVersion"] != "1.0.0" {
        return Err(format!("oci-layout: {oci_layout}"));
    }
    let index = read_json(&fs::read(layout.join("index.json")).map_err(|e| e.to_string())?)?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or("index without manifests")?;
    let [descriptor] = manifests.as_slice() else {
        return Err(format!("{} manifests in the index", manifests.len()));
    };
    if descriptor["mediaType"] != "application/vnd.oci.image.manifest.v1+json" {
        return Err(format!("manifest media type {}", descriptor["mediaType"]));
    }
    if descriptor["annotations"]["org.opencontainers.image.ref.name"] != "0.1.0" {
        return Err("the tag is not in the index".into());
    }

    let manifest = read_json(&blob(layout, descriptor)?)?;
    if manifest["schemaVersion"] != 2
        || manifest["annotations"]["module.wasm.image/variant"] != "compat"
    {
        return Err(format!("not a compat Wasm image manifest: {manifest}"));
    }
    let layers = manifest["layers"].as_array().ok_or("no layers")?;
    let [layer] = layers.as_slice() else {
        return Err(format!(
            "{} layers, the compat variant has one",
            layers.len()
        ));
    };
    if layer["mediaType"] != "application/vnd.oci.image.layer.v1.tar+gzip" {
        return Err(format!("layer media type {}", layer["mediaType"]));
    }
    if manifest["config"]["mediaType"] != "application/vnd.oci.image.config.v1+json" {
        return Err(format!(
            "config media type {}",
            manifest["config"]["mediaType"]
        ));
    }
    let config = read_json(&blob(layout, &manifest["config"])?)?;

    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(blob(layout, layer)?.as_slice())
        .read_to_end(&mut tar_bytes)
        .map_err(|e| format!("layer is not gzip: {e}"))?;
    if config["rootfs"]["diff_ids"][0] != format!("sha256:{}", hex_sha256(&tar_bytes)) {
        return Err("config diff_id is not the layer's uncompressed digest".into());
    }
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut files = Vec::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = entry
            .path()
            .map_err(|e| e.to_string())?
            .display()
            .to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        files.push((name, bytes));
    }
    let [(name, wasm)] = files.as_slice() else {
        return Err(format!("{} files in the layer", files.len()));
    };
    if name != "plugin.wasm" {
        return Err(format!("the layer holds {name}, not plugin.wasm"));
    }
    let digest = descriptor["digest"].as_str().unwrap_or_default();
    Ok((
        digest.trim_start_matches("sha256:").to_string(),
        wasm.clone(),
    ))
}

#[test]
fn the_layout_holds_certbound_wasm_as_a_compat_wasm_image() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let printed = pack(&layout);
    let (image_digest, wasm) = check_layout(&layout).unwrap_or_else(|e| panic!("{e}"));

    let module = fs::read(wasm_path()).unwrap();
    assert!(wasm == module, "plugin.wasm differs from certbound.wasm");
    // The digests a WasmPlugin or EnvoyExtensionPolicy `sha256` holds, as make oci prints them.
    assert!(
        printed.contains(&format!(
            "module sha256 (http/https url sha256): {}",
            hex_sha256(&module)
        )),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("sha256: \"{image_digest}\"")),
        "{printed}"
    );
    println!("{printed}");

    // Reproducible: the same module gives the same image digest.
    let again = dir.path().join("again");
    pack(&again);
    assert_eq!(check_layout(&again).unwrap().0, image_digest);
}

#[test]
fn a_damaged_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    pack(&layout);
    let (image_digest, _) = check_layout(&layout).unwrap();
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_path = layout.join("blobs/sha256").join(&image_digest);
    let manifest: Value = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer_path = layout
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));

    // A changed byte in the layer.
    let original = fs::read(&layer_path).unwrap();
    let mut damaged = original.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    fs::write(&layer_path, &damaged).unwrap();
    let error = check_layout(&layout).unwrap_err();
    assert!(error.contains("has digest"), "{error}");
    fs::write(&layer_path, &original).unwrap();

    // A wrong size in the index.
    let mut wrong = index.clone();
    wrong["manifests"][0]["size"] = Value::from(1);
    fs::write(layout.join("index.json"), wrong.to_string()).unwrap();
    let error = check_layout(&layout).unwrap_err();
    assert!(error.contains("size"), "{error}");
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    assert!(check_layout(&layout).is_ok());
}
