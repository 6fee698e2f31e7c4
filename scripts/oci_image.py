#!/usr/bin/env python3
"""Packs certbound.wasm as an OCI image layout, without a container engine.

The image is the *compat* variant of the Wasm image specification, which both Istio (WasmPlugin
`url: oci://...`) and Envoy Gateway (EnvoyExtensionPolicy `code.type: Image`) pull: a single layer
of media type application/vnd.oci.image.layer.v1.tar+gzip holding one file, plugin.wasm, and the
manifest annotation module.wasm.image/variant=compat. Registries and tools treat it as an ordinary
image (oras, crane, skopeo push it from the layout).

The output is reproducible: the same module gives the same digests (fixed tar metadata, gzip
mtime 0), so the manifest digest that WasmPlugin/EnvoyExtensionPolicy `sha256` must hold can be
computed ahead of a push.

usage: oci_image.py MODULE OUTPUT_DIR [TAG]
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def layer_tar(module):
    """An uncompressed tar with plugin.wasm, metadata fixed so the bytes depend on the module only."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(module)
        info.mode = 0o444
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buffer.getvalue()


def write_blob(blobs, data):
    digest = sha256(data)
    with open(os.path.join(blobs, digest), "wb") as blob:
        blob.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[-1])
    module_path, out = argv[1], argv[2]
    tag = argv[3] if len(argv) == 4 else "latest"
    with open(module_path, "rb") as f:
        module = f.read()
    if module[:4] != b"\0asm":
        sys.exit(f"{module_path} is not a WebAssembly module")

    shutil.rmtree(out, ignore_errors=True)
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs)

    tar = layer_tar(module)
    layer = write_blob(blobs, gzip.compress(tar, mtime=0))
    config = write_blob(
        blobs,
        json.dumps(
            {
                "architecture": "wasm",
                "os": "wasip1",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(tar)]},
            },
            sort_keys=True,
        ).encode(),
    )
    manifest_bytes = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, **config},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, **layer}],
            "annotations": {"module.wasm.image/variant": "compat"},
        },
        sort_keys=True,
    ).encode()
    manifest = write_blob(blobs, manifest_bytes)

    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(
            {
                "schemaVersion": 2,
                "mediaType": INDEX_MEDIA_TYPE,
                "manifests": [
                    {
                        "mediaType": MANIFEST_MEDIA_TYPE,
                        **manifest,
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            },
            f,
            sort_keys=True,
        )

    image_digest = manifest["digest"].removeprefix("sha256:")
    print(f"OCI image layout in {out} (tag {tag}), compat Wasm image, layer {layer['digest']}")
    print(f"  module sha256 (http/https url sha256): {sha256(module)}")
    print(f"  image digest  (oci:// url sha256):     {image_digest}")
    print(f"  WasmPlugin / EnvoyExtensionPolicy image: sha256: \"{image_digest}\"")


if __name__ == "__main__":
    main(sys.argv)
