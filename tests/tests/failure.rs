//! Failure behaviour: what Envoy does when the wasm VM fails. The shipped configs fail closed,
//! and a VM that traps at run time keeps requests from the upstream.

use std::fs;

use certbound_e2e::{client, repo_root, Envoy, Pki, Setup, Upstream};
use serde_yaml_ng::Value;

/// Every certbound plugin in `value`: the `config` objects of the wasm filter named certbound.
fn certbound_plugins(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Mapping(map) => {
            let is_certbound = map.contains_key("vm_config")
                && map.get("name").and_then(Value::as_str) == Some("certbound");
            if is_certbound {
                found.push(value.clone());
            }
            map.values().for_each(|v| certbound_plugins(v, found));
        }
        Value::Sequence(items) => items.iter().for_each(|v| certbound_plugins(v, found)),
        _ => {}
    }
}

#[test]
fn shipped_configs_fail_closed() {
    let mut checked = 0;
    for entry in fs::read_dir(repo_root().join("envoy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let config: Value = serde_yaml_ng::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let mut plugins = Vec::new();
        certbound_plugins(&config, &mut plugins);
        for plugin in plugins {
            assert_eq!(
                plugin.get("failure_policy").and_then(Value::as_str),
                Some("FAIL_CLOSED"),
                "{}: a certbound plugin without failure_policy: FAIL_CLOSED",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no certbound plugin found in envoy/*.yaml");
}

/// A proxy-wasm module that loads and configures like certbound, then traps (`unreachable`) on
/// every request's headers: what a panic or an out-of-bounds access in a filter amounts to.
fn trapping_module() -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, items: &[Vec<u8>], out: &mut Vec<u8>) {
        let mut body = Vec::new();
        leb(items.len(), &mut body);
        items.iter().for_each(|item| body.extend(item));
        out.push(id);
        leb(body.len(), out);
        out.extend(body);
    }
    const I32: u8 = 0x7f;
    // Types: 0 () -> (), 1 (i32) -> i32, 2 (i32 i32) -> (), 3 (i32 i32) -> i32,
    // 4 (i32 i32 i32) -> i32, 5 (i32) -> ().
    let types = vec![
        vec![0x60, 0, 0],
        vec![0x60, 1, I32, 1, I32],
        vec![0x60, 2, I32, I32, 0],
        vec![0x60, 2, I32, I32, 1, I32],
        vec![0x60, 3, I32, I32, I32, 1, I32],
        vec![0x60, 1, I32, 0],
    ];
    // (export name, type, body without locals).
    let returns_1 = vec![0x41, 1, 0x0b];
    let functions: Vec<(&str, u8, Vec<u8>)> = vec![
        ("proxy_abi_version_0_2_1", 0, vec![0x0b]),
        ("proxy_on_memory_allocate", 1, vec![0x41, 0x80, 0x08, 0x0b]),
        ("proxy_on_context_create", 2, vec![0x0b]),
        ("proxy_on_vm_start", 3, returns_1.clone()),
        ("proxy_on_configure", 3, returns_1.clone()),
        ("proxy_on_request_headers", 4, vec![0x00, 0x0b]),
        ("proxy_on_done", 1, returns_1.clone()),
        ("proxy_on_delete", 5, vec![0x0b]),
    ];
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &types, &mut module);
    let signatures: Vec<Vec<u8>> = functions.iter().map(|(_, t, _)| vec![*t]).collect();
    section(3, &signatures, &mut module);
    section(5, &[vec![0x00, 2]], &mut module);
    let mut exports = vec![{
        let mut e = vec![6];
        e.extend(b"memory");
        e.extend([0x02, 0]);
        e
    }];
    for (index, (name, _, _)) in functions.iter().enumerate() {
        let mut e = Vec::new();
        leb(name.len(), &mut e);
        e.extend(name.as_bytes());
        e.push(0x00);
        leb(index, &mut e);
        exports.push(e);
    }
    section(7, &exports, &mut module);
    let bodies: Vec<Vec<u8>> = functions
        .iter()
        .map(|(_, _, code)| {
            let mut body = vec![0]; // no locals
            body.extend(code);
            let mut sized = Vec::new();
            leb(body.len(), &mut sized);
            sized.extend(body);
            sized
        })
        .collect();
    section(10, &bodies, &mut module);
    module
}

/// Runs the shipped config with `failure_policy` as given and the trapping module in place of
/// certbound. Returns the statuses of three requests (0: no HTTP answer) and what the upstream got.
fn requests_through_a_trapping_vm(policy: &str) -> (Vec<u16>, usize) {
    let pki = Pki::new();
    let upstream = Upstream::start();
    let shipped = fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
    assert!(shipped.contains("failure_policy: FAIL_CLOSED"));
    let config = pki.write(
        "envoy.yaml",
        &shipped.replace(
            "failure_policy: FAIL_CLOSED",
            &format!("failure_policy: {policy}"),
        ),
    );
    let module = pki.dir.path().join("trap.wasm");
    fs::write(&module, trapping_module()).unwrap();
    let envoy = Envoy::try_start_with_module(
        &Setup {
            config: config.to_str().unwrap(),
            plugin_config: None,
            clusters: vec![("upstream", upstream.port)],
            pki_dir: pki.dir.path(),
            listener_plugin_configs: vec![],
        },
        &module,
    )
    .unwrap_or_else(|log| panic!("Envoy did not start with the trapping module:\n{log}"));

    let c = client(&pki, Some(&pki.client_a), true);
    let url = format!("{}/orders/1", envoy.https("https"));
    let statuses = (0..3)
        .map(|_| {
            // Not the harness's `get`, which unwraps: a reset stream is an outcome here.
            c.get(&url)
                .header("authorization", "Bearer abc")
                .send()
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
        .collect();
    (statuses, upstream.count())
}

#[test]
fn a_vm_that_fails_at_run_time_lets_nothing_through_when_failing_closed() {
    let (statuses, reached) = requests_through_a_trapping_vm("FAIL_CLOSED");
    println!("FAIL_CLOSED statuses: {statuses:?}");
    assert!(
        statuses.iter().all(|&s| s != 200),
        "a request passed a failed VM: {statuses:?}"
    );
    assert_eq!(reached, 0, "the upstream was reached through a failed VM");
}

/// FAIL_RELOAD starts a new VM for later requests; a VM that fails again fails them too.
#[test]
fn a_vm_that_fails_again_after_reload_lets_nothing_through() {
    let (statuses, reached) = requests_through_a_trapping_vm("FAIL_RELOAD");
    println!("FAIL_RELOAD statuses: {statuses:?}");
    assert!(statuses.iter().all(|&s| s != 200), "{statuses:?}");
    assert_eq!(reached, 0);
}

/// The control: the same module with FAIL_OPEN lets requests through, so the module really
/// loads and fails at request time (rather than being refused at load, which would make the
/// closed case pass for the wrong reason).
#[test]
fn the_same_failure_passes_traffic_when_failing_open() {
    let (statuses, reached) = requests_through_a_trapping_vm("FAIL_OPEN");
    assert!(
        statuses.contains(&200) && reached > 0,
        "FAIL_OPEN: {statuses:?}, upstream reached {reached} times"
    );
    println!("FAIL_OPEN statuses: {statuses:?}");
}
