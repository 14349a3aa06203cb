//! Compiled components cached in the data directory (`plugin-cache/`), keyed by the SHA-256 of
//! the component and the engine's compatibility hash, so a plugin is compiled once per content
//! and engine build, not at every start or reload.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};

use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::LoadError;

const CACHE_DIR: &str = "plugin-cache";

/// The on-disk cache; without a directory (tests, `plugin inspect`) it only compiles.
#[derive(Debug)]
pub struct ComponentCache {
    dir: Option<Dir>,
}

/// Hex SHA-256 of a component: its identity in logs, metrics and the audit trail.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn engine_hash(engine: &Engine) -> String {
    // DefaultHasher::new() uses fixed keys, so this is stable for a given binary.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

impl ComponentCache {
    /// A cache under `data/plugin-cache`, created if needed.
    pub fn new(data: &Dir) -> std::io::Result<Self> {
        data.create_dir_all(CACHE_DIR)?;
        Ok(Self {
            dir: Some(data.open_dir(CACHE_DIR)?),
        })
    }

    /// The compiled component for `bytes`, from the cache or freshly compiled (and stored).
    pub fn load(
        &self,
        engine: &Engine,
        name: &str,
        bytes: &[u8],
    ) -> Result<(Component, String), LoadError> {
        let hash = content_hash(bytes);
        let file = format!("{hash}-{}.cwasm", engine_hash(engine));
        if let Some(dir) = &self.dir
            && let Ok(mut f) = dir.open(&file)
        {
            let mut compiled = Vec::new();
            if f.read_to_end(&mut compiled).is_ok()
                && let Ok(c) = deserialize(engine, &compiled)
            {
                return Ok((c, hash));
            }
            tracing::warn!(
                plugin = name,
                file,
                "ignoring unreadable compiled-plugin cache entry"
            );
        }
        // Large components (a componentize-py one is ~18 MB) take seconds to compile, during
        // which the plugin does not decide yet: say so, and how long it took.
        tracing::info!(plugin = name, hash = %hash, bytes = bytes.len(), "compiling policy plugin (not in the cache yet)");
        let started = std::time::Instant::now();
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile(name.into(), format!("{e:#}")))?;
        tracing::info!(
            plugin = name,
            ms = started.elapsed().as_millis() as u64,
            "policy plugin compiled"
        );
        if let Some(dir) = &self.dir {
            // Write then rename, so a crash never leaves a torn entry under the final name.
            let tmp = format!("{file}.tmp");
            let written = dir
                .create(&tmp)
                .and_then(|mut f| f.write_all(&compiled).and_then(|()| f.sync_all()))
                .and_then(|()| dir.rename(&tmp, dir, &file));
            if let Err(e) = written {
                tracing::warn!(plugin = name, error = %e, "cannot cache compiled plugin; continuing without");
            }
        }
        let component =
            deserialize(engine, &compiled).map_err(|e| LoadError::Compile(name.into(), e))?;
        Ok((component, hash))
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, compiled: &[u8]) -> Result<Component, String> {
    // SAFETY: `Component::deserialize` trusts its input to be wasmtime's own output. Every entry
    // under plugin-cache/ was written by `precompile_component` of this process or an earlier
    // one (named by content hash and engine-compatibility hash, written atomically), inside the
    // data directory that only the gateway's user may write — who could replace the binary too.
    // wasmtime still checks the header and engine compatibility and rejects mismatches.
    unsafe { Component::deserialize(engine, compiled) }.map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component with one exported function named `export`.
    fn component(export: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(component
                 (core module $m (func (export "f")))
                 (core instance $i (instantiate $m))
                 (func $f (canon lift (core func $i "f")))
                 (export "{export}" (func $f)))"#
        ))
        .unwrap()
    }

    fn exports(engine: &Engine, c: &Component) -> Vec<String> {
        c.component_type()
            .exports(engine)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    #[test]
    fn compiled_once_then_read_from_the_data_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let data = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let engine = Engine::default();
        let cache = ComponentCache::new(&data).unwrap();
        let (a, b) = (component("a"), component("b"));
        let (_, hash_a) = cache.load(&engine, "a", &a).unwrap();
        let (_, hash_b) = cache.load(&engine, "b", &b).unwrap();
        assert_eq!(hash_a, content_hash(&a));
        let entry = |hash: &str| {
            tmp.path()
                .join(CACHE_DIR)
                .join(format!("{hash}-{}.cwasm", engine_hash(&engine)))
        };
        assert!(entry(&hash_a).is_file() && entry(&hash_b).is_file());

        // Proof that the entry is what gets loaded: put b's compiled form under a's name.
        std::fs::copy(entry(&hash_b), entry(&hash_a)).unwrap();
        let (c, _) = cache.load(&engine, "a", &a).unwrap();
        assert_eq!(exports(&engine, &c), ["b"]);

        // A torn or foreign entry is ignored, recompiled and replaced.
        std::fs::write(entry(&hash_a), b"not a compiled component").unwrap();
        let (c, _) = cache.load(&engine, "a", &a).unwrap();
        assert_eq!(exports(&engine, &c), ["a"]);
        let (c, _) = cache.load(&engine, "a", &a).unwrap();
        assert_eq!(exports(&engine, &c), ["a"], "the replaced entry is good");
    }
}
