//! `componentize`: the native half of the guest build (`plugins/build.sh`).
//!
//! `componentize encode CORE.wasm OUT.wasm` turns a core module built by wit-bindgen 0.46
//! into a component (wit-component's `ComponentEncoder`, which reads the component-type
//! section the bindings embedded and validates the result).
//!
//! `componentize check COMPONENT.wasm WIT_DIR WORLD` validates a component, checks that it
//! targets `WORLD` of the WIT package in `WIT_DIR` (it imports nothing the world does not
//! offer and exports what the world asks for), and prints the world it was decoded to.

use anyhow::{Context, Result, bail};
use std::path::Path;
use wit_component::{ComponentEncoder, DecodedWasm, WitPrinter};
use wit_parser::Resolve;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["encode", core, out] => encode(Path::new(core), Path::new(out)),
        ["check", component, wit, world] => check(Path::new(component), Path::new(wit), world),
        _ => bail!(
            "usage: componentize encode CORE.wasm OUT.wasm\n       componentize check COMPONENT.wasm WIT_DIR WORLD"
        ),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn encode(core: &Path, out: &Path) -> Result<()> {
    let module = read(core)?;
    let component = ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{} is not a wit-bindgen core module", core.display()))?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding {} as a component", core.display()))?;
    std::fs::write(out, &component).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: {} bytes (core module {} bytes)",
        out.display(),
        component.len(),
        module.len()
    );
    Ok(())
}

fn check(path: &Path, wit: &Path, world: &str) -> Result<()> {
    let bytes = read(path)?;
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::default())
        .validate_all(&bytes)
        .with_context(|| format!("{} is not a valid component", path.display()))?;

    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_path(wit)
        .with_context(|| format!("parsing {}", wit.display()))?;
    let world_id = resolve.select_world(&[pkg], Some(world))?;
    wit_component::targets(&resolve, world_id, &bytes)
        .with_context(|| format!("{} does not target world {world}", path.display()))?;

    let DecodedWasm::Component(decoded, decoded_world) = wit_component::decode(&bytes)? else {
        bail!("{} is a WIT package, not a component", path.display());
    };
    let root = decoded.worlds[decoded_world]
        .package
        .context("decoded world has no package")?;
    let mut printer = WitPrinter::default();
    printer.emit_docs(false);
    printer.print(&decoded, root, &[])?;
    println!(
        "{}: valid, {} bytes, targets {world}; decoded world:",
        path.display(),
        bytes.len()
    );
    for line in printer
        .output
        .to_string()
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        println!("  {line}");
    }
    Ok(())
}
