//! Compiles the router's own gRPC API (`proto/`) with a vendored `protoc`, so a build needs no system
//! protoc, and writes its descriptor set for gRPC server reflection.
//!
//! Also writes a descriptor set of the Envoy route API (from the `.proto` files the `envoy-types` crate
//! ships), so the router can turn the route configuration it renders as JSON — the same JSON
//! `envoy-config` prints — into the protobuf it serves Envoy over RDS (see `src/envoy/route_discovery.rs`), and
//! one of the whole bootstrap (with every typed config it holds), against which the unit tests check each
//! bootstrap `envoy-config` can print (it is not compiled into the router).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Envoy API files whose messages appear in the served route configuration.
const ENVOY_ROUTE_PROTOS: &[&str] =
    &["envoy/config/route/v3/route.proto", "envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto"];

/// The Envoy API files of the messages in the bootstrap `envoy-config` prints, typed configs included.
const ENVOY_BOOTSTRAP_PROTOS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto",
    "envoy/extensions/access_loggers/filters/cel/v3/cel.proto",
];

/// Where `protoc` finds the imports of the Envoy API, below the crate's `proto/` directory.
const ENVOY_INCLUDE_DIRS: &[&str] =
    &["data-plane-api", "xds", "protoc-gen-validate", "googleapis", "cel-spec/proto", "opentelemetry-proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut prost = tonic_prost_build::Config::new();
    prost.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("trino_router_descriptor.bin"))
        .compile_with_config(prost, &["proto/trino_router/v1/admin.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");

    let envoy_protos = envoy_types_proto_dir()?;
    envoy_descriptor_set(
        &protoc,
        &envoy_protos,
        ENVOY_ROUTE_PROTOS,
        &out_dir.join("envoy_route_descriptor.bin"),
    )?;
    envoy_descriptor_set(
        &protoc,
        &envoy_protos,
        ENVOY_BOOTSTRAP_PROTOS,
        &out_dir.join("envoy_bootstrap_descriptor.bin"),
    )?;
    Ok(())
}

/// Writes the descriptor set of `protos` (imports included) from the Envoy API in `envoy_protos` to `out`.
fn envoy_descriptor_set(
    protoc: &Path,
    envoy_protos: &Path,
    protos: &[&str],
    out: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut command = Command::new(protoc);
    command.arg("--include_imports").arg(format!("--descriptor_set_out={}", out.display()));
    for dir in ENVOY_INCLUDE_DIRS {
        command.arg("-I").arg(envoy_protos.join(dir));
    }
    command.arg("-I").arg(protoc_bin_vendored::include_path()?);
    command.args(protos);
    let status = command.status()?;
    if !status.success() {
        return Err(format!("protoc failed on {protos:?} in {}", envoy_protos.display()).into());
    }
    Ok(())
}

/// The `proto/` directory of the `envoy-types` crate this build uses, as `cargo metadata` names it.
fn envoy_types_proto_dir() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let cargo = std::env::var("CARGO")?;
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let target = std::env::var("TARGET")?;
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--filter-platform", &target, "--manifest-path"])
        .arg(Path::new(&manifest).join("Cargo.toml"))
        .output()?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest_path = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == "envoy-types")
        .and_then(|package| package["manifest_path"].as_str())
        .ok_or("cargo metadata lists no envoy-types package")?;
    let dir = Path::new(manifest_path).parent().ok_or("envoy-types has no directory")?.join("proto");
    println!("cargo:rerun-if-changed={}", dir.display());
    Ok(dir)
}
